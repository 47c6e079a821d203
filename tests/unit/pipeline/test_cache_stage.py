"""The cache stage on its own: real SQLite, a real vector index, the real encoder."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.admission.keys import KeyRecord, KeyStore
from appliance.api.requests import parse_chat
from appliance.cache.response import CacheConfig, CacheDirectives, ResponseCache
from appliance.encoder.sentence import Encoder
from appliance.engine.models import ServedModel
from appliance.engine.tokenizer import Tokenizer
from appliance.errors import RateLimited
from appliance.guards.readiness import GuardsState
from appliance.observability.trace import RequestTrace
from appliance.pipeline.cache_stage import CacheStage
from appliance.pipeline.input_stage import InputStage
from appliance.pipeline.job import Chunk, Job, RequestContext, Usage
from appliance.pipeline.prepare import Preparer
from appliance.routing.catalog import Catalog
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex
from tests.unit.pipeline.conftest import make_gate


@dataclasses.dataclass
class Rig:
    stage: CacheStage
    prepare: Preparer
    key: KeyRecord


@pytest.fixture
async def rig(db: Database, tmp_path: Path, encoder: Encoder, served: ServedModel,
              tokenizer: Tokenizer, guards: GuardsState) -> AsyncIterator[Rig]:
    index = VectorIndex(db, "cache_entries", tmp_path / "vectors")
    await asyncio.to_thread(index.open)
    cache = ResponseCache(db, index, encoder, CacheConfig())
    gate = make_gate(db)
    stage = CacheStage(cache, gate, tokenizer, model_sha256=served.model.sha256)
    key = (await KeyStore(db).create("clinic", tpm=1000, burst_tokens=1000)).record
    yield Rig(stage, Preparer(Catalog(served), InputStage(guards), tokenizer=tokenizer,
                              ctx_size=512, cache=stage), key)
    await index.aclose()


def _ctx(key: KeyRecord, **directives: bool) -> RequestContext:
    return RequestContext(key, RequestTrace("t", "/v1/chat/completions"),
                          CacheDirectives(**directives))


async def _job(rig: Rig, text: str, ctx: RequestContext, temperature: float = 0.0) -> Job:
    return await rig.prepare.chat(parse_chat({
        "model": "default", "temperature": temperature, "max_tokens": 16,
        "messages": [{"role": "user", "content": text}]}), ctx)


async def _store(rig: Rig, job: Job, ctx: RequestContext, answer: str) -> None:
    lookup = await rig.stage.semantic(job, None, ctx.trace)
    assert lookup is not None and lookup.status == "miss"
    await rig.stage.store(job, lookup, answer, Chunk("", "stop", Usage(job.prompt_tokens, 5, 0)))


async def test_only_greedy_requests_get_a_query(rig: Rig) -> None:
    ctx = _ctx(rig.key)
    assert (await _job(rig, "When do you open?", ctx)).cache is not None
    random = await _job(rig, "When do you open?", ctx, temperature=0.8)
    assert random.cache is None
    assert await rig.stage.exact(random, ctx.trace) is None and ctx.trace.cache == "bypass"


async def test_a_stored_answer_is_an_exact_then_a_semantic_hit(rig: Rig) -> None:
    ctx = _ctx(rig.key)
    job = await _job(rig, "What are the clinic's opening hours on Saturday?", ctx)
    assert await rig.stage.exact(job, ctx.trace) is None and ctx.trace.cache == "miss"
    await _store(rig, job, ctx, "We open at 8 on Saturdays.")
    again = _ctx(rig.key)
    hit = await rig.stage.exact(await _job(rig, job_text(job, rig), again), again.trace)
    assert hit is not None and hit.text == "We open at 8 on Saturdays."
    near = _ctx(rig.key)
    similar = await _job(rig, "What are the clinic's opening hours on Saturdays?", near)
    assert await rig.stage.exact(similar, near.trace) is None
    result = await rig.stage.semantic(similar, None, near.trace)
    assert result is not None and result.status == "hit-semantic"
    assert near.trace.cache == "hit-semantic" and near.trace.cache_similarity is not None


def job_text(job: Job, rig: Rig) -> str:
    assert job.rules is not None
    return job.rules.texts[job.rules.main]


async def test_no_store_and_unfinished_answers_are_not_kept(rig: Rig) -> None:
    ctx = _ctx(rig.key, no_store=True)
    job = await _job(rig, "Is parking free?", ctx)
    await _store(rig, job, ctx, "Yes.")
    plain = _ctx(rig.key)
    job = await _job(rig, "Is parking free?", plain)
    assert await rig.stage.exact(job, plain.trace) is None
    lookup = await rig.stage.semantic(job, None, plain.trace)
    await rig.stage.store(job, lookup, "cut", Chunk("", "content_filter",
                                                      Usage(job.prompt_tokens, 3, 0)))
    assert await rig.stage.exact(job, plain.trace) is None


async def test_a_replay_comes_in_word_chunks_and_is_charged_to_the_key(rig: Rig) -> None:
    ctx = _ctx(rig.key)
    job = await _job(rig, "Where is the pharmacy?", ctx)
    answer = "The pharmacy is on the ground floor next to the main entrance."
    await _store(rig, job, ctx, answer)
    replay = _ctx(rig.key)
    entry = await rig.stage.exact(job, replay.trace)
    assert entry is not None
    chunks = [c async for c in rig.stage.replay(job, entry, replay, charge=True)]
    assert "".join(c.text for c in chunks) == answer and len(chunks) > 3
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert chunks[-1].usage.cached_tokens == job.prompt_tokens
    assert replay.trace.completion_tokens == entry.completion_tokens
    # the key's 1000-token bucket pays for every replay until it is empty
    with pytest.raises(RateLimited):
        for _ in range(1000 // (job.prompt_tokens + entry.completion_tokens) + 1):
            async for _chunk in rig.stage.replay(job, entry, _ctx(rig.key), charge=True):
                pass
