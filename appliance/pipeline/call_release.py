"""Releasing an answer that may hold tool calls.

:class:`CallRelease` reads the engine's text with a
:class:`~appliance.structured.call_stream.CallSplitter`: content goes on to the output rail
(window by window, as any answer), each call is released whole once it is complete and
its arguments passed :meth:`OutputStage.check_call` (the output rules, secrets and PII on
the strings inside; the content-safety classifier reads prose, not JSON). An answer that
made calls and stopped by itself ends with ``finish_reason`` ``tool_calls``.

:func:`replay_calls` reads a cached answer's calls back the same way (the cache stores
them in the ``hermes`` syntax, see :func:`~appliance.structured.toolcalls.hermes_markup`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator

from appliance.engine.types import TokenLogprob
from appliance.guards.rails import PolicyRails
from appliance.observability.trace import RequestTrace
from appliance.pipeline.job import Chunk, FinishReason, Usage
from appliance.pipeline.output_stage import OutputGuard, OutputStage
from appliance.structured.call_stream import CallSplitter, Piece
from appliance.structured.toolcalls import CallFormat


def _reason(reason: FinishReason | None, calls: int) -> FinishReason | None:
    return "tool_calls" if calls and reason == "stop" else reason


class CallRelease:
    def __init__(self, fmt: CallFormat, guard: OutputGuard | None, rails: PolicyRails | None,
                 prompt_tokens: int, trace: RequestTrace) -> None:
        self._split = CallSplitter(fmt)
        self._guard = guard
        self._rails = rails
        self._prompt_tokens = prompt_tokens
        self._trace = trace

    async def feed(self, text: str, n_tokens: int,
                   logprobs: tuple[TokenLogprob, ...] = ()) -> AsyncGenerator[Chunk, None]:
        """Checked chunks of content and calls; one with a finish reason ends the answer.
        (``logprobs`` are not asked with tools: the parser refuses the pair.)"""
        for piece in self._split.feed(text):
            async for chunk in self._release(piece, n_tokens):
                yield chunk

    async def finish(self, final: Chunk) -> AsyncGenerator[Chunk, None]:
        n_tokens = final.usage.completion_tokens if final.usage is not None else 0
        for piece in [*self._split.feed(final.text), *self._split.finish()]:
            async for chunk in self._release(piece, n_tokens):
                yield chunk
                if chunk.finish_reason is not None:
                    return
        last = Chunk("", _reason(final.finish_reason, self._split.calls), final.usage)
        if self._guard is None:
            self._trace.released("", n_tokens)
            yield last
            return
        async for chunk in self._guard.finish(last):
            yield chunk

    async def _release(self, piece: Piece, n_tokens: int) -> AsyncGenerator[Chunk, None]:
        if isinstance(piece, str):
            if self._guard is None:
                self._trace.released(piece, n_tokens)
                yield Chunk(piece)
                return
            async for chunk in self._guard.feed(piece, n_tokens):
                yield chunk
            return
        checked = OutputStage.check_call(self._rails, piece, self._trace)
        if isinstance(checked, str):  # blocked: the policy's message ends the answer
            self._trace.released(checked, n_tokens)
            yield Chunk(checked, "content_filter", Usage(self._prompt_tokens, n_tokens, 0))
            return
        self._trace.released(checked.arguments, n_tokens)
        yield Chunk("", calls=(checked,))


async def replay_calls(chunks: AsyncIterator[Chunk], fmt: CallFormat
                       ) -> AsyncGenerator[Chunk, None]:
    """A cached answer's chunks with its calls read back out of the text."""
    split = CallSplitter(dataclasses.replace(fmt, syntax="hermes"))
    async for chunk in chunks:
        pieces = split.feed(chunk.text)
        if chunk.finish_reason is not None:
            pieces += split.finish()
        text = "".join(p for p in pieces if isinstance(p, str))
        calls = tuple(p for p in pieces if not isinstance(p, str))
        yield dataclasses.replace(chunk, text=text, calls=calls)
