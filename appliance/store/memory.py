"""Memory rows: the ``memories`` table. Every function runs inside a ``Database`` job;
the ones that delete return the rows gone, for the vector index. The rules (tiers,
isolation, recall, retention): :mod:`appliance.memory.memories`.

Ownership. A session or user row belongs to one key and one user (``""``: none); a global
row to everyone. The filters that enforce it live here, in SQL, except in ``visible``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.store.rows import IndexedRow, Uses, delete_indexed

TABLE = "memories"
_COLUMNS = ("id, tier, user, session_id, kind, role, content, tokens, pinned, created_at, "
            "last_accessed_at, access_count")
_CHUNK = 500  # ids per ``IN (...)``, well under SQLite's variable limit
_NOT_GLOBAL = "key_id = ? AND user = ? AND tier != 'global'"


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
class NewMemory:
    key_id: int
    tier: str
    user: str
    session_id: str
    kind: str
    role: str
    content: str
    tokens: int
    pinned: bool
    scope: str  # its vector-index partition, "" when not indexed
    vector: bytes | None


@dataclass(frozen=True)
class SessionRef:
    key_id: int
    user: str
    session_id: str
    turn_tokens: int  # verbatim turns kept, in encoder tokens


@dataclass(frozen=True)
class Usage:
    entries: dict[str, int]  # per tier, every tier present
    bytes: int  # text and vectors


def index_scope(key_id: int, tier: str, user: str) -> str | None:
    """The vector-index partition of a row (``None``: not indexed): one per key and user
    for the user tier, one shared by the global tier, none for session turns."""
    if tier == "global":
        return "global"
    if tier == "user":
        return f"user:{key_id}/{user}"
    return None


# -- writes -----------------------------------------------------------------------------


def insert(conn: sqlite_utils.Database, new: NewMemory, now: float) -> MemoryEntry:
    cursor = conn.execute(
        f"INSERT INTO {TABLE} (key_id, tier, user, session_id, kind, role, content, tokens, "
        "pinned, scope, vector, created_at, last_accessed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [new.key_id, new.tier, new.user, new.session_id, new.kind, new.role, new.content,
         new.tokens, int(new.pinned), new.scope, new.vector, now, now])
    return MemoryEntry(int(cursor.lastrowid or 0), new.tier, new.user, new.session_id,
                       new.kind, new.role, new.content, new.tokens, new.pinned, now, now, 0)


def delete_owned(conn: sqlite_utils.Database, key_id: int, user: str, entry_id: int
                 ) -> list[IndexedRow]:
    """Delete one session or user row of ``key_id`` and ``user``."""
    return _delete(conn, f"id = ? AND {_NOT_GLOBAL}", [entry_id, key_id, user])


def delete_global(conn: sqlite_utils.Database, entry_id: int) -> list[IndexedRow]:
    return _delete(conn, "id = ? AND tier = 'global'", [entry_id])


def delete_user(conn: sqlite_utils.Database, key_id: int | None, user: str
                ) -> list[IndexedRow]:
    """Every session and user row of ``user`` under ``key_id`` (``None``: every key), pinned
    ones too."""
    if key_id is None:
        return _delete(conn, "user = ? AND tier != 'global'", [user])
    return _delete(conn, _NOT_GLOBAL, [key_id, user])


def delete_session_rows(conn: sqlite_utils.Database, ref: SessionRef, ids: Sequence[int]
                        ) -> list[IndexedRow]:
    """The rows ``ids`` that belong to the session ``ref``; others are left alone."""
    if not ids:
        return []
    return _delete(conn, f"id IN ({','.join('?' * len(ids))}) AND key_id = ? AND user = ? "
                   "AND session_id = ? AND tier = 'session'",
                   [*ids, ref.key_id, ref.user, ref.session_id])


def delete_expired(conn: sqlite_utils.Database, *, session_before: float,
                   user_before: float) -> list[IndexedRow]:
    """Unpinned session and user rows last used before their tier's cut-off."""
    return _delete(conn, "pinned = 0 AND ((tier = 'session' AND last_accessed_at <= ?) OR "
                   "(tier = 'user' AND last_accessed_at <= ?))", [session_before, user_before])


def evict_least_important(conn: sqlite_utils.Database, count: int, *, now: float,
                          half_life_s: float,
                          importance: Callable[[float, int, float], float]
                          ) -> list[IndexedRow]:
    """Delete the ``count`` unpinned rows of lowest ``importance(age, uses, half_life)``
    (age since last use), the oldest id first among equals."""
    conn.conn.create_function("importance", 3, importance, deterministic=True)
    victims = [int(r["id"]) for r in conn.query(
        f"SELECT id FROM {TABLE} WHERE pinned = 0 ORDER BY "
        "importance(? - last_accessed_at, access_count, ?), id LIMIT ?",
        [now, half_life_s, count])]
    gone: list[IndexedRow] = []
    for start in range(0, len(victims), _CHUNK):
        part = victims[start:start + _CHUNK]
        gone += _delete(conn, f"id IN ({','.join('?' * len(part))})", part)
    return gone


def set_pinned(conn: sqlite_utils.Database, entry_id: int, key_id: int, user: str,
               pinned: bool, *, admin: bool) -> MemoryEntry | None:
    """Pin or unpin a row the caller owns (an admin also owns the global ones); ``None``
    if there is no such row."""
    if admin:
        where = "id = ? AND ((key_id = ? AND user = ?) OR tier = 'global')"
    else:
        where = f"id = ? AND {_NOT_GLOBAL}"
    args = [entry_id, key_id, user]
    conn.execute(f"UPDATE {TABLE} SET pinned = ? WHERE {where}", [int(pinned), *args])
    for row in conn.query(f"SELECT {_COLUMNS} FROM {TABLE} WHERE {where}", args):
        return _entry(row)
    return None


def flush_uses(conn: sqlite_utils.Database, uses: Mapping[int, Uses]) -> None:
    for entry_id, used in uses.items():
        conn.execute(f"UPDATE {TABLE} SET access_count = access_count + ?, "
                     "last_accessed_at = max(last_accessed_at, ?) WHERE id = ?",
                     [used.count, used.last, entry_id])


def _delete(conn: sqlite_utils.Database, where: str, args: Sequence[object]
            ) -> list[IndexedRow]:
    return delete_indexed(conn, TABLE, where, args)


# -- reads ------------------------------------------------------------------------------


def get(conn: sqlite_utils.Database, entry_id: int) -> MemoryEntry | None:
    for row in conn.query(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = ?", [entry_id]):
        return _entry(row)
    return None


def entries(conn: sqlite_utils.Database, key_id: int, tier: str, *, user: str,
            session_id: str) -> list[MemoryEntry]:
    """The rows of one tier the caller may list, in id order."""
    if tier == "global":
        where, args = "tier = 'global'", []
    elif tier == "user":
        where, args = "key_id = ? AND tier = 'user' AND user = ?", [key_id, user]
    else:
        where = "key_id = ? AND tier = 'session' AND user = ? AND session_id = ?"
        args = [key_id, user, session_id]
    return [_entry(r) for r in conn.query(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE {where} ORDER BY id", args)]


def session_context(conn: sqlite_utils.Database, key_id: int, user: str, session_id: str,
                    *, used_after: float, turns: int) -> list[MemoryEntry]:
    """The session's ``turns`` newest verbatim turns and all its summaries, each used
    after ``used_after`` (in no particular order)."""
    owner = "key_id = ? AND tier = 'session' AND user = ? AND session_id = ?"
    args = [key_id, user, session_id]
    return [_entry(r) for r in conn.query(
        f"SELECT * FROM (SELECT {_COLUMNS} FROM {TABLE} INDEXED BY memories_owner "
        f"WHERE {owner} AND kind = 'turn' AND last_accessed_at > ? ORDER BY id DESC "
        f"LIMIT ?) UNION ALL SELECT {_COLUMNS} FROM {TABLE} INDEXED BY memories_owner "
        f"WHERE {owner} AND kind IN ('facts', 'digest') AND last_accessed_at > ?",
        [*args, used_after, turns, *args, used_after])]


def visible(conn: sqlite_utils.Database, ids: Sequence[int], key_id: int, user: str, *,
            user_used_after: float) -> list[MemoryEntry]:
    """The rows of ``ids`` the caller may recall: global ones, and its own user rows
    still within retention (or pinned). Looked up by primary key, then checked here: an
    ownership filter in SQL can make SQLite scan an index instead."""
    marks = ",".join("?" * len(ids))
    rows = conn.query(f"SELECT {_COLUMNS}, key_id FROM {TABLE} WHERE id IN ({marks})",
                      list(ids))
    return [_entry(r) for r in rows if r["tier"] == "global" or (
        r["tier"] == "user" and r["key_id"] == key_id and r["user"] == user
        and (r["pinned"] or r["last_accessed_at"] > user_used_after))]


def long_sessions(conn: sqlite_utils.Database, threshold_tokens: int) -> list[SessionRef]:
    return [SessionRef(int(r["key_id"]), str(r["user"]), str(r["session_id"]),
                       int(r["tokens"])) for r in conn.query(
        f"SELECT key_id, user, session_id, sum(tokens) AS tokens FROM {TABLE} "
        "WHERE tier = 'session' AND kind = 'turn' GROUP BY key_id, user, session_id "
        "HAVING sum(tokens) > ?", [threshold_tokens])]


def session_rows(conn: sqlite_utils.Database, ref: SessionRef) -> list[MemoryEntry]:
    return entries(conn, ref.key_id, "session", user=ref.user, session_id=ref.session_id)


def count(conn: sqlite_utils.Database) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])


def usage(conn: sqlite_utils.Database) -> Usage:
    rows = list(conn.query(
        f"SELECT tier, count(*) AS n, coalesce(sum(length(CAST(content AS BLOB)) + "
        f"coalesce(length(vector), 0)), 0) AS size FROM {TABLE} GROUP BY tier"))
    counts = {tier: 0 for tier in ("session", "user", "global")}
    counts.update({str(r["tier"]): int(r["n"]) for r in rows})
    return Usage(counts, sum(int(r["size"]) for r in rows))


def _entry(row: Mapping[str, Any]) -> MemoryEntry:
    return MemoryEntry(
        id=int(row["id"]), tier=str(row["tier"]), user=str(row["user"]),
        session_id=str(row["session_id"]), kind=str(row["kind"]), role=str(row["role"]),
        content=str(row["content"]), tokens=int(row["tokens"]), pinned=bool(row["pinned"]),
        created_at=float(row["created_at"]),
        last_accessed_at=float(row["last_accessed_at"]),
        access_count=int(row["access_count"]))
