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
    finish            -> a normal answer is stored in the cache and remembered

The generation is cancelled whenever the consumer stops early (client gone), the request
is cancelled, or the output rail ends the answer; the admission ticket is settled to the
tokens actually used (an upstream's from its usage). Jobs come from
:class:`~appliance.pipeline.prepare.Preparer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator

from appliance.admission.gate import Gate, Ticket
from appliance.api.requests import ChatRequest, GenerationOptions
from appliance.cache.response import CachedResponse, CacheResult
from appliance.engine.chat import ChatMessage
from appliance.engine.types import Finished, SamplingParams, TextDelta
from appliance.errors import InternalError, Unavailable
from appliance.guards.rails import InputCheck
from appliance.observability.trace import RequestTrace
from appliance.pipeline.cache_stage import CacheStage
from appliance.pipeline.dispatch import FailoverStream
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.job import Chunk, Generation, Job, RequestContext, Usage
from appliance.pipeline.memory_stage import MemoryStage
from appliance.pipeline.output_stage import OutputStage
from appliance.pipeline.prepare import Preparer
from appliance.routing.router import Router

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
        async with self._gate.admit(ctx.key, job.prompt_tokens, job.request.max_tokens,
                                    lane=engine.name) as ticket:
            trace.queue_wait_s = time.perf_counter() - queued_at
            handle = FailoverStream(self.router, self._gate, ticket, job.route, job.request,
                                    engine, trace)
            if not engine.remote:
                handle.start()  # the embedded engine prefills while the rail runs
            try:
                check = await self._classify(job, trace)  # while the engine prefills
                if check is not None and check.topic is not None:
                    ticket.use(0)  # answered without the model
                    trace.released(check.topic.answer, 0)
                    yield Chunk(check.topic.answer, "stop", Usage(job.prompt_tokens, 0, 0))
                    return
                lookup = (await self._cache.semantic(job, check, trace)
                          if self._cache is not None else None)
                if lookup is not None and lookup.entry is not None:
                    ticket.use(job.prompt_tokens + lookup.entry.completion_tokens)
                    async for chunk in self._replay(job, lookup.entry, ctx, charge=False):
                        yield chunk
                    return
                answer: list[str] = []
                async with contextlib.aclosing(self._release(handle, job, ticket,
                                                             trace)) as chunks:
                    async for chunk in chunks:
                        answer.append(chunk.text)
                        if chunk.finish_reason in ("stop", "length"):
                            await self._cache_and_remember(job, "".join(answer), chunk,
                                                           lookup, trace)
                            chunk = _with_memory_tokens(chunk, job)
                        yield chunk
            finally:
                handle.cancel()

    async def complete(self, job: Job, ctx: RequestContext) -> Generation:
        """The whole answer (the stream collected), checked once more as a whole."""
        parts = [job.echo_text] if job.echo_text else []
        async with contextlib.aclosing(self.stream(job, ctx)) as chunks:
            async for chunk in chunks:
                parts.append(chunk.text)
                if chunk.finish_reason is not None and chunk.usage is not None:
                    answer = Generation("".join(parts), chunk.finish_reason, chunk.usage)
                    return self._output.check_whole(job.rails, answer, ctx.trace)
        raise InternalError("the generation ended without a result")

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
    async def _classify(self, job: Job, trace: RequestTrace) -> InputCheck | None:
        if job.rails is None or job.rules is None:
            return None
        return await self._inputs.classify(job.rails, job.rules, trace)

    async def _release(self, events: FailoverStream, job: Job, ticket: Ticket,
                       trace: RequestTrace) -> AsyncGenerator[Chunk, None]:
        """The engine's events as chunks that passed the output rail."""
        guard = self._output.start(job.rails, job.prompt_tokens, trace)
        async for event in events:
            if isinstance(event, TextDelta):
                ticket.use(job.prompt_tokens + event.n_tokens)
                if guard is None:
                    trace.released(event.text, event.n_tokens)
                    yield Chunk(event.text)
                    continue
                async for chunk in guard.feed(event.text, event.n_tokens):
                    yield chunk
                    if chunk.finish_reason is not None:
                        return
            elif isinstance(event, Finished):
                ticket.use(event.prompt_tokens + event.completion_tokens)
                final = _final(event, trace)
                if guard is None:
                    trace.released(final.text, event.completion_tokens)
                    yield final
                    return
                async for chunk in guard.finish(final):
                    yield chunk
                return

    async def _replay(self, job: Job, entry: CachedResponse, ctx: RequestContext, *,
                      charge: bool) -> AsyncGenerator[Chunk, None]:
        assert self._cache is not None
        async for chunk in self._cache.replay(job, entry, ctx, charge=charge):
            if chunk.finish_reason is not None:
                await self._remember(job, entry.text, ctx.trace)
            yield chunk

    async def _cache_and_remember(self, job: Job, answer: str, final: Chunk,
                                  lookup: CacheResult | None, trace: RequestTrace) -> None:
        if self._cache is not None:
            await self._cache.store(job, lookup, answer, final)
        await self._remember(job, answer, trace)

    async def _remember(self, job: Job, answer: str, trace: RequestTrace) -> None:
        if self._memory is not None and job.memory is not None:
            await self._memory.remember(job.memory, answer)
            trace.memory_tokens = job.memory_tokens


def _with_memory_tokens(chunk: Chunk, job: Job) -> Chunk:
    if chunk.usage is None or job.memory is None:
        return chunk
    return dataclasses.replace(chunk, usage=dataclasses.replace(
        chunk.usage, memory_tokens=job.memory_tokens))


def _final(event: Finished, trace: RequestTrace) -> Chunk:
    """The engine's last event as the last chunk (an engine failure is an error)."""
    if event.reason == "error":
        raise InternalError(f"generation failed: {event.error}")
    if event.reason == "cancelled":
        raise Unavailable("the generation was cancelled because the server is stopping")
    trace.prefill_s = event.prefill_seconds
    trace.prompt_tokens = event.prompt_tokens
    trace.completion_tokens = event.completion_tokens
    trace.cached_tokens = event.cached_tokens
    usage = Usage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
    return Chunk(event.text, event.reason, usage)
