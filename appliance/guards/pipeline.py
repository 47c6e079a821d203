"""The tiered input rail and the output rules, driven by a :class:`~.policy.Policy`.

``InputPipeline.check(text)`` (or ``check_sync``) runs the tiers cheapest first and stops at
the first block:

1. rules: normalisation, regex rules, blocklists, PII (well under a millisecond, inline);
2. the shared embedding, computed once in the executor (never on the event loop), then the
   prompt-injection head and the content-safety head on that same vector (microseconds
   each, plus the heads' own de-obfuscation views of an obfuscated text).

Each guard is timed and held to its policy budget; a guard that raises or runs over its
budget yields a verdict labelled ``"error"``/``"timeout"`` whose action is the policy's
``on_error``/``on_timeout`` (``"block"`` fails closed, ``"flag"`` fails open). When the rules
redact, the classifiers and the embedding see the redacted text, which is what the model
(and the semantic cache) will see. The answer is a frozen :class:`GuardDecision`.

A timed-out guard's thread is not interrupted (Python cannot); its result is dropped. In
``check_sync`` budgets are checked after the call returns.

``OutputRules.check_text(window)`` is the output rail's pure check: the policy's output rules
(a violation replaces the answer with the rule's message), then the rules tier without the
injection rules (a secret blocks, PII is redacted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from appliance.guards.classifier import Classifier, ClassifierResult
from appliance.guards.fold import normalize_text
from appliance.guards.policy import Budget, ClassifierPolicy, Policy
from appliance.guards.rule_types import Action, strongest
from appliance.guards.rules import RuleSet, RuleVerdict

Vector = npt.NDArray[np.float32]

TIER_RULES = 1
TIER_CLASSIFIERS = 2


class Embedder(Protocol):
    """What the pipeline needs of :class:`appliance.encoder.sentence.Encoder`."""

    def encode_one(self, text: str) -> Vector: ...


@dataclass(frozen=True)
class GuardVerdict:
    guard: str  # "rules", "embedding" (timed like a guard), "prompt-injection", "content-safety"
    tier: int
    label: str  # a rule name, "clean", a classifier label, "error" or "timeout"
    score: float  # 1.0 for a rule hit; the classifier's score; 0.0 for error/timeout
    action: Action
    ms: float
    category: str | None = None  # "injection", "email", "S1" ...


@dataclass(frozen=True)
class GuardDecision:
    allowed: bool
    action: Action  # the strongest verdict action
    redacted: str | None  # the text the model should see when the rules redacted
    verdicts: tuple[GuardVerdict, ...]
    ms: float
    embedding: Vector | None  # the shared embedding (of the redacted text if any)
    message: str | None  # the policy's refusal when blocked
    category: str | None  # of the blocking verdict

    def text_for_model(self, original: str) -> str:
        return original if self.redacted is None else self.redacted


@dataclass(frozen=True)
class OutputVerdict:
    violated: bool
    rule: str | None
    replacement: str | None  # replaces the whole answer (an output rule or a blocked secret)
    redacted: str | None = None  # the window with PII masked (a redact-only violation)


# --- pure decision helpers ---------------------------------------------------------------------

def rules_verdict(verdict: RuleVerdict) -> GuardVerdict:
    strongest_hits = [h for h in verdict.hits if h.action == verdict.action]
    if not strongest_hits or verdict.action == "allow":
        return GuardVerdict("rules", TIER_RULES, "clean", 0.0, verdict.action, verdict.ms)
    hit = strongest_hits[0]
    category = hit.rule.removeprefix("pii:") if hit.category == "pii" else hit.category
    return GuardVerdict("rules", TIER_RULES, hit.rule, 1.0, verdict.action, verdict.ms,
                        category)


def _failure(guard: str, label: str, budget: Budget, ms: float) -> GuardVerdict:
    action = budget.on_timeout if label == "timeout" else budget.on_error
    return GuardVerdict(guard, TIER_CLASSIFIERS, label, 0.0, action, ms, label)


def _classifier_verdict(guard: str, settings: ClassifierPolicy, result: ClassifierResult,
                        default_category: str | None, ms: float) -> GuardVerdict:
    """A head's result under the policy: its threshold override, then the action for the top
    S-category (content safety) or the head's action (``default_category``: injection)."""
    threshold = result.threshold if settings.threshold is None else settings.threshold
    if result.score < threshold:
        label = result.label if not result.flagged else "below-threshold"
        return GuardVerdict(guard, TIER_CLASSIFIERS, label, result.score, "allow", ms)
    top = result.categories[0].code if result.categories else None
    label = result.label if result.flagged else "flagged"
    return GuardVerdict(guard, TIER_CLASSIFIERS, label, result.score, settings.action_for(top),
                        ms, top or default_category)


@dataclass(frozen=True)
class _Outcome:
    value: object
    label: str  # "ok", "error", "timeout"
    ms: float


def _timed(fn: Callable[[], object], budget_ms: float) -> _Outcome:
    start = time.perf_counter()
    try:
        value = fn()
    except Exception:  # a guard that raises is a verdict, not a crash
        return _Outcome(None, "error", (time.perf_counter() - start) * 1000.0)
    ms = (time.perf_counter() - start) * 1000.0
    return _Outcome(value, "timeout" if ms > budget_ms else "ok", ms)


# --- the input rail ----------------------------------------------------------------------------

class InputPipeline:
    """The input rail for one policy; thread-safe (the models lock themselves)."""

    def __init__(self, policy: Policy, encoder: Embedder, injection_head: Classifier,
                 safety_head: Classifier,
                 executor: concurrent.futures.Executor | None = None, *,
                 parallel_heads: bool = False) -> None:
        self.policy = policy
        self._encoder = encoder
        self._heads: tuple[tuple[str, Classifier, ClassifierPolicy, str | None], ...] = tuple(
            (guard, head, settings, default) for guard, head, settings, default in (
                ("prompt-injection", injection_head, policy.injection, "injection"),
                ("content-safety", safety_head, policy.safety, None))
            if settings.enabled)
        self._executor = executor
        self._parallel = parallel_heads

    # sync ------------------------------------------------------------------------------------
    def check_sync(self, text: str) -> GuardDecision:
        """The same decision as :meth:`check`, run inline; budgets checked after each call."""
        start = time.perf_counter()
        rules, verdicts = self._tier1(text)
        if rules.blocked:
            return self._decide(verdicts, rules, None, start)
        seen = rules.redacted if rules.redacted is not None else text
        outcome = _timed(lambda: self._encoder.encode_one(seen),
                         self.policy.embedding.budget_ms)
        embedding = self._embedding_verdict(outcome, verdicts)
        if embedding is not None:
            for guard, head, settings, default in self._heads:
                result = _timed(lambda h=head: h.classify(seen, embedding),  # type: ignore[misc]
                                settings.budget.budget_ms)
                verdicts.append(self._head_verdict(guard, settings, default, result))
                if verdicts[-1].action == "block":
                    break
        return self._decide(verdicts, rules, embedding, start)

    # async -----------------------------------------------------------------------------------
    async def check(self, text: str) -> GuardDecision:
        """Run the tiers; the embedding and the heads run in the executor."""
        return await self.check_after_rules(text, self.policy.rule_set.check(text))

    async def check_after_rules(self, text: str, rules: RuleVerdict) -> GuardDecision:
        """Tiers 2+ for ``text`` whose rules tier gave ``rules`` (the caller ran it early,
        e.g. before admission, so the model's prompt could be redacted)."""
        start = time.perf_counter() - rules.ms / 1000.0
        verdicts = [rules_verdict(rules)]
        if rules.blocked:
            return self._decide(verdicts, rules, None, start)
        seen = rules.redacted if rules.redacted is not None else text
        outcome = await self._run(lambda: self._encoder.encode_one(seen),
                                  self.policy.embedding.budget_ms)
        embedding = self._embedding_verdict(outcome, verdicts)
        if embedding is not None:
            if self._parallel:
                outcomes = await asyncio.gather(*(
                    self._run(lambda h=head: h.classify(seen, embedding),  # type: ignore[misc]
                              settings.budget.budget_ms)
                    for _, head, settings, _ in self._heads))
                verdicts.extend(self._head_verdict(guard, settings, default, result)
                                for (guard, _, settings, default), result
                                in zip(self._heads, outcomes, strict=True))
            else:
                for guard, head, settings, default in self._heads:
                    result = await self._run(
                        lambda h=head: h.classify(seen, embedding),  # type: ignore[misc]
                        settings.budget.budget_ms)
                    verdicts.append(self._head_verdict(guard, settings, default, result))
                    if verdicts[-1].action == "block":
                        break
        return self._decide(verdicts, rules, embedding, start)

    async def _run(self, fn: Callable[[], object], budget_ms: float) -> _Outcome:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        future = loop.run_in_executor(self._executor, fn)
        try:
            value = await asyncio.wait_for(future, budget_ms / 1000.0)
        except TimeoutError:
            return _Outcome(None, "timeout", (time.perf_counter() - start) * 1000.0)
        except Exception:  # a guard that raises is a verdict, not a crash
            return _Outcome(None, "error", (time.perf_counter() - start) * 1000.0)
        return _Outcome(value, "ok", (time.perf_counter() - start) * 1000.0)

    # shared ----------------------------------------------------------------------------------
    def _tier1(self, text: str) -> tuple[RuleVerdict, list[GuardVerdict]]:
        rules = self.policy.rule_set.check(text)
        return rules, [rules_verdict(rules)]

    def _embedding_verdict(self, outcome: _Outcome,
                           verdicts: list[GuardVerdict]) -> Vector | None:
        """The embedding, or None after appending the failure verdict."""
        if outcome.label == "ok" and isinstance(outcome.value, np.ndarray):
            verdicts.append(GuardVerdict("embedding", TIER_CLASSIFIERS, "ok", 0.0, "allow",
                                         outcome.ms))
            return outcome.value
        label = "error" if outcome.label == "ok" else outcome.label
        verdicts.append(_failure("embedding", label, self.policy.embedding, outcome.ms))
        return None

    def _head_verdict(self, guard: str, settings: ClassifierPolicy, default: str | None,
                      outcome: _Outcome) -> GuardVerdict:
        if outcome.label == "ok" and isinstance(outcome.value, ClassifierResult):
            return _classifier_verdict(guard, settings, outcome.value, default, outcome.ms)
        label = "error" if outcome.label == "ok" else outcome.label
        return _failure(guard, label, settings.budget, outcome.ms)

    def _decide(self, verdicts: list[GuardVerdict], rules: RuleVerdict,
                embedding: Vector | None, start: float) -> GuardDecision:
        action = strongest(v.action for v in verdicts)
        blocker = next((v for v in verdicts if v.action == "block"), None)
        return GuardDecision(
            allowed=blocker is None, action=action,
            redacted=rules.redacted if blocker is None else None, verdicts=tuple(verdicts),
            ms=(time.perf_counter() - start) * 1000.0, embedding=embedding,
            message=self.policy.refusal if blocker is not None else None,
            category=blocker.category if blocker is not None else None)


# --- the output rail ---------------------------------------------------------------------------

class OutputRules:
    """The output rail's check of one window of the answer; pure and thread-safe."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        config: Mapping[str, object] = {**policy.rules_config, "default_rules": False}
        self._rules = RuleSet.from_config(config)

    def ends_in_phrase(self, text: str) -> bool:
        """Whether ``text`` (normalised as :meth:`check_text` does) ends in the beginning of a
        phrase an output rule catches once complete: released now, that beginning would
        leave the rule only the rest of the phrase to see."""
        norm = normalize_text(text)
        for rule in self.policy.output.rules:
            pos = 0
            while pos <= len(norm):
                m = rule.partial.search(norm, pos, partial=True)
                if m is None:
                    break
                if m.partial:  # (an empty one at the very end: any phrase could start there)
                    if m.start() < len(norm):
                        return True
                    break
                pos = max(m.end(), m.start() + 1)  # a whole match: look past it
        return False

    def check_text(self, text: str, *, context: str = "") -> OutputVerdict:
        """Check ``text``; ``context`` (text already released before it) is only read by the
        policy's output rules, so a phrase split across two windows is still caught."""
        norm = normalize_text(context + text)
        for rule in self.policy.output.rules:
            if rule.pattern.search(norm):
                return OutputVerdict(True, rule.name, rule.replacement)
        verdict = self._rules.check(text)
        if verdict.blocked:
            hit = next(h for h in verdict.hits if h.action == "block")
            return OutputVerdict(True, hit.rule, self.policy.output.blocked_message)
        if verdict.redacted is not None:
            hit = next(h for h in verdict.hits if h.action == "redact")
            return OutputVerdict(True, hit.rule, None, verdict.redacted)
        return OutputVerdict(False, None, None)
