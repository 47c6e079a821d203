"""The input rail as the pipeline runs it, in two halves.

- :meth:`InputStage.rules`: the rules tier on every text of a request (normalisation, rules,
  PII, secrets; sub-millisecond), inline while the job is prepared, so the prompt is built
  from redacted text and a rule block costs nothing else.
- :meth:`InputStage.classify`: the guard network and the topic rail on the main text, and the
  network's injection check on the untrusted texts (system prompts, tool results), after
  admission (the bounded queue limits how many run at once), while the engine prefills.

A block raises :class:`~appliance.errors.ContentFiltered`; every verdict is recorded in the
request's trace (metrics; blocks, redactions and flags also audited).
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.admission.keys import KeyRecord
from appliance.errors import ContentFiltered, Overloaded, RequestError, Unavailable
from appliance.guards.pipeline import TIER_RULES, GuardVerdict
from appliance.guards.rails import InputCheck, PolicyRails, RulesStage
from appliance.guards.readiness import GuardsState
from appliance.observability.trace import GuardAction, RequestTrace


def record_input(trace: RequestTrace, verdicts: Sequence[GuardVerdict]) -> None:
    """Every verdict for the metrics; blocks, redactions and flags also for the audit."""
    for v in verdicts:
        action = GuardAction(v.guard, "input", v.category or v.label, v.action, v.ms)
        trace.guard_checks.append(action)
        if v.action != "allow":
            trace.guard_actions.append(action)


def not_a_verdict(verdicts: Sequence[GuardVerdict]) -> RequestError | None:
    """A block by a guard that timed out or failed is no verdict on the text: the client
    gets a retryable 503, never a 400 content_filter it would take as final."""
    for v in verdicts:
        if v.action == "block" and v.label == "timeout":
            return Overloaded(f"the {v.guard} guard could not finish in time because the "
                              f"server is busy; retry shortly", retry_after=1)
        if v.action == "block" and v.label == "error":
            return Unavailable(f"the {v.guard} guard failed to run; retry shortly",
                               retry_after=1)
    return None


def filtered(rails: PolicyRails, blocker: GuardVerdict | None,
             param: str = "messages") -> ContentFiltered:
    guard = blocker.guard if blocker is not None else "rules"
    category = blocker.category if blocker is not None else None
    return ContentFiltered(f"The request was blocked by the {guard} guard"
                           f"{f' ({category})' if category else ''}. {rails.policy.refusal}",
                           guard=guard, category=category, param=param)


class InputStage:
    def __init__(self, guards: GuardsState) -> None:
        self._guards = guards

    def rails_for(self, key: KeyRecord) -> PolicyRails | None:
        """The rails of the key's policy (the server's by default); None with guards off."""
        if not self._guards.enabled:
            return None
        return self._guards.get().rails(key.guard_policy)

    def rules(self, rails: PolicyRails, texts: Sequence[str], main: int,
              trace: RequestTrace, untrusted: Sequence[int] = (), *,
              system: Sequence[int] = (), param: str = "messages") -> RulesStage:
        """The rules tier: redact, or block (an error naming ``param``); ``untrusted`` (tool
        results) and ``system`` (system prompts): the texts the classifier tier also checks
        for injections."""
        stage = self._guards.get().check_rules(texts, main, rails, untrusted, system)
        trace.guard_s += stage.ms / 1000.0
        record_input(trace, stage.verdicts)
        if stage.blocker is not None:
            raise filtered(rails, stage.blocker, param)
        return stage

    async def classify(self, rails: PolicyRails, stage: RulesStage, trace: RequestTrace, *,
                       param: str = "messages") -> InputCheck:
        """The classifier tiers and the topic rail; raises on a block."""
        check = await self._guards.get().check_classifiers(stage, rails)
        trace.guard_s += (check.ms - stage.ms) / 1000.0
        record_input(trace, tuple(v for v in check.verdicts if v.tier > TIER_RULES))
        if not check.allowed:
            raise not_a_verdict(check.verdicts) or filtered(rails, check.blocker, param)
        return check
