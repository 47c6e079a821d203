"""The output rail of one generation, as the request pipeline drives it.

Holds the engine's text back in an :class:`~appliance.guards.output.OutputBuffer`, checks
each window with the policy's :class:`~appliance.guards.output.OutputRail`, and turns the
verdicts into chunks: checked text, or the replacement that ends the answer with
``finish_reason="content_filter"`` (the caller stops at a chunk with a finish reason). Every
verdict is recorded in the request's trace (metrics; blocks and redactions also audited).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence

from appliance.errors import ContentFiltered
from appliance.guards.output import OutputBuffer, OutputRail, Window
from appliance.guards.pipeline import GuardVerdict
from appliance.guards.rails import Guards, PolicyRails
from appliance.pipeline_types import Chunk, Usage
from appliance.trace import GuardAction, RequestTrace


def record_input(trace: RequestTrace | None, verdicts: Sequence[GuardVerdict]) -> None:
    """Every verdict for the metrics; blocks, redactions and flags also for the audit."""
    if trace is not None:
        for v in verdicts:
            action = GuardAction(v.guard, "input", v.category or v.label, v.action, v.ms)
            trace.guard_checks.append(action)
            if v.action != "allow":
                trace.guard_actions.append(action)


def filtered(rails: PolicyRails, blocker: GuardVerdict | None) -> ContentFiltered:
    guard = blocker.guard if blocker is not None else "rules"
    category = blocker.category if blocker is not None else None
    return ContentFiltered(f"The request was blocked by the {guard} guard"
                           f"{f' ({category})' if category else ''}. {rails.policy.refusal}",
                           guard=guard, category=category)


def record_output(trace: RequestTrace | None, label: str, action: str, ms: float) -> None:
    if trace is not None:
        check = GuardAction("output-rail", "output", label, action, ms)
        trace.guard_checks.append(check)
        if action != "allow":
            trace.guard_actions.append(check)


class OutputGuard:
    """The output rail of one generation: holds text back, checks each window, and ends the
    answer on a violation (the caller stops at a chunk with a ``finish_reason``)."""

    def __init__(self, guards: Guards, rails: PolicyRails, prompt_tokens: int, *,
                 holdback_tokens: int, trace: RequestTrace | None) -> None:
        self._rail: OutputRail = guards.output_rail(rails)
        self._buffer = OutputBuffer(holdback_tokens, ends_in_phrase=self._rail.ends_in_phrase)
        self._trace = trace
        self._prompt_tokens = prompt_tokens
        self._n_tokens = 0

    async def feed(self, text: str, n_tokens: int) -> AsyncGenerator[Chunk, None]:
        delta, self._n_tokens = n_tokens - self._n_tokens, n_tokens
        for window in self._buffer.push(text, max(1, delta)):
            chunk = await self._check(window)
            if chunk is not None:
                yield chunk

    async def finish(self, final: Chunk) -> AsyncGenerator[Chunk, None]:
        """The last windows (the final text included), then the final chunk."""
        if final.usage is not None:
            self._n_tokens = final.usage.completion_tokens
        windows = self._buffer.push(final.text, 1)
        rest = self._buffer.flush()
        released: list[str] = []
        for window in [*windows, *([rest] if rest is not None else [])]:
            chunk = await self._check(window)
            if chunk is not None and chunk.finish_reason is not None:
                yield Chunk("".join(released) + chunk.text, chunk.finish_reason, final.usage)
                return
            if chunk is not None:
                released.append(chunk.text)
        if self._trace is not None and not released:  # windows recorded themselves
            self._trace.released("", self._n_tokens)
        yield Chunk("".join(released), final.finish_reason, final.usage)

    async def _check(self, window: Window) -> Chunk | None:
        start = time.perf_counter()
        verdict = await self._rail.check(window)
        ms = (time.perf_counter() - start) * 1000.0
        if self._trace is not None:
            self._trace.guard_s += ms / 1000.0
            self._trace.holdback_s.append(window.held_s + ms / 1000.0)
        record_output(self._trace, verdict.rule or "clean", verdict.action, ms)
        if verdict.replacement is not None:
            usage = Usage(self._prompt_tokens, self._n_tokens, 0)
            if self._trace is not None:
                self._trace.released(verdict.replacement, self._n_tokens)
            return Chunk(verdict.replacement, "content_filter", usage)
        if not verdict.text:
            return None
        if self._trace is not None:
            self._trace.released(verdict.text, self._n_tokens)
        return Chunk(verdict.text)
