"""The guards as the server uses them: the models loaded once, a set of rails per policy.

``Guards.load`` opens the guard network (every file checked against its sha256 pin), takes
the shared MiniLM encoder (for the topic rails) and makes a thread pool the slow tiers run
in. ``rails(name)`` gives the input pipeline, output rules and topic rail of a policy (a
preset name or a TOML path), built once and kept. ``check_input`` runs the tiered input rail
over a request's texts:

- the *main* text (the last user turn, or a completion prompt) goes through every tier:
  normalisation and rules, then the guard network (injection and harmful content), then
  the topic rail;
- the *untrusted* texts (system prompts, tool results: named by the caller) go through the
  rules and the network's injection check, scored sentence by sentence and as a whole (a
  flag in a system prompt takes the policy's ``system_action``);
- the other texts (earlier turns) go through the rules tier only (sub-millisecond), so PII
  anywhere is redacted and a rule block anywhere blocks.

``output_rail`` makes the per-response streamed output rail (see ``output.py``), and
``check_text`` answers ``POST /v1/guard`` and ``appliance guard check``.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.encoder.sentence import Encoder
from appliance.engine.cpu_turns import reserving
from appliance.guards.decide import (
    DIRECTIVE,
    HOLD_SCALE,
    SAFETY,
    Thresholds,
    output_verdict,
)
from appliance.guards.guardnet import GuardNetwork, GuardScores
from appliance.guards.loader import load_guard_network
from appliance.guards.output import OutputRail
from appliance.guards.pipeline import (
    TIER_RULES,
    GuardDecision,
    GuardVerdict,
    InputPipeline,
    OutputRules,
    Untrusted,
    failure,
    rules_verdict,
    run_in,
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

    @property
    def classifies_output(self) -> bool:
        """Whether the output rail runs the guard network on its windows."""
        policy = self.policy
        return policy.output.classify and (policy.safety.enabled or policy.directive.enabled)


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
    untrusted: tuple[int, ...] = ()  # texts that also get the injection check
    system: frozenset[int] = frozenset()  # the system prompts (the main text may be one)


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

    def __init__(self, encoder: Encoder, network: GuardNetwork, *,
                 default_policy: str = "default", workers: int = 2) -> None:
        self.encoder = encoder
        self.network = network
        self._thresholds = Thresholds(network.thresholds, network.categories)
        self.default_policy = default_policy
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="guard")
        # The output windows' checks, counted as side work from the moment they are queued:
        # the engine's next step starts after the checks its last step's text set off.
        self._output_executor = reserving(self._executor, encoder.turns)
        self._rails: dict[str, PolicyRails] = {}
        self.rails(default_policy)  # a bad default policy fails at start-up, not later

    @classmethod
    def load(cls, *, default_policy: str = "default", threads: int = 1,
             encoder: Encoder | None = None) -> Guards:
        """Load the pinned guard network (ModelError naming the file on a bad pin);
        ``encoder``: the shared one already loaded (else one is loaded with ``threads``),
        whose CPU turns the network's runs join."""
        encoder = encoder or Encoder.from_manifest(threads=threads)
        network = load_guard_network(threads=threads, turns=encoder.turns)
        return cls(encoder, network, default_policy=default_policy)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.network.close()

    def rails(self, name: str | None = None) -> PolicyRails:
        """The rails of a policy (a preset name or a TOML path; None: the default)."""
        key = name or self.default_policy
        rails = self._rails.get(key)
        if rails is None:
            policy = load_policy(key)
            rails = PolicyRails(
                policy,
                InputPipeline(policy, self.network, self._executor,
                              encoder=self.encoder if policy.topics else None),
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
                    untrusted: Sequence[int] = (), system: Sequence[int] = ()) -> RulesStage:
        """The rules tier on every text (sub-millisecond, inline): redactions, and a block
        that needs no classifier. Run before admission, so the prompt is built from the
        redacted texts; the classifiers follow in :meth:`check_classifiers` (on the main
        text, and the injection check on the ``untrusted`` ones and the ``system`` prompts)."""
        start = time.perf_counter()
        out = list(texts)
        verdicts: list[GuardVerdict] = []
        main_rules = None
        blocker = None
        for i, text in enumerate(texts):
            rule = rails.policy.rule_set.check(text)
            verdict = rules_verdict(rule)
            if rule.redacted is not None:
                out[i] = rule.redacted
            if i == main:
                main_rules = rule
                verdicts.insert(0, verdict)
            elif rule.action != "allow":
                verdicts.append(verdict)
            if rule.blocked and blocker is None:
                blocker = verdict
        assert main_rules is not None
        return RulesStage(tuple(texts), tuple(out), main, main_rules, tuple(verdicts), blocker,
                          _ms(start), tuple(sorted({*untrusted, *system} - {main})),
                          frozenset(system))

    async def check_classifiers(self, stage: RulesStage, rails: PolicyRails) -> InputCheck:
        """The classifier tiers and the topic rail on the main text, after the rules."""
        if stage.blocker is not None:
            decision = GuardDecision(False, "block", None, stage.verdicts, stage.ms, None,
                                     rails.policy.refusal, stage.blocker.category)
            return InputCheck(False, stage.texts, decision, stage.blocker, None,
                              stage.verdicts, stage.ms)
        start = time.perf_counter()
        main = stage.main
        decision = await rails.input.check_after_rules(
            stage.originals[main], stage.main_rules,
            [Untrusted(stage.texts[i], i in stage.system) for i in stage.untrusted],
            system=main in stage.system)
        blocker = next((v for v in decision.verdicts if v.action == "block"), None)
        # A topic's answer is fixed text and never reaches the model, so it may answer even
        # what a classifier blocked (an emergency phrased as self-harm gets the emergency
        # answer, not a refusal). Rules blocks never get here.
        topic = rails.topics.match(decision.embedding)
        verdicts = (*decision.verdicts, *stage.verdicts[1:])
        if topic is not None:
            verdicts = (*verdicts, GuardVerdict(
                "topic", TIER_TOPICS, topic.topic, topic.similarity, "flag", 0.0, "topic"))
            blocker = None
        return InputCheck(blocker is None, stage.texts, decision, blocker, topic, verdicts,
                          stage.ms + _ms(start))

    async def check_input(self, texts: Sequence[str], main: int, rails: PolicyRails,
                          system: Sequence[int] = ()) -> InputCheck:
        """Both stages at once (``/v1/guard``, the CLI); ``system``: the texts that are
        system prompts."""
        return await self.check_classifiers(self.check_rules(texts, main, rails, (), system),
                                            rails)

    # --- output -------------------------------------------------------------------------
    def output_rail(self, rails: PolicyRails) -> OutputRail:
        classify = None
        if rails.classifies_output:
            async def classify_async(text: str, tentative: bool) -> str | None:
                verdict = await self.classify_output(
                    text, rails, scale=HOLD_SCALE if tentative else 1.0)
                return (verdict.category or verdict.label) if verdict.action == "block" \
                    else None
            classify = classify_async
        return OutputRail(rails.output, classify=classify)

    async def classify_output(self, text: str, rails: PolicyRails,
                              scale: float = 1.0) -> GuardVerdict:
        """The guard network on one output window (with its context), within the policy's
        content-safety budget (``scale``: of every threshold, see ``output_verdict``)."""
        kept = self.network.recall_window(text)
        if kept is not None:  # met before: no thread, no wait for the engine's turn
            return output_verdict(kept, rails.policy, self._thresholds, 0.0, scale)
        budget = rails.policy.safety.budget
        outcome = await run_in(self._output_executor, lambda: self.network.score_window(text),
                               budget.budget_ms)
        if outcome.label != "ok" or not isinstance(outcome.value, GuardScores):
            label = "error" if outcome.label == "ok" else outcome.label
            return failure(SAFETY, label, budget, outcome.ms)
        return output_verdict(outcome.value, rails.policy, self._thresholds, outcome.ms,
                              scale)

    # --- one text, as /v1/guard sees it ------------------------------------------------------
    async def check_text(self, text: str, role: str, rails: PolicyRails) -> TextReport:
        start = time.perf_counter()
        if role != "assistant":
            check = await self.check_input([text], 0, rails, (0,) if role == "system" else ())
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
        policy = rails.policy
        if message is None and policy.output.classify and (policy.safety.enabled
                                                           or policy.directive.enabled):
            network = await self.classify_output(verdict.redacted or text, rails)
            verdicts.append(network)
            if network.action == "block":
                message = (policy.output.directive_message or policy.refusal
                           if network.guard == DIRECTIVE else policy.refusal)
        return TextReport(message is None, strongest(v.action for v in verdicts),
                          verdict.redacted if message is None else None, tuple(verdicts),
                          _ms(start), None, message)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
