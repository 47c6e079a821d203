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
similarity search cannot return another owner's rows.

Recall, for a chat request that names a user and/or a session: the most recent session
turns verbatim (oldest first), then the user and global memories most similar to the last
user turn (cosine >= ``min_similarity``), capped by ``inject_max_entries`` and a token
budget. Each recalled entry's use is counted (flushed to SQLite by the GC).

Garbage collection (:meth:`MemoryStore.gc`, run in the background): retention first, then,
while more than ``max_entries`` rows remain, the unpinned ones with the lowest importance
go, ``importance = recency + frequency`` with ``recency = exp(-age / half_life)`` (age since
last use) and ``frequency = log1p(access_count) / 4``.

SQLite is the source of truth: a write is acknowledged once committed (``synchronous=FULL``),
then indexed; a crash in between is repaired when the index is opened.
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
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex, to_blob

TABLE = "memories"
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
class MemoryEntry:
    id: int
    tier: str
    user: str
    session_id: str
    kind: str  # "note" (API), "turn" (a session turn), "digest" | "facts" (summaries)
    role: str  # "user" | "assistant" for turns, "note" / "summary" otherwise
    content: str
    tokens: int
    pinned: bool
    created_at: float
    last_accessed_at: float
    access_count: int


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
class SessionRef:
    key_id: int
    user: str
    session_id: str
    turn_tokens: int  # verbatim turns kept, in encoder tokens


@dataclass(frozen=True)
class GcReport:
    expired: int
    evicted: int
    touched: int


_COLUMNS = ("id, tier, user, session_id, kind, role, content, tokens, pinned, created_at, "
            "last_accessed_at, access_count")


def _entry(r: Sequence[object]) -> MemoryEntry:
    return MemoryEntry(
        id=int(r[0]), tier=str(r[1]), user=str(r[2]), session_id=str(r[3]),  # type: ignore[call-overload]
        kind=str(r[4]), role=str(r[5]), content=str(r[6]), tokens=int(r[7]),  # type: ignore[call-overload]
        pinned=bool(r[8]), created_at=float(r[9]), last_accessed_at=float(r[10]),  # type: ignore[arg-type]
        access_count=int(r[11]))  # type: ignore[call-overload]


def index_scope(key_id: int, tier: str, user: str) -> str | None:
    """The vector-index partition of an entry (``None``: not indexed)."""
    if tier == "global":
        return "global"
    if tier == "user":
        return f"user:{key_id}/{user}"
    return None


def importance(entry_age_s: float, access_count: int, half_life_s: float) -> float:
    return math.exp(-max(0.0, entry_age_s) / half_life_s) + math.log1p(access_count) / 4.0


class AuditSink(Protocol):
    """What the store needs of :class:`appliance.observability.audit.Audit`."""

    async def append(self, event: str, actor: str,
                     detail: Mapping[str, Any] | None = None) -> object: ...


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
        self._touched: dict[int, tuple[int, float]] = {}  # id -> (uses, last use)

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
        now = self._clock()
        blob = to_blob(vector) if vector is not None else None

        def job(conn: sqlite_utils.Database) -> MemoryEntry:
            cur = conn.execute(
                f"INSERT INTO {TABLE} (key_id, tier, user, session_id, kind, role, content, "
                "tokens, pinned, scope, vector, created_at, last_accessed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [key_id, tier, user, session_id, kind, role, content, tokens, int(pinned),
                 scope or "", blob, now, now])
            return MemoryEntry(int(cur.lastrowid or 0), tier, user, session_id, kind, role,
                               content, tokens, pinned, now, now, 0)

        entry = await self.db.write(job)
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
        gone = await self.db.write(lambda c: self._delete_where(
            c, "id = ? AND key_id = ? AND user = ? AND tier != 'global'",
            [entry_id, key_id, user]))
        await self._unindex(gone)
        for _, i in gone:
            await self._audited("memory.delete", key_id, {"id": i, "user": user})
        return bool(gone)

    async def delete_global(self, key_id: int, entry_id: int) -> bool:
        """Delete a global entry (admin keys only; the caller checks)."""
        gone = await self.db.write(lambda c: self._delete_where(
            c, "id = ? AND tier = 'global'", [entry_id]))
        await self._unindex(gone)
        for _, i in gone:
            await self._audited("memory.delete", key_id, {"id": i, "tier": "global"})
        return bool(gone)

    async def forget_user(self, key_id: int, user: str) -> int:
        """Delete every session and user memory of ``user`` under ``key_id``, pinned too."""
        gone = await self.db.write(lambda c: self._delete_where(
            c, "key_id = ? AND user = ? AND tier != 'global'", [key_id, user]))
        await self._unindex(gone)
        await self._audited("memory.forget_user", key_id, {"user": user, "deleted": len(gone)})
        return len(gone)

    async def set_pinned(self, key_id: int, entry_id: int, user: str, pinned: bool, *,
                         admin: bool = False) -> MemoryEntry | None:
        def job(conn: sqlite_utils.Database) -> MemoryEntry | None:
            where, args = self._owned(entry_id, key_id, user, admin)
            conn.execute(f"UPDATE {TABLE} SET pinned = ? WHERE {where}", [int(pinned), *args])
            r = conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE {where}", args).fetchone()
            return None if r is None else _entry(r)

        return await self.db.write(job)

    @staticmethod
    def _owned(entry_id: int, key_id: int, user: str, admin: bool
               ) -> tuple[str, list[object]]:
        if admin:
            return ("id = ? AND ((key_id = ? AND user = ?) OR tier = 'global')",
                    [entry_id, key_id, user])
        return "id = ? AND key_id = ? AND user = ? AND tier != 'global'", [entry_id, key_id,
                                                                            user]

    @staticmethod
    def _delete_where(conn: sqlite_utils.Database, where: str, args: Sequence[object]
                      ) -> list[tuple[str, int]]:
        rows = conn.execute(f"SELECT scope, id FROM {TABLE} WHERE {where}",
                            list(args)).fetchall()
        if rows:
            conn.execute(f"DELETE FROM {TABLE} WHERE {where}", list(args))
        return [(str(r[0]), int(r[1])) for r in rows]

    async def _unindex(self, gone: Sequence[tuple[str, int]]) -> None:
        removals: dict[str, list[int]] = {}
        for scope, entry_id in gone:
            if scope:
                removals.setdefault(scope, []).append(entry_id)
        if removals:
            await self.index.remove(removals)

    # -- reads ----------------------------------------------------------------------------

    async def entries(self, key_id: int, tier: Tier, *, user: str = "", session_id: str = ""
                   ) -> list[MemoryEntry]:
        def read(conn: sqlite_utils.Database) -> list[MemoryEntry]:
            if tier == "global":
                sql, args = "tier = 'global'", []
            elif tier == "user":
                sql, args = "key_id = ? AND tier = 'user' AND user = ?", [key_id, user]
            else:
                sql = "key_id = ? AND tier = 'session' AND user = ? AND session_id = ?"
                args = [key_id, user, session_id]
            return [_entry(r) for r in conn.execute(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE {sql} ORDER BY id", args).fetchall()]

        return await self.db.read(read)

    async def get(self, entry_id: int) -> MemoryEntry | None:
        r = await self.db.read(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", [entry_id]).fetchone())
        return None if r is None else _entry(r)

    async def recall(self, key_id: int, user: str, session_id: str, text: str, *,
                     vector: Vector | None = None) -> Recall:
        """What to inject for a request (see the module doc)."""
        cfg = self.config
        now = self._clock()
        budget, count = cfg.inject_token_budget, cfg.inject_max_entries
        turns: list[MemoryEntry] = []
        summaries: list[MemoryEntry] = []
        if session_id:
            rows = await self.db.read(lambda c: [_entry(r) for r in c.execute(
                f"SELECT * FROM (SELECT {_COLUMNS} FROM {TABLE} INDEXED BY memories_owner "
                "WHERE key_id = ? AND tier = 'session' AND user = ? AND session_id = ? "
                "AND kind = 'turn' AND last_accessed_at > ? ORDER BY id DESC LIMIT ?) "
                f"UNION ALL SELECT {_COLUMNS} FROM {TABLE} INDEXED BY memories_owner "
                "WHERE key_id = ? AND tier = 'session' AND user = ? AND session_id = ? "
                "AND kind IN ('facts', 'digest') AND last_accessed_at > ?",
                [key_id, user, session_id, now - cfg.session_ttl_s, cfg.session_turns,
                 key_id, user, session_id, now - cfg.session_ttl_s]).fetchall()])
            recent = sorted((e for e in rows if e.kind == "turn"), key=lambda e: -e.id)
            for entry in recent:  # newest first, within the budget
                if entry.tokens > budget or len(turns) >= count:
                    break
                turns.append(entry)
                budget -= entry.tokens
            turns.reverse()
            # Then the summaries of what came before: key facts first, newest digest next.
            older = sorted((e for e in rows if e.kind != "turn"),
                           key=lambda e: (e.kind != "facts", -e.id))
            for entry in older:
                if entry.tokens > budget or len(turns) + len(summaries) >= count:
                    break
                summaries.append(entry)
                budget -= entry.tokens
        related: list[Recalled] = []
        if text.strip() and len(turns) + len(summaries) < count and budget > 0:
            query: Vector = vector if vector is not None else await asyncio.to_thread(
                lambda: self.encoder.encode([text])[0])
            scopes = ["global"] + ([index_scope(key_id, "user", user) or ""] if user else [])
            sims: dict[int, float] = {}
            for scope in scopes:
                for hit in await self.index.search(scope, query, count):
                    if hit.similarity >= cfg.min_similarity:
                        sims[hit.id] = hit.similarity
            if sims:
                rows = await self.db.read(lambda c: self._rows_owned(
                    c, list(sims), key_id, user, now))
                for entry in sorted(rows, key=lambda e: -sims[e.id]):
                    if len(turns) + len(summaries) + len(related) >= count:
                        break
                    if entry.tokens > budget:
                        continue
                    related.append(Recalled(entry, sims[entry.id]))
                    budget -= entry.tokens
        for entry in (*turns, *summaries, *(r.entry for r in related)):
            uses, _ = self._touched.get(entry.id, (0, now))
            self._touched[entry.id] = (uses + 1, now)
        return Recall(tuple(turns), tuple(related), cfg.inject_token_budget - budget,
                      tuple(summaries))

    def _rows_owned(self, conn: sqlite_utils.Database, ids: list[int], key_id: int,
                    user: str, now: float) -> list[MemoryEntry]:
        """The rows of ``ids`` the caller may see (looked up by primary key, then checked
        here: an ownership filter in SQL can make SQLite scan an index instead)."""
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT {_COLUMNS}, key_id FROM {TABLE} WHERE id IN ({marks})",
                            ids).fetchall()
        oldest = now - self.config.user_ttl_s
        return [_entry(r) for r in rows if r[1] == "global" or (
            r[1] == "user" and r[12] == key_id and r[2] == user
            and (r[8] or r[10] > oldest))]

    # -- session summaries (appliance.memory.summarise) -------------------------------------------

    async def long_sessions(self, threshold_tokens: int) -> list[SessionRef]:
        """Sessions whose verbatim turns hold more than ``threshold_tokens``."""
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT key_id, user, session_id, sum(tokens) FROM {TABLE} "
            "WHERE tier = 'session' AND kind = 'turn' GROUP BY key_id, user, session_id "
            "HAVING sum(tokens) > ?", [threshold_tokens]).fetchall())
        return [SessionRef(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    async def session_rows(self, ref: SessionRef) -> list[MemoryEntry]:
        return await self.db.read(lambda c: [_entry(r) for r in c.execute(
            f"SELECT {_COLUMNS} FROM {TABLE} WHERE key_id = ? AND tier = 'session' "
            "AND user = ? AND session_id = ? ORDER BY id",
            [ref.key_id, ref.user, ref.session_id]).fetchall()])

    async def replace_with_summary(self, ref: SessionRef, replaced: Sequence[int],
                                   kind: str, content: str) -> MemoryEntry:
        """In one transaction: delete ``replaced`` (rows of this session) and store the
        summary that stands for them. A crash leaves either all of them or the summary."""
        tokens = (await asyncio.to_thread(self.encoder.token_counts, [content]))[0]
        now = self._clock()

        def job(conn: sqlite_utils.Database) -> tuple[MemoryEntry, list[tuple[str, int]]]:
            ids = list(replaced)
            gone = self._delete_where(
                conn, f"id IN ({','.join('?' * len(ids))}) AND key_id = ? AND user = ? "
                "AND session_id = ? AND tier = 'session'",
                [*ids, ref.key_id, ref.user, ref.session_id]) if ids else []
            cur = conn.execute(
                f"INSERT INTO {TABLE} (key_id, tier, user, session_id, kind, role, content, "
                "tokens, scope, created_at, last_accessed_at) "
                "VALUES (?, 'session', ?, ?, ?, 'summary', ?, ?, '', ?, ?)",
                [ref.key_id, ref.user, ref.session_id, kind, content, max(1, tokens - 2),
                 now, now])
            entry = MemoryEntry(int(cur.lastrowid or 0), "session", ref.user, ref.session_id,
                                kind, "summary", content, max(1, tokens - 2), False, now,
                                now, 0)
            return entry, gone

        entry, gone = await self.db.write(job)
        await self._unindex(gone)
        return entry

    async def count(self) -> int:
        return int(await self.db.read(lambda c: c.execute(
            f"SELECT count(*) FROM {TABLE}").fetchone()[0]))

    async def usage(self) -> tuple[dict[str, int], int]:
        """Entries per tier (session, user, global) and the bytes they hold (text and
        vectors), for the metrics."""
        rows = await self.db.read(lambda c: c.execute(
            f"SELECT tier, count(*), coalesce(sum(length(CAST(content AS BLOB)) + "
            f"coalesce(length(vector), 0)), 0) FROM {TABLE} GROUP BY tier").fetchall())
        counts = {tier: 0 for tier in ("session", "user", "global")}
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts, sum(int(r[2]) for r in rows)

    # -- garbage collection ---------------------------------------------------------------

    async def gc(self) -> GcReport:
        cfg = self.config
        touched, self._touched = self._touched, {}
        now = self._clock()

        def job(conn: sqlite_utils.Database) -> tuple[list[tuple[str, int]], int]:
            for entry_id, (uses, used) in touched.items():
                conn.execute(f"UPDATE {TABLE} SET access_count = access_count + ?, "
                             "last_accessed_at = max(last_accessed_at, ?) WHERE id = ?",
                             [uses, used, entry_id])
            expired = self._delete_where(
                conn, "pinned = 0 AND ((tier = 'session' AND last_accessed_at <= ?) OR "
                "(tier = 'user' AND last_accessed_at <= ?))",
                [now - cfg.session_ttl_s, now - cfg.user_ttl_s])
            total = int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
            over = total - cfg.max_entries
            evicted: list[tuple[str, int]] = []
            if over > 0:
                conn.conn.create_function("importance", 3, importance, deterministic=True)
                victims = [int(r[0]) for r in conn.execute(
                    f"SELECT id FROM {TABLE} WHERE pinned = 0 ORDER BY "
                    "importance(? - last_accessed_at, access_count, ?), id LIMIT ?",
                    [now, cfg.half_life_s, over]).fetchall()]
                for start in range(0, len(victims), 500):
                    part = victims[start:start + 500]
                    evicted += self._delete_where(
                        conn, f"id IN ({','.join('?' * len(part))})", part)
            return expired + evicted, len(expired)

        gone, n_expired = await self.db.write(job)
        await self._unindex(gone)
        if gone:
            await self._audited("memory.gc", 0, {"expired": n_expired,
                                                 "evicted": len(gone) - n_expired})
        return GcReport(n_expired, len(gone) - n_expired, len(touched))
