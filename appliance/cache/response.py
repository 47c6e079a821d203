"""The response cache: an exact tier and a semantic tier, never crossing scopes.

Keys: :mod:`appliance.cache.keys`.

Scope. ``key:<api key id>/user:<OpenAI user>``: an entry is only ever read in the scope that
stored it. Requests an admin-scoped key marks shareable are stored in the ``global`` scope
instead, and every lookup tries its own scope first, then ``global`` (an FAQ curated by an
admin). The vector index is per scope, so a semantic search cannot see other scopes.

Only requests with ``temperature <= max_temperature`` (0 by default) are cacheable, and
only generations that finished normally (``stop``/``length``) are stored: a response cut
by a guard ends with ``content_filter`` and is never stored.

Life of an entry: ``ttl_s`` after it was stored it expires (lookups ignore it, the sweep
deletes it); when the table holds more than ``max_entries`` the least recently used go
first. Hits update ``hits``/``last_used_at`` in memory and are written by the sweep, so a
hit costs no write. All writes go through the database writer; reads use its read pool;
the SQL is in :mod:`appliance.store.cache`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import sqlite_utils

from appliance.cache.keys import GLOBAL_SCOPE
from appliance.engine.types import SamplingParams
from appliance.store import cache as rows
from appliance.store.cache import TABLE, CachedResponse, NewEntry
from appliance.store.db import Database
from appliance.store.rows import IndexedRow, Uses, by_scope, touch
from appliance.store.vectors import Hit, VectorIndex, to_blob

__all__ = ["TABLE", "CacheConfig", "CacheDirectives", "CacheQuery", "CacheResult",
           "CachedResponse", "ResponseCache", "SweepReport"]

Status = Literal["hit-exact", "hit-semantic", "miss", "bypass"]
Vector = npt.NDArray[np.float32]
Clock = Callable[[], float]


class SentenceEncoder(Protocol):
    def encode_one(self, text: str) -> Vector: ...


@dataclass(frozen=True)
class CacheConfig:
    ttl_s: float = 3600.0
    threshold: float = 0.95
    max_entries: int = 100_000
    max_temperature: float = 0.0
    candidates: int = 4  # semantic neighbours checked per scope


@dataclass(frozen=True)
class CacheDirectives:
    """What the client asked for (``Cache-Control``) and whether an admin shares it."""

    no_cache: bool = False  # do not look up (still store)
    no_store: bool = False  # do not store
    shared: bool = False  # store in the global scope (admin keys only; checked by caller)


@dataclass(frozen=True)
class CacheQuery:
    scope: str
    exact_key: str
    context: str
    fingerprint: str
    kind: str  # "chat" | "text"
    text: str | None  # the last user turn (semantic tier), None for no semantic tier
    directives: CacheDirectives


@dataclass(frozen=True)
class CacheResult:
    status: Status
    entry: CachedResponse | None = None
    similarity: float | None = None
    vector: Vector | None = None  # the last turn's embedding, reused when storing


@dataclass(frozen=True)
class SweepReport:
    expired: int
    evicted: int
    touched: int


class ResponseCache:
    def __init__(self, db: Database, index: VectorIndex, encoder: SentenceEncoder,
                 config: CacheConfig = CacheConfig(), *, clock: Clock = time.time) -> None:
        self.db = db
        self.index = index
        self.encoder = encoder
        self.config = config
        self._clock = clock
        self._touched: dict[int, Uses] = {}  # hits not yet written
        self._fingerprint: str | None = None

    def cacheable(self, sampling: SamplingParams) -> bool:
        return sampling.temperature <= self.config.max_temperature

    # -- lookup -----------------------------------------------------------------------------

    async def lookup(self, query: CacheQuery, vector: Vector | None = None) -> CacheResult:
        """Exact tier, then semantic; ``vector`` is the last turn's embedding if the
        caller already has it (the guard pipeline computes one)."""
        if query.directives.no_cache:
            return CacheResult("bypass", vector=vector)
        scopes = _scopes(query)
        now = self._clock()
        entry = await self.db.read(lambda c: rows.exact(c, scopes, query.exact_key, now))
        if entry is not None:
            touch(self._touched, entry.id, now)
            return CacheResult("hit-exact", entry, vector=vector)
        if query.text is None:
            return CacheResult("miss", vector=vector)
        if vector is None:
            vector = await asyncio.to_thread(self.encoder.encode_one, query.text)
        hits: list[Hit] = []
        for scope in scopes:
            found = await self.index.search(scope, vector, self.config.candidates)
            hits.extend(h for h in found if h.similarity >= self.config.threshold)
        if hits:
            similarity = {h.id: h.similarity for h in hits}
            stored = await self.db.read(lambda c: rows.candidates(
                c, list(similarity), query.context, query.fingerprint, now))
            best = _best(query, stored, similarity)
            if best is not None:
                touch(self._touched, best.id, now)
                return CacheResult("hit-semantic", best, similarity[best.id], vector)
        return CacheResult("miss", vector=vector)

    # -- store ------------------------------------------------------------------------------

    async def store(self, query: CacheQuery, vector: Vector | None, text: str,
                    finish_reason: str, prompt_tokens: int, completion_tokens: int
                    ) -> int | None:
        """Store a finished generation; ``None`` when it must not be stored."""
        if query.directives.no_store or finish_reason not in ("stop", "length", "tool_calls"):
            return None
        if query.text is not None and vector is None:
            vector = await asyncio.to_thread(self.encoder.encode_one, query.text)
        now = self._clock()
        blob = to_blob(vector) if query.text is not None and vector is not None else None
        entry = NewEntry(query.scope, query.exact_key, query.context, query.fingerprint, blob,
                         query.kind, text, finish_reason, prompt_tokens, completion_tokens,
                         created_at=now, expires_at=now + self.config.ttl_s)
        gone: list[IndexedRow] = []

        def job(conn: sqlite_utils.Database) -> int:
            gone.extend(rows.delete_exact(conn, query.scope, query.exact_key))
            new_id = rows.insert(conn, entry)
            gone.extend(rows.evict_over(conn, self.config.max_entries))
            return new_id

        new_id = await self.db.write(job)
        await self._unindex(gone)
        if blob is not None and vector is not None:
            await self.index.add(query.scope, [new_id], vector.reshape(1, -1))
        return new_id

    async def _unindex(self, gone: Sequence[IndexedRow]) -> None:
        if gone:
            await self.index.remove(by_scope(gone))

    # -- maintenance ------------------------------------------------------------------------

    async def adopt(self, fp: str, keep: Sequence[str] = ()) -> int:
        """Make ``fp`` the current fingerprint; delete entries made under another (a
        different model file, chat template or guard policy) that is not in ``keep`` (the
        upstream models'). Returns how many."""
        if fp == self._fingerprint:
            return 0

        gone = await self.db.write(lambda conn: rows.delete_other_fingerprints(conn, fp,
                                                                               keep))
        await self._unindex(gone)
        self._fingerprint = fp
        return len(gone)

    async def sweep(self) -> SweepReport:
        """Write pending hit counts, delete expired entries, enforce the size cap."""
        touched, self._touched = self._touched, {}
        now = self._clock()

        def job(conn: sqlite_utils.Database) -> SweepReport:
            rows.flush_uses(conn, touched)
            expired = rows.delete_expired(conn, now)
            evicted = rows.evict_over(conn, self.config.max_entries)
            gone.extend(expired + evicted)
            return SweepReport(len(expired), len(evicted), len(touched))

        gone: list[IndexedRow] = []
        report = await self.db.write(job)
        await self._unindex(gone)
        return report

    async def clear(self) -> int:
        """Delete every entry, of every key and scope; returns how many."""
        gone = await self.db.write(rows.delete_all)
        await self._unindex(gone)
        return len(gone)

    async def count(self) -> int:
        return await self.db.read(rows.count)


def _scopes(query: CacheQuery) -> tuple[str, ...]:
    """Where a query looks: its own scope first, then the global one."""
    return (query.scope,) if query.scope == GLOBAL_SCOPE else (query.scope, GLOBAL_SCOPE)


def _best(query: CacheQuery, found: Sequence[CachedResponse], similarity: dict[int, float]
          ) -> CachedResponse | None:
    """The semantic hit to serve: own scope before global, then the most similar."""
    # A hit's own row must be in the scope it was found for (the index is per scope;
    # this re-check makes a stray label harmless).
    scopes = _scopes(query)
    mine = [e for e in found if e.scope in scopes]
    return max(mine, key=lambda e: (e.scope == query.scope, similarity[e.id]), default=None)
