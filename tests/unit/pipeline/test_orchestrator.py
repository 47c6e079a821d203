"""The whole pipeline with real parts: the engine thread on the default model, the guards,
SQLite cache and memory. What the orchestrator decides: order, replays, topics,
cancellation and settling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyRecord, KeyStore
from appliance.api.requests import parse_chat
from appliance.cache.response import CacheConfig, ResponseCache
from appliance.encoder.sentence import Encoder
from appliance.engine.engine import Engine
from appliance.engine.engine_config import EngineConfig
from appliance.engine.models import ServedModel
from appliance.engine.tokenizer import Tokenizer
from appliance.guards.readiness import GuardsState
from appliance.memory.memories import MemoryStore
from appliance.observability.trace import RequestTrace
from appliance.pipeline.cache_stage import CacheStage
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.job import Chunk, Job, RequestContext
from appliance.pipeline.memory_stage import MemoryStage
from appliance.pipeline.orchestrator import Pipeline
from appliance.pipeline.output_stage import OutputStage
from appliance.pipeline.prepare import Preparer
from appliance.routing.catalog import Catalog
from appliance.routing.router import Router
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex
from tests.unit.pipeline.conftest import make_gate, started


@dataclass
class Rig:
    pipeline: Pipeline
    engine: Engine
    gate: Gate
    memory: MemoryStore
    cache: ResponseCache
    key: KeyRecord
    clinic: KeyRecord


@pytest.fixture
async def rig(db: Database, tmp_path: Path, encoder: Encoder, served: ServedModel,
              guards: GuardsState) -> AsyncIterator[Rig]:
    engine = await started(Engine(EngineConfig(
        model_path=served.model.path, parallel=2, ctx_size=512, batch_size=256, n_threads=2,
        default_seed=7)))
    tokenizer = Tokenizer(engine, model_id=served.id, use_template=True)
    indexes = [VectorIndex(db, t, tmp_path / t) for t in ("cache_entries", "memories")]
    for index in indexes:
        await asyncio.to_thread(index.open)
    gate = make_gate(db)
    responses = ResponseCache(db, indexes[0], encoder, CacheConfig())
    cache = CacheStage(responses, gate, tokenizer, model_sha256=served.model.sha256)
    memory_store = MemoryStore(db, indexes[1], encoder)
    memory = MemoryStage(memory_store, tokenizer)
    inputs = InputStage(guards)
    prepare = Preparer(Catalog(served), inputs, tokenizer=tokenizer, ctx_size=512,
                       memory=memory, cache=cache, max_n=2)
    router = Router(engine, (), {}, gate.outstanding)
    pipeline = Pipeline(router, gate, prepare, inputs, OutputStage(guards, holdback_tokens=8),
                        cache=cache, memory=memory)
    keys = KeyStore(db)
    key = (await keys.create("desk")).record
    clinic = (await keys.create("ward", guard_policy="clinic")).record
    yield Rig(pipeline, engine, gate, memory_store, responses, key, clinic)
    await asyncio.to_thread(engine.stop)
    for index in indexes:
        await index.aclose()


def _ctx(key: KeyRecord, session: str | None = None) -> RequestContext:
    return RequestContext(key, RequestTrace("t", "/v1/chat/completions"), session_id=session)


async def _job(rig: Rig, ctx: RequestContext, text: str, **fields: object) -> Job:
    body = {"model": "default", "temperature": 0, "max_tokens": 24,
            "messages": [{"role": "user", "content": text}], **fields}
    return await rig.pipeline.prepare.chat(parse_chat(body), ctx)


async def _collect(rig: Rig, job: Job, ctx: RequestContext) -> list[Chunk]:
    async with contextlib.aclosing(rig.pipeline.stream(job, ctx)) as chunks:
        return [c async for c in chunks]


async def test_a_generation_is_released_cached_and_replayed_without_a_slot(rig: Rig) -> None:
    ctx = _ctx(rig.key)
    job = await _job(rig, ctx, "Say hello to the clinic staff.")
    chunks = await _collect(rig, job, ctx)
    final = chunks[-1]
    assert final.finish_reason in ("stop", "length") and final.usage is not None
    assert final.usage.prompt_tokens == job.prompt_tokens and final.usage.completion_tokens > 0
    answer = "".join(c.text for c in chunks)
    assert answer.strip() and ctx.trace.cache == "miss"
    assert rig.gate.stats().running == 0 and ctx.trace.queue_wait_s is not None
    rig.gate.close()  # no slot for anybody now: an exact hit needs none
    again = _ctx(rig.key)
    replay = await _collect(rig, await _job(rig, again, "Say hello to the clinic staff."),
                            again)
    assert "".join(c.text for c in replay) == answer and again.trace.cache == "hit-exact"


async def test_a_topic_answers_without_the_model_and_frees_the_sequence(rig: Rig) -> None:
    ctx = _ctx(rig.clinic)
    job = await _job(rig, ctx, "I have crushing chest pain right now")
    chunks = await _collect(rig, job, ctx)
    assert len(chunks) == 1 and "emergency" in chunks[0].text
    assert chunks[0].usage is not None and chunks[0].usage.completion_tokens == 0
    await asyncio.sleep(0.3)
    assert rig.engine.stats.running == 0 and rig.gate.stats().running == 0


async def test_a_consumer_that_stops_early_cancels_the_sequence(rig: Rig) -> None:
    ctx = _ctx(rig.key)
    job = await _job(rig, ctx, "Write a long story about a lighthouse keeper.",
                     max_tokens=200, temperature=0.7)
    async with contextlib.aclosing(rig.pipeline.stream(job, ctx)) as chunks:
        first = await anext(chunks)
        assert first.finish_reason is None
    assert rig.gate.stats().running == 0
    for _ in range(50):  # the engine drops it within a step
        if rig.engine.stats.running == 0:
            break
        await asyncio.sleep(0.05)
    assert rig.engine.stats.running == 0


async def test_n_choices_run_together_and_leave_together(rig: Rig) -> None:
    ctx = _ctx(rig.key)
    job = await _job(rig, ctx, "Invent a name for a ship.", n=2, temperature=0.9, seed=3,
                     logprobs=True)
    assert job.cache is None and ctx.trace.cache is None  # several choices: no cache
    answers = await rig.pipeline.complete_all(job, ctx)
    assert len(answers) == 2 and answers[0].text != answers[1].text
    for answer in answers:
        assert answer.logprobs and all(e.logprob <= 0 for e in answer.logprobs)
    assert ctx.trace.completion_tokens == sum(a.usage.completion_tokens for a in answers)
    # A consumer that leaves cancels both sequences at once; the engine goes on serving.
    stopped = _ctx(rig.key)
    job = await _job(rig, stopped, "Write a long story about a ship.", n=2, max_tokens=200,
                     temperature=0.7)
    async with contextlib.aclosing(rig.pipeline.stream(job, stopped)) as chunks:
        await anext(chunks)
    for _ in range(50):
        if rig.engine.stats.running == 0:
            break
        await asyncio.sleep(0.05)
    assert rig.engine.stats.running == 0 and rig.engine.ready
    after = _ctx(rig.key)
    assert (await rig.pipeline.complete(await _job(rig, after, "Say hi."), after)).text


async def test_complete_remembers_the_session_and_summarise_is_never_cached(
        rig: Rig) -> None:
    ctx = _ctx(rig.key, session="visit-1")
    job = await _job(rig, ctx, "Remember that my appointment is on Tuesday.")
    result = await rig.pipeline.complete(job, ctx)
    assert result.text and result.usage.completion_tokens > 0
    rows = await rig.memory.entries(rig.key.id, "session", session_id="visit-1")
    assert [r.role for r in rows] == ["user", "assistant"]
    stored = await rig.cache.count()
    summary = await rig.pipeline.summarise("Summarise in one sentence.", "user: hi")
    assert summary.strip()
    assert await rig.cache.count() == stored  # its prompt holds somebody's conversation
