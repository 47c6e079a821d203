"""The output rail of a generation, as the pipeline drives it.

:class:`OutputStage` is built once; :meth:`OutputStage.start` gives each guarded generation
an :class:`OutputGuard` that holds the engine's text back in an
:class:`~appliance.guards.output.OutputBuffer`, checks each window with the policy's
:class:`~appliance.guards.output.OutputRail`, and turns the verdicts into chunks: checked
text, or the replacement that ends the answer with ``finish_reason="content_filter"`` (the
caller stops at a chunk with a finish reason). :meth:`OutputStage.check_whole` checks a
non-streamed answer once more as a whole (a pattern spanning many windows is caught too);
:meth:`OutputStage.storable` is the same check for what the cache and memory keep.
Log-probabilities (when asked) are held back with their tokens' text and go out with the
chunk that releases its end; a replacement carries none, and the tokens touching a redacted
window are dropped.
Every verdict is recorded in the request's trace (metrics; blocks and redactions audited).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from appliance.engine.chat import ToolCall
from appliance.engine.detok import LogprobTrail
from appliance.engine.types import TokenLogprob
from appliance.guards.output import OutputBuffer, OutputRail, Window
from appliance.guards.pipeline import OutputVerdict
from appliance.guards.rails import Guards, PolicyRails
from appliance.guards.readiness import GuardsState
from appliance.observability.trace import GuardAction, RequestTrace
from appliance.pipeline.job import Chunk, Generation, Usage


def record_output(trace: RequestTrace, label: str, action: str, ms: float) -> None:
    check = GuardAction("output-rail", "output", label, action, ms)
    trace.guard_checks.append(check)
    if action not in ("allow", "hold"):  # a hold decides nothing yet: not audited
        trace.guard_actions.append(check)


class OutputGuard:
    """The output rail of one generation: holds text back, checks each window, and ends the
    answer on a violation (the caller stops at a chunk with a ``finish_reason``)."""

    def __init__(self, guards: Guards, rails: PolicyRails, prompt_tokens: int, *,
                 holdback_tokens: int, trace: RequestTrace) -> None:
        self._rail: OutputRail = guards.output_rail(rails)
        self._buffer = OutputBuffer(holdback_tokens, ends_in_phrase=self._rail.ends_in_phrase,
                                    window_tokens=rails.policy.output.window_tokens)
        self._trace = trace
        self._prompt_tokens = prompt_tokens
        self._n_tokens = 0
        self._trail = LogprobTrail()  # log-probabilities of the text held back
        self._ready: list[TokenLogprob] = []  # of the text checked, for the next chunk

    async def feed(self, text: str, n_tokens: int,
                   logprobs: tuple[TokenLogprob, ...] = ()) -> AsyncGenerator[Chunk, None]:
        delta, self._n_tokens = n_tokens - self._n_tokens, n_tokens
        for item in logprobs:
            self._trail.add(item)
        for window in self._buffer.push(text, max(1, delta)):
            chunk = await self._check(window)
            if chunk is not None:
                yield self._with_logprobs(chunk)

    def _with_logprobs(self, chunk: Chunk) -> Chunk:
        if not self._ready or chunk.finish_reason == "content_filter":
            return chunk
        out = dataclasses.replace(chunk, logprobs=(*chunk.logprobs, *self._ready))
        self._ready.clear()
        return out

    async def finish(self, final: Chunk) -> AsyncGenerator[Chunk, None]:
        """The last windows (the final text included), then the final chunk."""
        if final.usage is not None:
            self._n_tokens = final.usage.completion_tokens
        for item in final.logprobs:
            self._trail.add(item)
        released: list[str] = []
        for window in self._last_windows(final.text):
            chunk = await self._check(window)
            if chunk is not None and chunk.finish_reason is not None:
                if released:  # apart, so the replacement is the answer's last delta alone
                    yield Chunk("".join(released))
                yield Chunk(chunk.text, chunk.finish_reason, final.usage)
                return
            if chunk is not None:
                released.append(chunk.text)
        if not released:  # (windows recorded their own releases)
            self._trace.released("", self._n_tokens)
        self._ready.extend(self._trail.rest())
        yield self._with_logprobs(Chunk("".join(released), final.finish_reason, final.usage))

    def _last_windows(self, text: str) -> Iterator[Window]:
        """The windows of the final text, then the rest; lazily, so a window held back by
        its check goes out with the rest."""
        yield from self._buffer.push(text, 1)
        rest = self._buffer.flush()
        if rest is not None:
            yield rest

    async def _check(self, window: Window) -> Chunk | None:
        start = time.perf_counter()
        verdict = await self._rail.check(window)
        ms = (time.perf_counter() - start) * 1000.0
        self._trace.guard_s += ms / 1000.0
        record_output(self._trace, verdict.rule or "clean", verdict.action, ms)
        if verdict.action == "hold":  # checked again with the rest of its sentence
            self._buffer.hold(window)
            return None
        self._trace.holdback_s.append(window.held_s + ms / 1000.0)
        if verdict.replacement is not None:
            self._trace.released(verdict.replacement, self._n_tokens)
            return Chunk(verdict.replacement, "content_filter",
                         Usage(self._prompt_tokens, self._n_tokens, 0))
        if verdict.text == window.text:
            self._ready.extend(self._trail.release(window.text))
        else:  # redacted: its tokens would show what it hid
            self._trail.discard(window.text)
        if not verdict.text:
            return None
        self._trace.released(verdict.text, self._n_tokens)
        return Chunk(verdict.text)


class OutputStage:
    def __init__(self, guards: GuardsState, *, holdback_tokens: int) -> None:
        self._guards = guards
        self._holdback = holdback_tokens

    def start(self, rails: PolicyRails | None, prompt_tokens: int,
              trace: RequestTrace) -> OutputGuard | None:
        """The rail of one generation (None: guards off)."""
        if rails is None:
            return None
        return OutputGuard(self._guards.get(), rails, prompt_tokens,
                           holdback_tokens=self._holdback, trace=trace)

    @staticmethod
    def storable(rails: PolicyRails | None, text: str) -> str | None:
        """What the cache and memory may keep of a released answer: None when the whole
        answer breaks an output rule (a non-streamed one is replaced then, and a streamed
        one is not kept either), else the answer with any PII the windows could not see
        whole masked."""
        if rails is None:
            return text
        verdict = rails.output.check_text(text)
        if verdict.replacement is not None:
            return None
        return verdict.redacted if verdict.redacted is not None else text

    @staticmethod
    def check_call(rails: PolicyRails | None, call: ToolCall,
                   trace: RequestTrace) -> ToolCall | str:
        """A tool call's arguments through the output rules, string by string: the call
        with PII redacted, or the policy's message when something blocks (a secret, an
        output rule). Its JSON is not prose, so the content-safety classifier is not run."""
        if rails is None:
            return call
        start = time.perf_counter()
        verdicts: list[OutputVerdict] = []

        def visit(value: Any) -> Any:
            if isinstance(value, str):
                verdict = rails.output.check_text(value)
                if verdict.violated:
                    verdicts.append(verdict)
                return verdict.redacted if verdict.redacted is not None else value
            if isinstance(value, dict):
                return {k: visit(v) for k, v in value.items()}
            if isinstance(value, list):
                return [visit(v) for v in value]
            return value

        checked = visit(json.loads(call.arguments))
        ms = (time.perf_counter() - start) * 1000.0
        blocked = next((v for v in verdicts if v.replacement is not None), None)
        if blocked is not None:
            record_output(trace, blocked.rule or "output-rules", "block", ms)
            assert blocked.replacement is not None
            return blocked.replacement
        if not verdicts:
            record_output(trace, "clean", "allow", ms)
            return call
        record_output(trace, verdicts[0].rule or "output-rules", "redact", ms)
        return dataclasses.replace(call, arguments=json.dumps(
            checked, ensure_ascii=False, separators=(",", ":")))

    @staticmethod
    def check_whole(rails: PolicyRails | None, answer: Generation,
                    trace: RequestTrace) -> Generation:
        """A finished, non-streamed answer checked whole by the output rules."""
        if rails is None or answer.finish_reason == "content_filter":
            return answer
        verdict = rails.output.check_text(answer.text)
        if verdict.violated and verdict.replacement is not None:
            record_output(trace, verdict.rule or "output-rules", "block", 0.0)
            return Generation(verdict.replacement, "content_filter", answer.usage)
        return answer
