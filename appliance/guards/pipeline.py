"""The tiered input rail and the output rules, driven by a :class:`~.policy.Policy`.

``InputPipeline.check(text)`` (or ``check_sync``) runs the tiers cheapest first and stops at
the first block:

1. rules: normalisation, regex rules, blocklists, PII (well under a millisecond, inline);
2. the guard network (:mod:`appliance.guards.guardnet`) on the main text, in the executor
   (never on the event loop): one pass gives the ``prompt-injection`` and
   ``content-safety`` decisions (:mod:`appliance.guards.decide`); then the injection check
   on each other untrusted text of the request (system prompts, tool results; a flag in a
   system prompt takes the policy's ``system_action``). A short
   follow-up turn ("continue", "ok", "") is served without the network
   (``labels.json``'s follow-up rule). When the policy has topic rails, the main text's
   sentence embedding (for the topic match) is computed alongside.

The network's pass is timed and held to the policy's ``[network]`` budget; a pass that
raises or runs over it yields a verdict labelled ``"error"``/``"timeout"`` whose action is
the budget's ``on_error``/``on_timeout`` (``"block"`` fails closed, ``"flag"`` fails open).
When the rules redact, the network sees the redacted text, which is what the model (and the
semantic cache) will see. The answer is a frozen :class:`GuardDecision`.

A timed-out pass's thread is not interrupted (Python cannot); its result is dropped. In
``check_sync`` budgets are checked after the call returns.

``OutputRules.check_text(window)`` is the output rail's pure check: the policy's output rules
(a violation replaces the answer with the rule's message), then the rules tier without the
injection rules (a secret blocks, PII is redacted).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from appliance.guards.decide import (
    NETWORK,
    TIER_CLASSIFIERS,
    TIER_RULES,
    GuardVerdict,
    Thresholds,
    input_verdicts,
)
from appliance.guards.fold import normalize_text
from appliance.guards.guardnet import GuardNetwork, GuardScores
from appliance.guards.policy import Budget, Policy
from appliance.guards.rule_types import Action, strongest
from appliance.guards.rules import RuleSet, RuleVerdict

Vector = npt.NDArray[np.float32]
__all__ = ["TIER_CLASSIFIERS", "TIER_RULES", "GuardDecision", "GuardVerdict", "InputPipeline",
           "OutputRules", "OutputVerdict", "rules_verdict"]


class Embedder(Protocol):
    """What the topic rail needs of :class:`appliance.encoder.sentence.Encoder`."""

    def encode_one(self, text: str) -> Vector: ...


@dataclass(frozen=True)
class Untrusted:
    """A text of the request besides the main one that gets the injection check."""

    text: str
    system: bool = False  # a system prompt (else a tool result)


@dataclass(frozen=True)
class GuardDecision:
    allowed: bool
    action: Action  # the strongest verdict action
    redacted: str | None  # the text the model should see when the rules redacted
    verdicts: tuple[GuardVerdict, ...]
    ms: float
    embedding: Vector | None  # the main text's sentence embedding (topic rails only)
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


def failure(guard: str, label: str, budget: Budget, ms: float) -> GuardVerdict:
    action = budget.on_timeout if label == "timeout" else budget.on_error
    return GuardVerdict(guard, TIER_CLASSIFIERS, label, 0.0, action, ms, label)


@dataclass(frozen=True)
class Outcome:
    value: object
    label: str  # "ok", "error", "timeout"
    ms: float


def timed(fn: Callable[[], object], budget_ms: float) -> Outcome:
    start = time.perf_counter()
    try:
        value = fn()
    except Exception:  # a guard that raises is a verdict, not a crash
        return Outcome(None, "error", (time.perf_counter() - start) * 1000.0)
    ms = (time.perf_counter() - start) * 1000.0
    return Outcome(value, "timeout" if ms > budget_ms else "ok", ms)


async def run_in(executor: concurrent.futures.Executor | None, fn: Callable[[], object],
                 budget_ms: float) -> Outcome:
    """``fn`` in the executor, held to ``budget_ms`` (its thread runs on, its result is
    dropped)."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    try:
        value = await asyncio.wait_for(loop.run_in_executor(executor, fn), budget_ms / 1000.0)
    except TimeoutError:
        return Outcome(None, "timeout", (time.perf_counter() - start) * 1000.0)
    except Exception:  # a guard that raises is a verdict, not a crash
        return Outcome(None, "error", (time.perf_counter() - start) * 1000.0)
    return Outcome(value, "ok", (time.perf_counter() - start) * 1000.0)


Runner = Callable[[Callable[[], object], float], Awaitable[Outcome]]


# --- the input rail ----------------------------------------------------------------------------

class InputPipeline:
    """The input rail for one policy; thread-safe (the models lock themselves)."""

    def __init__(self, policy: Policy, network: GuardNetwork,
                 executor: concurrent.futures.Executor | None = None, *,
                 encoder: Embedder | None = None) -> None:
        self.policy = policy
        self._network = network
        self._thresholds = Thresholds(network.thresholds, network.categories)
        self._executor = executor
        self._encoder = encoder  # set when the policy's topic rails need the embedding

    def check_sync(self, text: str, untrusted: Sequence[Untrusted] = ()) -> GuardDecision:
        """The same decision as :meth:`check`, run inline; budgets checked after each call."""
        async def inline(fn: Callable[[], object], budget_ms: float) -> Outcome:
            return timed(fn, budget_ms)

        steps = self._decision(text, self.policy.rule_set.check(text), untrusted, inline,
                               parallel=False)
        try:  # nothing in it suspends: it runs to the end at the first step
            steps.send(None)
        except StopIteration as done:
            result: GuardDecision = done.value
            return result
        steps.close()
        raise RuntimeError("the inline input rail suspended")

    async def check(self, text: str, untrusted: Sequence[Untrusted] = ()) -> GuardDecision:
        """Run the tiers; the network (and the topic embedding) run in the executor."""
        return await self.check_after_rules(text, self.policy.rule_set.check(text), untrusted)

    async def check_after_rules(self, text: str, rules: RuleVerdict,
                                untrusted: Sequence[Untrusted] = (), *,
                                system: bool = False) -> GuardDecision:
        """Tiers 2+ for ``text`` whose rules tier gave ``rules`` (the caller ran it early,
        e.g. before admission, so the model's prompt could be redacted); ``untrusted``: the
        request's other texts that get the injection check (system prompts, tool results);
        ``system``: ``text`` itself is a system prompt (a request with no user turn)."""
        def in_executor(fn: Callable[[], object], budget_ms: float) -> Awaitable[Outcome]:
            return run_in(self._executor, fn, budget_ms)

        return await self._decision(text, rules, untrusted, in_executor, parallel=True,
                                    system=system)

    async def _decision(self, text: str, rules: RuleVerdict, untrusted: Sequence[Untrusted],
                        run: Runner, *, parallel: bool, system: bool = False) -> GuardDecision:
        start = time.perf_counter() - rules.ms / 1000.0
        verdicts = [rules_verdict(rules)]
        if rules.blocked:
            return self._decide(verdicts, rules, None, start)
        seen = rules.redacted if rules.redacted is not None else text
        budget = self.policy.network
        embedding: Vector | None = None
        if self._network.followups.match(seen):
            verdicts.append(GuardVerdict(NETWORK, TIER_CLASSIFIERS, "followup", 0.0, "allow",
                                         0.0))
        else:
            scoring = run(lambda: self._network.score(seen, remember=True), budget.budget_ms)
            if self._encoder is not None:
                encoder = self._encoder
                embedding_run = run(lambda: encoder.encode_one(seen), budget.budget_ms)
                if parallel:
                    outcome, embedded = await asyncio.gather(scoring, embedding_run)
                else:
                    outcome, embedded = await scoring, await embedding_run
                embedding = self._embedding(embedded, verdicts)
            else:
                outcome = await scoring
            if not self._scored(outcome, verdicts, main=True, words=len(seen.split()),
                                system=system):
                return self._decide(verdicts, rules, embedding, start)
        for other in untrusted:
            if not self.policy.injection.enabled or any(v.action == "block" for v in verdicts):
                break
            scored = await run(lambda t=other.text: self._network.score(  # type: ignore[misc]
                t, remember=True), budget.budget_ms)
            self._scored(scored, verdicts, main=False, words=len(other.text.split()),
                         system=other.system)
        return self._decide(verdicts, rules, embedding, start)

    def _scored(self, outcome: Outcome, verdicts: list[GuardVerdict], *, main: bool,
                words: int, system: bool = False) -> bool:
        """Append the pass's verdict and its decisions; False when the pass failed."""
        if outcome.label != "ok" or not isinstance(outcome.value, GuardScores):
            label = "error" if outcome.label == "ok" else outcome.label
            verdicts.append(failure(NETWORK, label, self.policy.network, outcome.ms))
            return False
        verdicts.append(GuardVerdict(NETWORK, TIER_CLASSIFIERS, "ok" if main else "untrusted",
                                     0.0, "allow", outcome.ms))
        verdicts.extend(input_verdicts(outcome.value, self.policy, self._thresholds,
                                       main=main, words=words, system=system))
        return True

    def _embedding(self, outcome: Outcome, verdicts: list[GuardVerdict]) -> Vector | None:
        if outcome.label == "ok" and isinstance(outcome.value, np.ndarray):
            return outcome.value
        label = "error" if outcome.label == "ok" else outcome.label
        verdicts.append(failure("embedding", label, self.policy.network, outcome.ms))
        return None

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
