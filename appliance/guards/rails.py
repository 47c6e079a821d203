"""The guards as the server uses them: the shared models loaded once, a set of rails per policy.

``Guards.load`` opens the shared MiniLM encoder and the two classifier heads (each file checked
against its sha256 pin) and a thread pool the slow tiers run in. ``rails(name)`` gives the
input pipeline, output rules and topic rail of a policy (a preset name or a TOML path), built
once and kept. ``check_input`` runs the tiered input rail over a request's texts:

- the *main* text (the last user turn, or a completion prompt) goes through every tier:
  normalisation and rules, then the classifiers on the shared embedding, then the topic rail;
- the other texts (system prompt, earlier turns) go through the rules tier only (sub-millisecond),
  so PII anywhere is redacted and a rule block anywhere blocks;
- except the *untrusted* ones (tool results: text from outside that the model will read),
  which also go through the classifiers, beside the main text.

``output_rail`` makes the per-response streamed output rail (see ``output.py``), and
``check_text`` answers ``POST /v1/guard`` and ``appliance guard check``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.encoder.sentence import Encoder
from appliance.guards.classifier import Classifier, ClassifierResult
from appliance.guards.loader import load_guard_classifier
from appliance.guards.output import OutputRail
from appliance.guards.pipeline import (
    TIER_CLASSIFIERS,
    TIER_RULES,
    GuardDecision,
    GuardVerdict,
    InputPipeline,
    OutputRules,
    rules_verdict,
)
from appliance.guards.policy import Policy, load_policy
from appliance.guards.rule_types import strongest
from appliance.guards.rules import RuleVerdict
from appliance.guards.topics import TopicMatch, TopicRail

TIER_TOPICS = 3


@dataclass(frozen=True)
class PolicyRails:
    policy: Policy
    input: InputPipeline
    output: OutputRules
    topics: TopicRail


@dataclass(frozen=True)
class InputCheck:
    """The input rail's answer for one request."""

    allowed: bool
    texts: tuple[str, ...]  # every input text as the model may see it (PII redacted)
    decision: GuardDecision  # the full pipeline's decision on the main text
    blocker: GuardVerdict | None  # the verdict that blocked, if any
    topic: TopicMatch | None  # a topic rail that answers instead of the model
    verdicts: tuple[GuardVerdict, ...]  # every verdict, main text first
    ms: float


@dataclass(frozen=True)
class RulesStage:
    """The rules tier's answer for a request's texts (the first half of the input rail)."""

    originals: tuple[str, ...]
    texts: tuple[str, ...]  # redacted where the rules redact
    main: int
    main_rules: RuleVerdict
    verdicts: tuple[GuardVerdict, ...]  # the main text's first, then other texts' non-allow
    blocker: GuardVerdict | None
    ms: float
    untrusted: tuple[tuple[int, RuleVerdict], ...] = ()  # also classified: (index, rules)


@dataclass(frozen=True)
class TextReport:
    """``POST /v1/guard`` for one text."""

    allowed: bool
    action: str
    redacted: str | None
    verdicts: tuple[GuardVerdict, ...]
    ms: float
    topic: TopicMatch | None = None
    message: str | None = None  # what the client would get instead (refusal/replacement)


class Guards:
    """The loaded guard models and the rails of every policy in use; thread-safe reads."""

    def __init__(self, encoder: Encoder, injection: Classifier, safety: Classifier, *,
                 default_policy: str = "default", workers: int = 2) -> None:
        self.encoder = encoder
        self._injection = injection
        self._safety = safety
        self.default_policy = default_policy
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="guard")
        self._rails: dict[str, PolicyRails] = {}
        self.rails(default_policy)  # a bad default policy fails at start-up, not later

    @classmethod
    def load(cls, *, default_policy: str = "default", threads: int = 1,
             encoder: Encoder | None = None) -> Guards:
        """Load the pinned models (ModelError naming the file on a bad pin); ``encoder``:
        a shared one already loaded (else one is loaded with ``threads``)."""
        encoder = encoder or Encoder.from_manifest(threads=threads)
        return cls(encoder, load_guard_classifier("prompt-injection", encoder=encoder),
                   load_guard_classifier("content-safety", encoder=encoder),
                   default_policy=default_policy)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def rails(self, name: str | None = None) -> PolicyRails:
        """The rails of a policy (a preset name or a TOML path; None: the default)."""
        key = name or self.default_policy
        rails = self._rails.get(key)
        if rails is None:
            policy = load_policy(key)
            rails = PolicyRails(
                policy,
                InputPipeline(policy, self.encoder, self._injection, self._safety,
                              self._executor, parallel_heads=True),
                OutputRules(policy), TopicRail(policy.topics, self.encoder))
            self._rails[key] = rails
        return rails

    def self_test(self) -> None:
        """Run every tier once on a benign text; raises if a guard cannot run."""
        rails = self.rails()
        decision = rails.input.check_sync("What time does the clinic open on Saturday?")
        broken = [v for v in decision.verdicts if v.label in ("error", "timeout")]
        if broken:
            raise RuntimeError(f"guard {broken[0].guard!r} failed its self-test "
                               f"({broken[0].label})")

    # --- input --------------------------------------------------------------------------
    def check_rules(self, texts: Sequence[str], main: int, rails: PolicyRails,
                    untrusted: Sequence[int] = ()) -> RulesStage:
        """The rules tier on every text (sub-millisecond, inline): redactions, and a block
        that needs no classifier. Run before admission, so the prompt is built from the
        redacted texts; the classifiers follow in :meth:`check_classifiers` (on the main
        text and the ``untrusted`` ones)."""
        start = time.perf_counter()
        out = list(texts)
        verdicts: list[GuardVerdict] = []
        main_rules = None
        blocker = None
        extra: list[tuple[int, RuleVerdict]] = []
        for i, text in enumerate(texts):
            rule = rails.policy.rule_set.check(text)
            verdict = rules_verdict(rule)
            if rule.redacted is not None:
                out[i] = rule.redacted
            if i in untrusted and i != main:
                extra.append((i, rule))
            if i == main:
                main_rules = rule
                verdicts.insert(0, verdict)
            elif rule.action != "allow":
                verdicts.append(verdict)
            if rule.blocked and blocker is None:
                blocker = verdict
        assert main_rules is not None
        return RulesStage(tuple(texts), tuple(out), main, main_rules, tuple(verdicts), blocker,
                          _ms(start), tuple(extra))

    async def check_classifiers(self, stage: RulesStage, rails: PolicyRails) -> InputCheck:
        """The classifier tiers and the topic rail on the main text, after the rules."""
        if stage.blocker is not None:
            decision = GuardDecision(False, "block", None, stage.verdicts, stage.ms, None,
                                     rails.policy.refusal, stage.blocker.category)
            return InputCheck(False, stage.texts, decision, stage.blocker, None,
                              stage.verdicts, stage.ms)
        start = time.perf_counter()
        main = stage.main
        decision, *others = await asyncio.gather(
            rails.input.check_after_rules(stage.originals[main], stage.main_rules),
            *(rails.input.check_after_rules(stage.originals[i], rules)
              for i, rules in stage.untrusted))
        later = tuple(v for d in others for v in d.verdicts if v.tier > TIER_RULES)
        blocker = next((v for v in decision.verdicts if v.action == "block"), None)
        # A topic's answer is fixed text and never reaches the model, so it may answer even
        # what a classifier blocked (an emergency phrased as self-harm gets the emergency
        # answer, not a refusal). Rules blocks never get here; nor does a block of an
        # untrusted text, which stands.
        topic = rails.topics.match(decision.embedding)
        verdicts = (*decision.verdicts, *later, *stage.verdicts[1:])
        if topic is not None:
            verdicts = (*verdicts, GuardVerdict(
                "topic", TIER_TOPICS, topic.topic, topic.similarity, "flag", 0.0, "topic"))
            blocker = None
        blocker = blocker or next((v for v in later if v.action == "block"), None)
        return InputCheck(blocker is None, stage.texts, decision, blocker, topic, verdicts,
                          stage.ms + _ms(start))

    async def check_input(self, texts: Sequence[str], main: int,
                          rails: PolicyRails) -> InputCheck:
        """Both stages at once (``/v1/guard``, the CLI)."""
        return await self.check_classifiers(self.check_rules(texts, main, rails), rails)

    # --- output -------------------------------------------------------------------------
    def output_rail(self, rails: PolicyRails) -> OutputRail:
        classify = None
        if rails.policy.output.classify and rails.policy.safety.enabled:
            async def classify_async(text: str) -> str | None:
                verdict = await self._classify_output(text, rails)
                return (verdict.category or verdict.label) if verdict.action == "block" \
                    else None
            classify = classify_async
        return OutputRail(rails.output, classify=classify)

    async def _classify_output(self, text: str, rails: PolicyRails) -> GuardVerdict:
        settings = rails.policy.safety
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            result = await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._safety.classify, text),
                settings.budget.budget_ms / 1000.0)
        except TimeoutError:
            return GuardVerdict("content-safety", TIER_CLASSIFIERS, "timeout", 0.0,
                                settings.budget.on_timeout, _ms(start), "timeout")
        except Exception:  # a guard that raises is a verdict, not a crash
            return GuardVerdict("content-safety", TIER_CLASSIFIERS, "error", 0.0,
                                settings.budget.on_error, _ms(start), "error")
        return _safety_verdict(result, rails.policy, _ms(start))

    # --- one text, as /v1/guard sees it ------------------------------------------------------
    async def check_text(self, text: str, role: str, rails: PolicyRails) -> TextReport:
        start = time.perf_counter()
        if role != "assistant":
            check = await self.check_input([text], 0, rails)
            redacted = check.texts[0] if check.texts[0] != text else None
            message = (rails.policy.refusal if not check.allowed
                       else check.topic.answer if check.topic else None)
            return TextReport(check.allowed, strongest(v.action for v in check.verdicts),
                              redacted if check.allowed else None, check.verdicts,
                              _ms(start), check.topic, message)
        verdict = rails.output.check_text(text)
        verdicts = [GuardVerdict(
            "output-rules", TIER_RULES, verdict.rule or "clean", 1.0 if verdict.violated else 0.0,
            "block" if verdict.replacement else "redact" if verdict.redacted else "allow",
            _ms(start))]
        message = verdict.replacement
        if message is None and rails.policy.output.classify and rails.policy.safety.enabled:
            safety = await self._classify_output(verdict.redacted or text, rails)
            verdicts.append(safety)
            if safety.action == "block":
                message = rails.policy.refusal
        return TextReport(message is None, strongest(v.action for v in verdicts),
                          verdict.redacted if message is None else None, tuple(verdicts),
                          _ms(start), None, message)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _safety_verdict(result: ClassifierResult, policy: Policy, ms: float) -> GuardVerdict:
    settings = policy.safety
    threshold = result.threshold if settings.threshold is None else settings.threshold
    if result.score < threshold:
        return GuardVerdict("content-safety", TIER_CLASSIFIERS, "safe", result.score, "allow",
                            ms)
    top = result.categories[0].code if result.categories else None
    return GuardVerdict("content-safety", TIER_CLASSIFIERS, result.label, result.score,
                        settings.action_for(top), ms, top)
