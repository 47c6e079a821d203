"""The guard network's scores under a policy: the verdicts each rail acts on. Pure functions.

- input, the main text (last user turn or completion prompt): ``prompt-injection`` (the
  ``injection`` label) and ``content-safety`` (the ``unsafe`` label; its category the S-code
  with the highest score-to-threshold ratio, whose action the policy may override);
- input, the other untrusted texts (system prompts, tool results): ``prompt-injection`` only,
  a flag in a system prompt taking the policy's ``system_action``;
- output, one window with its context: the policy's output categories (hate ``S10`` and
  sexual content ``S12`` by default) as ``content-safety``, and, where the policy enables it
  (clinic), ``directive``: a diagnosis or dose instruction addressed to the reader.

A label fires at ``score >= threshold``: the policy's ``threshold`` when it sets one, else the
network's calibrated one (``labels.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from appliance.guards.guardnet import GuardScores
from appliance.guards.policy import ClassifierPolicy, Policy
from appliance.guards.rule_types import Action

TIER_RULES = 1
TIER_CLASSIFIERS = 2
INJECTION = "prompt-injection"
SAFETY = "content-safety"
DIRECTIVE = "directive"
NETWORK = "guardnet"
# The output rail holds a small window inside a sentence back (to judge the sentence whole)
# at this share of a label's threshold: the beginning of a sentence scores lower than the
# sentence ("Increase your insulin dose to 30 units" 0.26, the sentence with "tonight" 0.73,
# on a threshold of 0.5). A hold costs latency on that sentence only, never a false block.
HOLD_SCALE = 0.5


@dataclass(frozen=True)
class GuardVerdict:
    guard: str  # "rules", "guardnet" (the timed run), "prompt-injection", "content-safety", ...
    tier: int
    label: str  # a rule name, "clean", a classifier label, "error" or "timeout"
    score: float  # 1.0 for a rule hit; the classifier's score; 0.0 for error/timeout
    action: Action
    ms: float
    category: str | None = None  # "injection", "email", "S1" ...


@dataclass(frozen=True)
class Thresholds:
    """The network's calibrated thresholds and its category order (from labels.json)."""

    values: Mapping[str, float]
    categories: tuple[str, ...]

    def of(self, label: str, settings: ClassifierPolicy) -> float:
        return settings.threshold if settings.threshold is not None else self.values[label]

    def category(self, scores: GuardScores) -> str:
        return max(self.categories, key=lambda c: scores[c] / self.values.get(c, 0.5))


def injection_verdict(scores: GuardScores, policy: Policy, thresholds: Thresholds,
                      words: int, *, system: bool = False) -> GuardVerdict:
    """``words``: the text's length in words (a short text needs the policy's
    ``short_threshold``); ``system``: the text is a system prompt."""
    settings = policy.injection
    score = scores["injection"]
    threshold = thresholds.of("injection", settings)
    if words < settings.short_words:
        threshold = max(threshold, settings.short_threshold)
    if score < threshold:
        return GuardVerdict(INJECTION, TIER_CLASSIFIERS, "benign", score, "allow", 0.0)
    action = settings.action
    if system and settings.system_action is not None:
        action = settings.system_action
    return GuardVerdict(INJECTION, TIER_CLASSIFIERS, "injection", score, action, 0.0,
                        "injection")


def safety_verdict(scores: GuardScores, policy: Policy, thresholds: Thresholds
                   ) -> GuardVerdict:
    settings = policy.safety
    score = scores["unsafe"]
    if score < thresholds.of("unsafe", settings):
        return GuardVerdict(SAFETY, TIER_CLASSIFIERS, "safe", score, "allow", 0.0)
    category = thresholds.category(scores)
    return GuardVerdict(SAFETY, TIER_CLASSIFIERS, "unsafe", score,
                        settings.action_for(category), 0.0, category)


def input_verdicts(scores: GuardScores, policy: Policy, thresholds: Thresholds, *,
                   main: bool, words: int, system: bool = False) -> list[GuardVerdict]:
    """The enabled input decisions on one text (``main``: the last user turn; ``words``:
    its length in words; ``system``: a system prompt)."""
    out = []
    if policy.injection.enabled:
        out.append(injection_verdict(scores, policy, thresholds, words, system=system))
    if main and policy.safety.enabled:
        out.append(safety_verdict(scores, policy, thresholds))
    return out


def output_verdict(scores: GuardScores, policy: Policy, thresholds: Thresholds,
                   ms: float, scale: float = 1.0) -> GuardVerdict:
    """The first output label that fires (categories, then directive), else an allow. The
    output categories always stop the answer, whatever the input rail does with them (a
    policy may let users discuss hateful text, flagged, and still never generate it).
    ``scale`` multiplies every threshold (the output rail's lower bar for holding a window
    back, ``HOLD_SCALE``); a category's own threshold is raised to the policy's output
    ``min_score``."""
    if policy.safety.enabled:
        floor = policy.output.min_score
        for category in policy.output.categories:
            if category in scores.labels and \
                    scores[category] >= scale * max(thresholds.values[category], floor):
                return GuardVerdict(SAFETY, TIER_CLASSIFIERS, "unsafe", scores[category],
                                    "block", ms, category)
    if policy.directive.enabled:
        score = scores["directive"]
        if score >= scale * thresholds.of("directive", policy.directive):
            return GuardVerdict(DIRECTIVE, TIER_CLASSIFIERS, "directive", score,
                                policy.directive.action, ms, "directive")
    top = max((scores[c] for c in policy.output.categories if c in scores.labels), default=0.0)
    return GuardVerdict(SAFETY, TIER_CLASSIFIERS, "safe", top, "allow", ms)
