"""One request's choices: ``n`` per prompt, for one prompt or several (``/v1/completions``
takes a list).

Each prompt is its own job (its own admission, rails and cache lookup); they run at once and
their choices are numbered as OpenAI numbers them: prompt ``k``'s ``j``-th choice is
``k * n + j``. Nothing is sent before every prompt's first chunk is there, so a prompt that
is refused makes the whole request a plain error. The usage counts each prompt once and
every choice's completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, Sequence

from appliance.pipeline.job import Chunk, Generation, Job, RequestContext, Usage
from appliance.pipeline.merge import merged
from appliance.pipeline.orchestrator import Pipeline


def total_usage(usages: Sequence[Usage], n: int) -> Usage:
    """The request's usage from each choice's, in index order (``n`` per prompt: the
    prompt, its cached and memory tokens are those of its first choice)."""
    firsts = usages[::n]
    return Usage(prompt_tokens=sum(u.prompt_tokens for u in firsts),
                 completion_tokens=sum(u.completion_tokens for u in usages),
                 cached_tokens=sum(u.cached_tokens for u in firsts),
                 memory_tokens=sum(u.memory_tokens for u in firsts))


async def stream_jobs(pipeline: Pipeline, jobs: Sequence[Job],
                      ctx: RequestContext) -> AsyncGenerator[Chunk, None]:
    """Every choice's chunks, as they come, indexed across the jobs."""
    if len(jobs) == 1:
        async with contextlib.aclosing(pipeline.stream(jobs[0], ctx)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    n = jobs[0].n
    sources = [_offset(pipeline.stream(job, ctx), k * n) for k, job in enumerate(jobs)]
    finals: dict[int, Usage] = {}
    async with contextlib.aclosing(merged(sources, prime=True)) as chunks:
        async for chunk in chunks:
            if chunk.usage is not None and chunk.finish_reason is not None:
                finals[chunk.index] = chunk.usage
            yield chunk
    _record(ctx, [finals[i] for i in sorted(finals)], n)


async def complete_jobs(pipeline: Pipeline, jobs: Sequence[Job],
                        ctx: RequestContext) -> list[Generation]:
    """Every choice's whole answer, in index order."""
    if len(jobs) == 1:
        return await pipeline.complete_all(jobs[0], ctx)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(pipeline.complete_all(job, ctx)) for job in jobs]
    except BaseExceptionGroup as errors:  # the first failure is the request's answer
        raise errors.exceptions[0] from None
    out = [g for task in tasks for g in task.result()]
    _record(ctx, [g.usage for g in out], jobs[0].n)
    return out


async def _offset(chunks: AsyncGenerator[Chunk, None],
                  by: int) -> AsyncGenerator[Chunk, None]:
    async with contextlib.aclosing(chunks) as source:
        async for chunk in source:
            yield dataclasses.replace(chunk, index=chunk.index + by)


def _record(ctx: RequestContext, usages: list[Usage], n: int) -> None:
    """The whole request's tokens in its trace (each job recorded only its own)."""
    if not usages:
        return
    usage = total_usage(usages, n)
    trace = ctx.trace
    trace.prompt_tokens = usage.prompt_tokens
    trace.completion_tokens = usage.completion_tokens
    trace.cached_tokens = usage.cached_tokens
