"""One generation, stage by stage; :meth:`Pipeline.stream` reads top to bottom.

    exact cache hit?  -> replay it (the identical request passed the input rail before)
    pick              -> the engine: the embedded one, or the least busy healthy upstream
                         serving the job's model (routing.router)
    admit             -> rate limit, then a slot of that engine's lane (bounded, fair queue)
    submit            -> the embedded engine prefills while the input classifiers run;
                         a block raises (400 content_filter), a topic answers instead
    semantic hit?     -> replay it, the sequence is cancelled
    (upstream)        -> only now is the prompt sent out: the whole input rail passed
    release           -> the engine's text through the output rail, window by window
                         (an upstream that fails before its first token: another one)
    finish            -> a normal answer that passes the output rules as a whole is
                         stored in the cache and remembered

The generation is cancelled whenever the consumer stops early (client gone), the request
is cancelled, or the output rail ends the answer; the admission ticket is settled to the
tokens actually used (an upstream's from its usage). Jobs come from
:class:`~appliance.pipeline.prepare.Preparer`.

A job of n choices (``n`` > 1, embedded engine only) is admitted once and runs n sequences
of its prompt (decoded once, see ``Engine.submit_n``), each through its own output rail;
their chunks carry their ``index``, and only the first choice is remembered (such jobs
bypass the cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator

from appliance.admission.gate import Gate, Ticket
from appliance.api.requests import ChatRequest, GenerationOptions
from appliance.cache.response import CachedResponse, CacheResult
from appliance.engine.chat import ChatMessage, ToolCall
from appliance.engine.engine import Engine
from appliance.engine.interface import EventStream, GenerationEngine
from appliance.engine.types import Finished, SamplingParams, TextDelta, TokenLogprob
from appliance.errors import InternalError, Unavailable
from appliance.guards.rails import InputCheck
from appliance.observability.trace import RequestTrace
from appliance.pipeline.cache_stage import CacheStage
from appliance.pipeline.call_release import CallRelease, replay_calls
from appliance.pipeline.dispatch import FailoverStream
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.job import Chunk, Generation, Job, RequestContext, Usage
from appliance.pipeline.memory_stage import MemoryStage
from appliance.pipeline.merge import merged
from appliance.pipeline.output_stage import OutputGuard, OutputStage
from appliance.pipeline.prepare import Preparer
from appliance.routing.router import Router
from appliance.structured.toolcalls import hermes_markup

_SUMMARY_TOKENS = 160


class Pipeline:
    def __init__(self, router: Router, gate: Gate, prepare: Preparer, inputs: InputStage,
                 output: OutputStage, *, cache: CacheStage | None = None,
                 memory: MemoryStage | None = None) -> None:
        self.prepare = prepare
        self.router = router
        self._gate = gate
        self._inputs = inputs
        self._output = output
        self._cache = cache
        self._memory = memory

    async def stream(self, job: Job, ctx: RequestContext) -> AsyncGenerator[Chunk, None]:
        """Chunks of checked text; the last carries the finish reason and the usage."""
        trace = ctx.trace
        trace.model, trace.auto_reason = job.route.model, job.route.reason
        exact = await self._cache.exact(job, trace) if self._cache is not None else None
        if exact is not None:
            async for chunk in self._replay(job, exact, ctx, charge=True):
                yield chunk
            return
        engine = self.router.pick(job.route)
        trace.engine = engine.name
        queued_at = time.perf_counter()
        async with self._gate.admit(ctx.key, job.prompt_tokens,
                                    job.request.max_tokens * job.n,
                                    lane=engine.name) as ticket:
            trace.queue_wait_s = time.perf_counter() - queued_at
            handles = self._submit(job, engine, ticket, trace)
            try:
                check = await self._classify(job, ctx)  # while the engine prefills
                if check is not None and check.topic is not None:
                    ticket.use(0)  # answered without the model
                    trace.topic = check.topic.topic
                    trace.released(check.topic.answer, 0)
                    for i in range(job.n):
                        yield Chunk(check.topic.answer, "stop", Usage(job.prompt_tokens, 0, 0),
                                    index=i)
                    return
                lookup = (await self._cache.semantic(job, check, trace)
                          if self._cache is not None else None)
                if lookup is not None and lookup.entry is not None:
                    ticket.use(job.prompt_tokens + lookup.entry.completion_tokens)
                    async for chunk in self._replay(job, lookup.entry, ctx, charge=False):
                        yield chunk
                    return
                answer: list[str] = []  # the first choice's
                stored: list[str] = []  # the same with its tool calls written out
                async with contextlib.aclosing(self._release_all(handles, job, ticket,
                                                                 trace)) as chunks:
                    async for chunk in chunks:
                        if chunk.index == 0:
                            answer.append(chunk.text)
                            stored.append(chunk.text + hermes_markup(chunk.calls))
                        if chunk.index == 0 and chunk.finish_reason in ("stop", "length",
                                                                        "tool_calls"):
                            await self._cache_and_remember(job, "".join(answer),
                                                           "".join(stored), chunk, lookup,
                                                           trace)
                            chunk = _with_memory_tokens(chunk, job)
                        yield chunk
            finally:
                for handle in handles:
                    handle.cancel()

    async def complete(self, job: Job, ctx: RequestContext) -> Generation:
        """The whole answer (the stream collected), checked once more as a whole."""
        return (await self.complete_all(job, ctx))[0]

    async def complete_all(self, job: Job, ctx: RequestContext) -> list[Generation]:
        """Every choice's whole answer (the stream collected), each checked once more as a
        whole, in index order."""
        parts: list[list[str]] = [[job.echo_text] if job.echo_text else [] for _ in
                                  range(job.n)]
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(job.n)]
        calls: list[list[ToolCall]] = [[] for _ in range(job.n)]
        done: dict[int, Generation] = {}
        async with contextlib.aclosing(self.stream(job, ctx)) as chunks:
            async for chunk in chunks:
                parts[chunk.index].append(chunk.text)
                logprobs[chunk.index].extend(chunk.logprobs)
                calls[chunk.index].extend(chunk.calls)
                if chunk.finish_reason is not None and chunk.usage is not None:
                    answer = Generation("".join(parts[chunk.index]), chunk.finish_reason,
                                        chunk.usage, tuple(logprobs[chunk.index]),
                                        tuple(calls[chunk.index]))
                    done[chunk.index] = self._output.check_whole(job.rails, answer, ctx.trace)
        if len(done) < job.n:
            raise InternalError("the generation ended without a result")
        return [done[i] for i in range(job.n)]

    async def summarise(self, instruction: str, text: str) -> str:
        """One greedy generation for background work (session summaries), admitted through
        the same queue as requests under the unlimited internal key, never cached."""
        options = GenerationOptions(
            model="default", max_tokens=_SUMMARY_TOKENS,
            sampling=SamplingParams(temperature=0.0), stop=(), stream=False,
            include_usage=False, user=None, logit_bias=())
        request = ChatRequest(options=options, messages=(ChatMessage("system", instruction),
                                                         ChatMessage("user", text)))
        ctx = RequestContext.background("summarise")
        return (await self.complete(await self.prepare.chat(request, ctx), ctx)).text

    # --- the stages' seams ---------------------------------------------------------------
    async def _classify(self, job: Job, ctx: RequestContext) -> InputCheck | None:
        if job.rails is None or job.rules is None or ctx.inputs_checked:
            return None
        return await self._inputs.classify(job.rails, job.rules, ctx.trace)

    def _submit(self, job: Job, engine: GenerationEngine, ticket: Ticket,
                trace: RequestTrace) -> list[EventStream]:
        """The job's sequences: one that fails over between the engines of its model, or
        n of one prompt on the embedded engine (the preparer refuses n > 1 elsewhere)."""
        if job.n > 1:
            assert isinstance(engine, Engine)
            return list(engine.submit_n(job.request, job.n))
        handle = FailoverStream(self.router, self._gate, ticket, job.route, job.request,
                                engine, trace)
        if not engine.remote:
            handle.start()  # the embedded engine prefills while the rail runs
        return [handle]

    def _release_all(self, handles: list[EventStream], job: Job, ticket: Ticket,
                     trace: RequestTrace) -> AsyncGenerator[Chunk, None]:
        """Every choice's chunks (one each: its own output rail), as they come."""
        spend = _Spend(ticket, job.prompt_tokens, len(handles))
        sources = [self._release(h, job, spend, trace, i) for i, h in enumerate(handles)]
        return sources[0] if len(sources) == 1 else merged(sources)

    async def _release(self, handle: EventStream, job: Job, spend: _Spend, trace: RequestTrace,
                       index: int) -> AsyncGenerator[Chunk, None]:
        """One sequence's events as chunks that passed the output rail."""
        rail = self._output.start(job.rails, job.prompt_tokens, trace)
        guard: OutputGuard | CallRelease | None = rail
        if job.calls is not None:
            guard = CallRelease(job.calls, rail, job.rails, job.prompt_tokens, trace)
        async for event in handle:
            if isinstance(event, TextDelta):
                spend.use(index, event.n_tokens)
                if guard is None:
                    trace.released(event.text, event.n_tokens)
                    yield Chunk(event.text, logprobs=event.logprobs, index=index)
                    continue
                async for chunk in guard.feed(event.text, event.n_tokens, event.logprobs):
                    yield _indexed(chunk, index)
                    if chunk.finish_reason is not None:
                        return
            elif isinstance(event, Finished):
                spend.use(index, event.completion_tokens, event.prompt_tokens)
                final = _final(event, trace, index)
                if guard is None:
                    trace.released(final.text, event.completion_tokens)
                    yield final
                    return
                async for chunk in guard.finish(final):
                    yield _indexed(chunk, index)
                return

    async def _replay(self, job: Job, entry: CachedResponse, ctx: RequestContext, *,
                      charge: bool) -> AsyncGenerator[Chunk, None]:
        assert self._cache is not None
        chunks = self._cache.replay(job, entry, ctx, charge=charge)
        if job.calls is not None:
            chunks = replay_calls(chunks, job.calls)
        answer: list[str] = []
        async for chunk in chunks:
            answer.append(chunk.text)
            if chunk.finish_reason is not None:
                await self._remember(job, "".join(answer), ctx.trace)
            yield chunk

    async def _cache_and_remember(self, job: Job, answer: str, stored: str, final: Chunk,
                                  lookup: CacheResult | None, trace: RequestTrace) -> None:
        """Keep what was released, checked as a whole (nothing if that check fails);
        ``stored``: the answer with its tool calls written out (memory keeps the text)."""
        kept = self._output.storable(job.rails, answer)
        kept_calls = kept if stored == answer else self._output.storable(job.rails, stored)
        if kept is None or kept_calls is None:
            trace.memory_tokens = job.memory_tokens
            return
        if self._cache is not None:
            await self._cache.store(job, lookup, kept_calls, final)
        await self._remember(job, kept, trace)

    async def _remember(self, job: Job, answer: str, trace: RequestTrace) -> None:
        if self._memory is not None and job.memory is not None:
            await self._memory.remember(job.memory, answer)
            trace.memory_tokens = job.memory_tokens


def _with_memory_tokens(chunk: Chunk, job: Job) -> Chunk:
    if chunk.usage is None or job.memory is None:
        return chunk
    return dataclasses.replace(chunk, usage=dataclasses.replace(
        chunk.usage, memory_tokens=job.memory_tokens))


class _Spend:
    """The tokens a job's choices used so far, kept on its admission ticket."""

    def __init__(self, ticket: Ticket, prompt_tokens: int, n: int) -> None:
        self._ticket = ticket
        self._prompt = prompt_tokens
        self._used = [0] * n

    def use(self, index: int, completion_tokens: int, prompt_tokens: int = 0) -> None:
        """``prompt_tokens``: the engine's count at the end (an upstream's replaces the
        estimate)."""
        self._prompt = prompt_tokens or self._prompt
        self._used[index] = completion_tokens
        self._ticket.use(self._prompt + sum(self._used))


def _indexed(chunk: Chunk, index: int) -> Chunk:
    return chunk if chunk.index == index else dataclasses.replace(chunk, index=index)


def _final(event: Finished, trace: RequestTrace, index: int) -> Chunk:
    """The engine's last event as the last chunk (an engine failure is an error)."""
    if event.reason == "error":
        raise InternalError(f"generation failed: {event.error}")
    if event.reason == "cancelled":
        raise Unavailable("the generation was cancelled because the server is stopping")
    if index == 0:  # (the others' prompt is the first one's, copied)
        trace.prefill_s = event.prefill_seconds
        trace.prompt_tokens = event.prompt_tokens
        trace.cached_tokens = event.cached_tokens
    trace.completion_tokens += event.completion_tokens
    usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
    return Chunk(event.text, event.reason, usage, event.logprobs, index)
