"""Tiered memory: session turns, user memories and admin-curated global knowledge.

Tiers and retention (defaults; settings ``memory_*``):

- **session** — turns of one conversation (``session_id``) under one key (and user, if
  named), kept verbatim; deleted 24 h after their last use.
- **user** — memories of one ``user`` under one key, across sessions; deleted 90 days after
  their last use.
- **global** — shared knowledge written by admin keys, read by every key; never expires.

Pinned entries are never deleted by retention or by the garbage collector.

Isolation. Every read and delete is filtered by the caller's API key and user: a key never
sees another key's session or user memories, and under one key a user never sees another
user's (an entry written without a user is only visible to requests without one). The
vector index is partitioned the same way (``user:<key>/<user>`` and ``global``), so a
similarity search cannot return another owner's rows. Users and sessions arrive here as
keyed hashes of the client's ids (:mod:`appliance.store.pseudonyms`); the store never sees
the plain ones.

Recall, for a chat request that names a user and/or a session: the most recent session
turns verbatim (oldest first), then the user and global memories most similar to the last
user turn (cosine >= ``min_similarity``), capped by ``inject_max_entries`` and a token
budget. Each recalled entry's use is counted (flushed to SQLite by the GC).

Garbage collection (:meth:`MemoryStore.gc`, run in the background): retention first, then,
while more than ``max_entries`` rows remain, the unpinned ones with the lowest importance
go, ``importance = recency + frequency`` with ``recency = exp(-age / half_life)`` (age since
last use) and ``frequency = log1p(access_count) / 4``.

SQLite is the source of truth: a write is acknowledged once committed (``synchronous=FULL``),
then indexed; a crash in between is repaired when the index is opened. The SQL is in
:mod:`appliance.store.memory`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import sqlite_utils

from appliance.api.memory import Tier
from appliance.store import memory as rows
from appliance.store.db import Database
from appliance.store.memory import TABLE, MemoryEntry, NewMemory, SessionRef, index_scope
from appliance.store.rows import IndexedRow, Uses, by_scope, touch
from appliance.store.vectors import VectorIndex, to_blob

__all__ = ["DAY", "TABLE", "GcReport", "MemoryConfig", "MemoryEntry", "MemoryStore",
           "Recall", "Recalled", "SessionRef", "importance"]

Vector = npt.NDArray[np.float32]
Clock = Callable[[], float]
DAY = 86_400.0


class MemoryEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> Vector: ...

    def token_counts(self, texts: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class MemoryConfig:
    session_ttl_s: float = DAY
    user_ttl_s: float = 90 * DAY
    max_entries: int = 100_000
    inject_max_entries: int = 8
    inject_token_budget: int = 256
    session_turns: int = 8
    min_similarity: float = 0.35
    half_life_s: float = 7 * DAY


@dataclass(frozen=True)
class Recalled:
    entry: MemoryEntry
    similarity: float | None  # None for session turns (recency, not similarity)


@dataclass(frozen=True)
class Recall:
    turns: tuple[MemoryEntry, ...]  # oldest first
    related: tuple[Recalled, ...]  # most similar first
    tokens: int  # budget used (encoder tokens; the service measures model tokens)
    summaries: tuple[MemoryEntry, ...] = ()  # the session's key facts, then digests


@dataclass(frozen=True)
class GcReport:
    expired: int
    evicted: int
    touched: int


def importance(entry_age_s: float, access_count: int, half_life_s: float) -> float:
    return math.exp(-max(0.0, entry_age_s) / half_life_s) + math.log1p(access_count) / 4.0


class AuditSink(Protocol):
    """What the store needs of :class:`appliance.observability.audit.Audit`."""

    async def append(self, event: str, actor: str,
                     detail: Mapping[str, Any] | None = None) -> object: ...


class _Budget:
    """What recall may still inject: entries and encoder tokens."""

    def __init__(self, entries: int, tokens: int) -> None:
        self.entries = entries
        self.tokens = tokens

    def take(self, entry: MemoryEntry) -> bool:
        if self.entries <= 0 or entry.tokens > self.tokens:
            return False
        self.entries -= 1
        self.tokens -= entry.tokens
        return True


class MemoryStore:
    def __init__(self, db: Database, index: VectorIndex, encoder: MemoryEncoder,
                 config: MemoryConfig = MemoryConfig(), *, clock: Clock = time.time,
                 audit: AuditSink | None = None) -> None:
        self._audit = audit
        self.db = db
        self.index = index
        self.encoder = encoder
        self.config = config
        self._clock = clock
        self._touched: dict[int, Uses] = {}  # uses not yet written

    async def _audited(self, event: str, key_id: int, detail: dict[str, object]) -> None:
        """Every deletion (API, retention, GC) is recorded in the audit log."""
        if self._audit is not None:
            await self._audit.append(event, f"key:{key_id}" if key_id else "system", detail)

    # -- writes ---------------------------------------------------------------------------

    async def add(self, key_id: int, tier: Tier, content: str, *, user: str = "",
                  session_id: str = "", pinned: bool = False, kind: str = "note",
                  role: str = "note", vector: Vector | None = None) -> MemoryEntry:
        scope = index_scope(key_id, tier, user)
        tokens, vector = await asyncio.to_thread(self._embed, content, scope is not None,
                                                 vector)
        new = NewMemory(key_id, tier, user, session_id, kind, role, content, tokens, pinned,
                        scope or "", to_blob(vector) if vector is not None else None)
        now = self._clock()
        entry = await self.db.write(lambda conn: rows.insert(conn, new, now))
        if scope is not None and vector is not None:
            await self.index.add(scope, [entry.id], vector.reshape(1, -1))
        return entry

    def _embed(self, content: str, embed: bool, vector: Vector | None
               ) -> tuple[int, Vector | None]:
        tokens = max(1, self.encoder.token_counts([content])[0] - 2)
        if embed and vector is None:
            vector = self.encoder.encode([content])[0]
        return tokens, vector if embed else None

    async def add_turns(self, key_id: int, user: str, session_id: str,
                        turns: Sequence[tuple[str, str]]) -> list[MemoryEntry]:
        """Remember the turns of a finished exchange in the session tier."""
        out = []
        for role, content in turns:
            if content.strip():
                out.append(await self.add(key_id, "session", content, user=user,
                                          session_id=session_id, kind="turn", role=role))
        return out

    async def delete(self, key_id: int, entry_id: int, user: str) -> bool:
        """Delete one session or user entry the caller (key and user) owns."""
        gone = await self.db.write(lambda c: rows.delete_owned(c, key_id, user, entry_id))
        await self._unindex(gone)
        for row in gone:
            await self._audited("memory.delete", key_id, {"id": row.id, "user": user})
        return bool(gone)

    async def delete_global(self, key_id: int, entry_id: int) -> bool:
        """Delete a global entry (admin keys only; the caller checks)."""
        gone = await self.db.write(lambda c: rows.delete_global(c, entry_id))
        await self._unindex(gone)
        for row in gone:
            await self._audited("memory.delete", key_id, {"id": row.id, "tier": "global"})
        return bool(gone)

    async def forget_user(self, key_id: int | None, user: str, *, actor_id: int = 0) -> int:
        """Delete every session and user memory of ``user`` under ``key_id``, pinned too;
        ``None``: under every key (an administrator, ``actor_id``, erasing a person)."""
        gone = await self.db.write(lambda c: rows.delete_user(c, key_id, user))
        await self._unindex(gone)
        await self._audited("memory.forget_user", key_id or actor_id,
                            {"user": user, "deleted": len(gone), "all_keys": key_id is None})
        return len(gone)

    async def set_pinned(self, key_id: int, entry_id: int, user: str, pinned: bool, *,
                         admin: bool = False) -> MemoryEntry | None:
        return await self.db.write(lambda c: rows.set_pinned(c, entry_id, key_id, user,
                                                             pinned, admin=admin))

    async def _unindex(self, gone: Sequence[IndexedRow]) -> None:
        removals = by_scope(gone)
        if removals:
            await self.index.remove(removals)

    # -- reads ----------------------------------------------------------------------------

    async def entries(self, key_id: int, tier: Tier, *, user: str = "", session_id: str = ""
                   ) -> list[MemoryEntry]:
        return await self.db.read(lambda c: rows.entries(c, key_id, tier, user=user,
                                                         session_id=session_id))

    async def get(self, entry_id: int) -> MemoryEntry | None:
        return await self.db.read(lambda c: rows.get(c, entry_id))

    async def recall(self, key_id: int, user: str, session_id: str, text: str, *,
                     vector: Vector | None = None) -> Recall:
        """What to inject for a request (see the module doc)."""
        cfg = self.config
        now = self._clock()
        budget = _Budget(cfg.inject_max_entries, cfg.inject_token_budget)
        turns: list[MemoryEntry] = []
        summaries: list[MemoryEntry] = []
        if session_id:
            turns, summaries = await self._recall_session(key_id, user, session_id, now,
                                                          budget)
        related: list[Recalled] = []
        if text.strip() and budget.entries > 0 and budget.tokens > 0:
            related = await self._recall_related(key_id, user, text, vector, now, budget)
        for entry in (*turns, *summaries, *(r.entry for r in related)):
            touch(self._touched, entry.id, now)
        return Recall(tuple(turns), tuple(related), cfg.inject_token_budget - budget.tokens,
                      tuple(summaries))

    async def _recall_session(self, key_id: int, user: str, session_id: str, now: float,
                              budget: _Budget
                              ) -> tuple[list[MemoryEntry], list[MemoryEntry]]:
        """The newest turns that fit (returned oldest first), then the summaries of what
        came before them: key facts first, newest digest next."""
        found = await self.db.read(lambda c: rows.session_context(
            c, key_id, user, session_id, used_after=now - self.config.session_ttl_s,
            turns=self.config.session_turns))
        turns: list[MemoryEntry] = []
        for entry in sorted((e for e in found if e.kind == "turn"), key=lambda e: -e.id):
            if not budget.take(entry):
                break
            turns.append(entry)
        turns.reverse()
        summaries: list[MemoryEntry] = []
        for entry in sorted((e for e in found if e.kind != "turn"),
                            key=lambda e: (e.kind != "facts", -e.id)):
            if not budget.take(entry):
                break
            summaries.append(entry)
        return turns, summaries

    async def _recall_related(self, key_id: int, user: str, text: str,
                              vector: Vector | None, now: float, budget: _Budget
                              ) -> list[Recalled]:
        """User and global memories most similar to ``text``, within the budget."""
        cfg = self.config
        query: Vector = vector if vector is not None else await asyncio.to_thread(
            lambda: self.encoder.encode([text])[0])
        scopes = ["global"] + ([index_scope(key_id, "user", user) or ""] if user else [])
        sims: dict[int, float] = {}
        for scope in scopes:
            for hit in await self.index.search(scope, query, cfg.inject_max_entries):
                if hit.similarity >= cfg.min_similarity:
                    sims[hit.id] = hit.similarity
        if not sims:
            return []
        found = await self.db.read(lambda c: rows.visible(
            c, list(sims), key_id, user, user_used_after=now - cfg.user_ttl_s))
        related: list[Recalled] = []
        for entry in sorted(found, key=lambda e: -sims[e.id]):
            if budget.entries <= 0:
                break
            if budget.take(entry):
                related.append(Recalled(entry, sims[entry.id]))
        return related

    # -- session summaries (appliance.memory.summarise) -------------------------------------

    async def long_sessions(self, threshold_tokens: int) -> list[SessionRef]:
        """Sessions whose verbatim turns hold more than ``threshold_tokens``."""
        return await self.db.read(lambda c: rows.long_sessions(c, threshold_tokens))

    async def session_rows(self, ref: SessionRef) -> list[MemoryEntry]:
        return await self.db.read(lambda c: rows.session_rows(c, ref))

    async def replace_with_summary(self, ref: SessionRef, replaced: Sequence[int],
                                   kind: str, content: str) -> MemoryEntry:
        """In one transaction: delete ``replaced`` (rows of this session) and store the
        summary that stands for them. A crash leaves either all of them or the summary."""
        tokens = (await asyncio.to_thread(self.encoder.token_counts, [content]))[0]
        new = NewMemory(ref.key_id, "session", ref.user, ref.session_id, kind, "summary",
                        content, max(1, tokens - 2), False, "", None)
        now = self._clock()
        gone: list[IndexedRow] = []

        def job(conn: sqlite_utils.Database) -> MemoryEntry:
            gone.extend(rows.delete_session_rows(conn, ref, list(replaced)))
            return rows.insert(conn, new, now)

        entry = await self.db.write(job)
        await self._unindex(gone)
        return entry

    async def count(self) -> int:
        return await self.db.read(rows.count)

    async def usage(self) -> tuple[dict[str, int], int]:
        """Entries per tier (session, user, global) and the bytes they hold (text and
        vectors), for the metrics."""
        found = await self.db.read(rows.usage)
        return found.entries, found.bytes

    # -- garbage collection ---------------------------------------------------------------

    async def gc(self) -> GcReport:
        cfg = self.config
        touched, self._touched = self._touched, {}
        now = self._clock()

        def job(conn: sqlite_utils.Database) -> GcReport:
            rows.flush_uses(conn, touched)
            expired = rows.delete_expired(conn, session_before=now - cfg.session_ttl_s,
                                          user_before=now - cfg.user_ttl_s)
            over = rows.count(conn) - cfg.max_entries
            evicted = rows.evict_least_important(
                conn, over, now=now, half_life_s=cfg.half_life_s,
                importance=importance) if over > 0 else []
            gone.extend(expired + evicted)
            return GcReport(len(expired), len(evicted), len(touched))

        gone: list[IndexedRow] = []
        report = await self.db.write(job)
        await self._unindex(gone)
        if gone:
            await self._audited("memory.gc", 0, {"expired": report.expired,
                                                 "evicted": report.evicted})
        return report
