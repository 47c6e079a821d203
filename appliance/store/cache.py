"""Response-cache rows: the ``cache_entries`` table. Every function runs inside a
``Database`` job; the ones that delete return the rows gone, for the vector index. The
rules (scopes, tiers, expiry, eviction): :mod:`appliance.cache.response`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils

from appliance.store.rows import IndexedRow, Uses, delete_indexed

TABLE = "cache_entries"
_COLUMNS = "id, scope, text, finish_reason, prompt_tokens, completion_tokens"
_REASONS: dict[str, Literal["stop", "length", "tool_calls"]] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls"}


@dataclass(frozen=True)
class CachedResponse:
    id: int
    scope: str
    text: str
    finish_reason: Literal["stop", "length", "tool_calls"]
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class NewEntry:
    scope: str
    exact_key: str
    context: str
    fingerprint: str
    vector: bytes | None  # the last user turn's embedding; None: no semantic tier
    kind: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    created_at: float
    expires_at: float


def exact(conn: sqlite_utils.Database, scopes: Sequence[str], exact_key: str, now: float
          ) -> CachedResponse | None:
    """The newest live entry for ``exact_key``, trying ``scopes`` in order."""
    for scope in scopes:
        for row in conn.query(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE scope = ? AND exact_key = ? "
                "AND expires_at > ? ORDER BY id DESC LIMIT 1", [scope, exact_key, now]):
            return _response(row)
    return None


def candidates(conn: sqlite_utils.Database, ids: Sequence[int], context: str,
               fingerprint: str, now: float) -> list[CachedResponse]:
    """The live entries among ``ids`` made in ``context`` under ``fingerprint``."""
    marks = ",".join("?" * len(ids))
    return [_response(row) for row in conn.query(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE id IN ({marks}) AND context = ? "
        "AND fingerprint = ? AND expires_at > ?", [*ids, context, fingerprint, now])]


def delete_exact(conn: sqlite_utils.Database, scope: str, exact_key: str
                 ) -> list[IndexedRow]:
    return _delete(conn, "scope = ? AND exact_key = ?", [scope, exact_key])


def insert(conn: sqlite_utils.Database, entry: NewEntry) -> int:
    cursor = conn.execute(
        f"INSERT INTO {TABLE} (scope, exact_key, context, fingerprint, vector, kind, "
        "text, finish_reason, prompt_tokens, completion_tokens, created_at, "
        "expires_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [entry.scope, entry.exact_key, entry.context, entry.fingerprint, entry.vector,
         entry.kind, entry.text, entry.finish_reason, entry.prompt_tokens,
         entry.completion_tokens, entry.created_at, entry.expires_at, entry.created_at])
    return int(cursor.lastrowid or 0)


def evict_over(conn: sqlite_utils.Database, max_entries: int) -> list[IndexedRow]:
    """Delete the least recently used entries beyond ``max_entries``."""
    over = count(conn) - max_entries
    if over <= 0:
        return []
    rows = [IndexedRow(str(r["scope"]), int(r["id"])) for r in conn.query(
        f"SELECT id, scope FROM {TABLE} ORDER BY last_used_at, id LIMIT ?", [over])]
    ids = [r.id for r in rows]
    conn.execute(f"DELETE FROM {TABLE} WHERE id IN ({','.join('?' * len(ids))})", ids)
    return rows


def delete_other_fingerprints(conn: sqlite_utils.Database, fingerprint: str,
                              keep: Sequence[str] = ()) -> list[IndexedRow]:
    """Every entry made under another fingerprint than ``fingerprint`` and ``keep``."""
    kept = [fingerprint, *keep]
    return _delete(conn, f"fingerprint NOT IN ({','.join('?' * len(kept))})", kept)


def delete_all(conn: sqlite_utils.Database) -> list[IndexedRow]:
    return _delete(conn, "1 = 1", [])


def delete_expired(conn: sqlite_utils.Database, now: float) -> list[IndexedRow]:
    return _delete(conn, "expires_at <= ?", [now])


def flush_uses(conn: sqlite_utils.Database, uses: Mapping[int, Uses]) -> None:
    for entry_id, used in uses.items():
        conn.execute(f"UPDATE {TABLE} SET hits = hits + ?, last_used_at = "
                     "max(last_used_at, ?) WHERE id = ?", [used.count, used.last, entry_id])


def count(conn: sqlite_utils.Database) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])


def _delete(conn: sqlite_utils.Database, where: str, args: Sequence[object]
            ) -> list[IndexedRow]:
    return delete_indexed(conn, TABLE, where, args)


def _response(row: Mapping[str, Any]) -> CachedResponse:
    return CachedResponse(id=int(row["id"]), scope=str(row["scope"]), text=str(row["text"]),
                          finish_reason=_REASONS.get(str(row["finish_reason"]), "stop"),
                          prompt_tokens=int(row["prompt_tokens"]),
                          completion_tokens=int(row["completion_tokens"]))
