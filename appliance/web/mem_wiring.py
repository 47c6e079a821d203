"""Wiring of the memory-and-cache components: the shared encoder, ``/v1/embeddings``, the
cache's vector index and the response cache, with their life cycle (one ``cleanup_ctx``).

Called once from :func:`appliance.web.app.make_app`, after the database and the service
exist, so the cleanup runs before the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from appliance.cache import TABLE as CACHE_TABLE
from appliance.cache import CacheConfig, ResponseCache
from appliance.config import Settings
from appliance.embed import Encoder, load_encoder_spec
from appliance.embeddings import EmbeddingService
from appliance.memory import DAY, MemoryConfig, MemoryStore
from appliance.memory import TABLE as MEMORY_TABLE
from appliance.store.db import Database
from appliance.store.vectors import IndexParams, VectorIndex
from appliance.summarise import SessionSummariser, SummaryConfig
from appliance.web.keys import (
    CACHE,
    CACHE_INDEX,
    EMBEDDINGS,
    GATE,
    MEMORY,
    MEMORY_INDEX,
    SERVICE,
    SETTINGS,
    SUMMARISER,
)
from appliance.web.observability import AUDIT, METRICS

log = logging.getLogger("appliance.web")


def wire_memory_and_cache(app: web.Application, settings: Settings, db: Database,
                          encoder: Encoder) -> None:
    """``encoder``: the shared sentence encoder (the guards read the same one)."""
    app[EMBEDDINGS] = EmbeddingService(encoder, app[GATE], load_encoder_spec().id)
    params = IndexParams(dim=encoder.dim, m=settings.vector_m,
                         ef_construction=settings.vector_ef_construction,
                         ef_search=settings.vector_ef_search)
    index = VectorIndex(db, CACHE_TABLE, settings.data_dir / "vectors" / CACHE_TABLE, params)
    app[CACHE_INDEX] = index
    cache = ResponseCache(db, index, encoder, CacheConfig(
        ttl_s=settings.cache_ttl_s, threshold=settings.cache_threshold,
        max_entries=settings.cache_max_entries,
        max_temperature=settings.cache_max_temperature))
    app[CACHE] = cache
    if settings.cache_enabled:
        app[SERVICE].cache = cache
    memory_index = VectorIndex(db, MEMORY_TABLE,
                               settings.data_dir / "vectors" / MEMORY_TABLE, params)
    app[MEMORY_INDEX] = memory_index
    audit = app.get(AUDIT)
    app[MEMORY] = memory = MemoryStore(db, memory_index, encoder, audit=audit, config=MemoryConfig(
        session_ttl_s=settings.memory_session_ttl_h * 3600.0,
        user_ttl_s=settings.memory_user_ttl_days * DAY,
        max_entries=settings.memory_max_entries,
        inject_max_entries=settings.memory_inject_max_entries,
        inject_token_budget=settings.memory_inject_tokens,
        session_turns=settings.memory_session_turns,
        min_similarity=settings.memory_min_similarity))
    if settings.memory_enabled:
        app[SERVICE].memory = memory
    app[SUMMARISER] = SessionSummariser(memory, app[SERVICE].summarise, SummaryConfig(
        threshold_tokens=settings.memory_summary_tokens))
    app.cleanup_ctx.append(_cache_ctx)


async def _sweeper(app: web.Application, interval: float) -> None:
    """Cache sweep, memory GC, then save both vector indexes; every ``interval`` s."""
    while True:
        await asyncio.sleep(interval)
        try:
            await app[CACHE].sweep()
            await app[MEMORY].gc()
            if app[SERVICE].engine.ready:
                await app[SUMMARISER].run_once()
            await app[CACHE_INDEX].asave()
            await app[MEMORY_INDEX].asave()
            metrics = app.get(METRICS)
            if metrics is not None:
                counts, size = await app[MEMORY].usage()
                for tier, n in counts.items():
                    metrics.set_memory_entries(tier, n)
                metrics.set_memory_store_bytes(size)
        except Exception:
            log.exception("cache/memory sweep failed; retrying in %.0fs", interval)


async def _cache_ctx(app: web.Application) -> AsyncIterator[None]:
    for name, index in (("cache", app[CACHE_INDEX]), ("memory", app[MEMORY_INDEX])):
        report = await asyncio.to_thread(index.open)
        log.info("%s index: %d rows, %d scopes loaded, %d repaired, %d rebuilt", name,
                 report.rows, report.loaded, report.repaired, report.rebuilt)
    task = asyncio.create_task(_sweeper(app, app[SETTINGS].cache_sweep_interval_s))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(Exception):
        await app[CACHE].sweep()
        await app[MEMORY].gc()
    await app[CACHE_INDEX].aclose()
    await app[MEMORY_INDEX].aclose()
