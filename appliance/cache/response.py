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
hit costs no write. All writes go through the database writer; reads use its read pool.
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
from appliance.store.db import Database
from appliance.store.vectors import Hit, VectorIndex, from_blob, to_blob

TABLE = "cache_entries"

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
class CachedResponse:
    id: int
    scope: str
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


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


def _row(r: Sequence[object]) -> CachedResponse:
    return CachedResponse(id=int(r[0]), scope=str(r[1]), text=str(r[2]),  # type: ignore[call-overload]
                          finish_reason="length" if r[3] == "length" else "stop",
                          prompt_tokens=int(r[4]),  # type: ignore[call-overload]
                          completion_tokens=int(r[5]))  # type: ignore[call-overload]


_COLUMNS = "id, scope, text, finish_reason, prompt_tokens, completion_tokens"


class ResponseCache:
    def __init__(self, db: Database, index: VectorIndex, encoder: SentenceEncoder,
                 config: CacheConfig = CacheConfig(), *, clock: Clock = time.time) -> None:
        self.db = db
        self.index = index
        self.encoder = encoder
        self.config = config
        self._clock = clock
        self._touched: dict[int, tuple[int, float]] = {}  # id -> (hits, last used)
        self._fingerprint: str | None = None

    def cacheable(self, sampling: SamplingParams) -> bool:
        return sampling.temperature <= self.config.max_temperature

    # -- lookup -----------------------------------------------------------------------------

    async def lookup(self, query: CacheQuery, vector: Vector | None = None) -> CacheResult:
        """Exact tier, then semantic; ``vector`` is the last turn's embedding if the
        caller already has it (the guard pipeline computes one)."""
        if query.directives.no_cache:
            return CacheResult("bypass", vector=vector)
        scopes = self._scopes(query)
        now = self._clock()
        entry = await self.db.read(lambda c: self._exact(c, query, scopes, now))
        if entry is not None:
            self._touch(entry.id, now)
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
            best = await self.db.read(lambda c: self._semantic(c, query, hits, now))
            if best is not None:
                entry, similarity = best
                self._touch(entry.id, now)
                return CacheResult("hit-semantic", entry, similarity, vector)
        return CacheResult("miss", vector=vector)

    @staticmethod
    def _scopes(query: CacheQuery) -> tuple[str, ...]:
        return (query.scope,) if query.scope == GLOBAL_SCOPE else (query.scope, GLOBAL_SCOPE)

    @staticmethod
    def _exact(conn: sqlite_utils.Database, query: CacheQuery, scopes: tuple[str, ...],
               now: float) -> CachedResponse | None:
        for scope in scopes:  # own scope first
            r = conn.execute(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE scope = ? AND exact_key = ? "
                "AND expires_at > ? ORDER BY id DESC LIMIT 1",
                [scope, query.exact_key, now]).fetchone()
            if r is not None:
                return _row(r)
        return None

    @staticmethod
    def _semantic(conn: sqlite_utils.Database, query: CacheQuery, hits: list[Hit],
                  now: float) -> tuple[CachedResponse, float] | None:
        by_id = {h.id: h.similarity for h in hits}
        marks = ",".join("?" * len(by_id))
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE id IN ({marks}) AND context = ? "
            "AND fingerprint = ? AND expires_at > ?",
            [*by_id, query.context, query.fingerprint, now]).fetchall()
        scopes = ResponseCache._scopes(query)
        found = [(_row(r), by_id[int(r[0])]) for r in rows]
        # A hit's own row must be in the scope it was found for (the index is per scope;
        # this re-check makes a stray label harmless).
        found = [(e, s) for e, s in found if e.scope in scopes]
        if not found:
            return None
        return max(found, key=lambda f: (f[0].scope == query.scope, f[1]))

    def _touch(self, entry_id: int, now: float) -> None:
        hits, _ = self._touched.get(entry_id, (0, now))
        self._touched[entry_id] = (hits + 1, now)

    # -- store ------------------------------------------------------------------------------

    async def store(self, query: CacheQuery, vector: Vector | None, text: str,
                    finish_reason: str, prompt_tokens: int, completion_tokens: int
                    ) -> int | None:
        """Store a finished generation; ``None`` when it must not be stored."""
        if query.directives.no_store or finish_reason not in ("stop", "length"):
            return None
        if query.text is not None and vector is None:
            vector = await asyncio.to_thread(self.encoder.encode_one, query.text)
        now = self._clock()
        blob = to_blob(vector) if query.text is not None and vector is not None else None

        def job(conn: sqlite_utils.Database) -> tuple[int, list[tuple[str, int]]]:
            gone = [(str(s), int(i)) for i, s in conn.execute(
                f"SELECT id, scope FROM {TABLE} WHERE scope = ? AND exact_key = ?",
                [query.scope, query.exact_key]).fetchall()]
            if gone:
                conn.execute(f"DELETE FROM {TABLE} WHERE scope = ? AND exact_key = ?",
                             [query.scope, query.exact_key])
            cur = conn.execute(
                f"INSERT INTO {TABLE} (scope, exact_key, context, fingerprint, vector, kind, "
                "text, finish_reason, prompt_tokens, completion_tokens, created_at, "
                "expires_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [query.scope, query.exact_key, query.context, query.fingerprint, blob,
                 query.kind, text, finish_reason, prompt_tokens, completion_tokens, now,
                 now + self.config.ttl_s, now])
            new_id = int(cur.lastrowid or 0)
            return new_id, gone + self._evict_over_cap(conn)

        new_id, gone = await self.db.write(job)
        await self._unindex(gone)
        if blob is not None and vector is not None:
            await self.index.add(query.scope, [new_id], vector.reshape(1, -1))
        return new_id

    def _evict_over_cap(self, conn: sqlite_utils.Database) -> list[tuple[str, int]]:
        count = int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
        over = count - self.config.max_entries
        if over <= 0:
            return []
        rows = conn.execute(f"SELECT id, scope FROM {TABLE} ORDER BY last_used_at, id "
                            "LIMIT ?", [over]).fetchall()
        ids = [int(r[0]) for r in rows]
        conn.execute(f"DELETE FROM {TABLE} WHERE id IN ({','.join('?' * len(ids))})", ids)
        return [(str(r[1]), int(r[0])) for r in rows]

    async def _unindex(self, gone: Sequence[tuple[str, int]]) -> None:
        if not gone:
            return
        removals: dict[str, list[int]] = {}
        for scope, entry_id in gone:
            removals.setdefault(scope, []).append(entry_id)
        await self.index.remove(removals)

    # -- maintenance ------------------------------------------------------------------------

    async def adopt(self, fp: str) -> int:
        """Make ``fp`` the current fingerprint; delete entries made under another (a
        different model file, chat template or guard policy). Returns how many."""
        if fp == self._fingerprint:
            return 0

        def job(conn: sqlite_utils.Database) -> list[tuple[str, int]]:
            rows = conn.execute(f"SELECT scope, id FROM {TABLE} WHERE fingerprint != ?",
                                [fp]).fetchall()
            conn.execute(f"DELETE FROM {TABLE} WHERE fingerprint != ?", [fp])
            return [(str(r[0]), int(r[1])) for r in rows]

        gone = await self.db.write(job)
        await self._unindex(gone)
        self._fingerprint = fp
        return len(gone)

    async def sweep(self) -> SweepReport:
        """Write pending hit counts, delete expired entries, enforce the size cap."""
        touched, self._touched = self._touched, {}
        now = self._clock()

        def job(conn: sqlite_utils.Database) -> tuple[list[tuple[str, int]], int]:
            for entry_id, (hits, used) in touched.items():
                conn.execute(f"UPDATE {TABLE} SET hits = hits + ?, last_used_at = "
                             "max(last_used_at, ?) WHERE id = ?", [hits, used, entry_id])
            expired = [(str(r[0]), int(r[1])) for r in conn.execute(
                f"SELECT scope, id FROM {TABLE} WHERE expires_at <= ?", [now]).fetchall()]
            conn.execute(f"DELETE FROM {TABLE} WHERE expires_at <= ?", [now])
            evicted = self._evict_over_cap(conn)
            return expired + evicted, len(expired)

        gone, n_expired = await self.db.write(job)
        await self._unindex(gone)
        return SweepReport(n_expired, len(gone) - n_expired, len(touched))

    async def count(self, scope: str | None = None) -> int:
        def read(conn: sqlite_utils.Database) -> int:
            if scope is None:
                return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
            return int(conn.execute(f"SELECT count(*) FROM {TABLE} WHERE scope = ?",
                                    [scope]).fetchone()[0])

        return await self.db.read(read)

    async def vector_of(self, entry_id: int) -> Vector | None:
        """The stored embedding of an entry (tests and tools)."""
        blob = await self.db.read(lambda c: c.execute(
            f"SELECT vector FROM {TABLE} WHERE id = ?", [entry_id]).fetchone())
        if blob is None or blob[0] is None:
            return None
        return from_blob(blob[0], self.index.params.dim)
