"""The audit log's rows: ``audit_log`` (the hash-chained records) and ``audit_anchor``
(one row naming the head), both from migration "audit_log".

A record's ``hash`` is the SHA-256 of the canonical serialisation (orjson, sorted keys) of
``{seq, ts, event, actor, detail, prev_hash}``; ``prev_hash`` is the hash of record
``seq - 1`` (``GENESIS`` for the first). ``append`` reads the head and writes the next
record and the anchor in the caller's transaction, so on the one writer thread appends
stay linear. What the chain proves, and how it is checked:
:mod:`appliance.observability.audit`.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlite_utils

GENESIS = "0" * 64  # prev_hash of record 1
TABLE = "audit_log"
ANCHOR = "audit_anchor"


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: float
    event: str
    actor: str
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts,
                "time": datetime.datetime.fromtimestamp(self.ts, datetime.UTC).isoformat(),
                "event": self.event, "actor": self.actor, "detail": dict(self.detail),
                "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class Head:
    """The last record, as the anchor names it."""

    seq: int
    hash: str


def record_hash(seq: int, ts: float, event: str, actor: str, detail: Mapping[str, Any],
                prev_hash: str) -> str:
    canonical = orjson.dumps({"seq": seq, "ts": ts, "event": event, "actor": actor,
                              "detail": detail, "prev_hash": prev_hash},
                             option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def anchor(conn: sqlite_utils.Database) -> Head | None:
    """The head the anchor row names (``None``: the row is missing)."""
    for row in conn.query(f"SELECT seq, hash FROM {ANCHOR} WHERE id = 1"):
        return Head(int(row["seq"]), str(row["hash"]))
    return None


def append(conn: sqlite_utils.Database, event: str, actor: str, detail: Mapping[str, Any],
           ts: float) -> AuditRecord:
    """Append one record in the caller's transaction (on the writer thread), so a change
    and its audit record commit together (key creation, a deletion)."""
    head = anchor(conn) or Head(0, GENESIS)
    seq = head.seq + 1
    detail = dict(detail)
    digest = record_hash(seq, ts, event, actor, detail, head.hash)
    conn.execute(f"INSERT INTO {TABLE} (seq, ts, event, actor, detail, prev_hash, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 [seq, ts, event, actor, orjson.dumps(detail, option=orjson.OPT_SORT_KEYS)
                  .decode(), head.hash, digest])
    conn.execute(f"UPDATE {ANCHOR} SET seq = ?, hash = ? WHERE id = 1", [seq, digest])
    return AuditRecord(seq, ts, event, actor, detail, head.hash, digest)


def recent(conn: sqlite_utils.Database, limit: int, since: float | None = None,
           event_prefix: str = "") -> list[AuditRecord]:
    """The newest ``limit`` records (from ``since`` on, events starting with
    ``event_prefix``), newest first."""
    args: list[object] = [event_prefix, event_prefix]
    where = "WHERE substr(event, 1, length(?)) = ?"
    if since is not None:
        where, args = where + " AND ts >= ?", [*args, since]
    return [_record(row) for row in conn.query(
        f"SELECT seq, ts, event, actor, detail, prev_hash, hash FROM {TABLE} {where} "
        "ORDER BY seq DESC LIMIT ?", [*args, limit])]


def records(conn: sqlite_utils.Database, since: float | None = None
            ) -> Iterator[AuditRecord]:
    """Every record in ``seq`` order (from ``since`` on, if given); lazily, so a read job
    must consume it before it returns. A detail that is not a JSON object is wrapped, not
    dropped: ``verify`` must still see the record (and find its hash wrong)."""
    where, args = ("WHERE ts >= ?", [since]) if since is not None else ("", [])
    for row in conn.query(f"SELECT seq, ts, event, actor, detail, prev_hash, hash "
                          f"FROM {TABLE} {where} ORDER BY seq", args):
        yield _record(row)


def _record(row: Mapping[str, Any]) -> AuditRecord:
    try:
        parsed = orjson.loads(row["detail"])
    except orjson.JSONDecodeError:
        parsed = {"unparseable": str(row["detail"])}
    return AuditRecord(int(row["seq"]), float(row["ts"]), str(row["event"]),
                       str(row["actor"]),
                       parsed if isinstance(parsed, dict) else {"value": parsed},
                       str(row["prev_hash"]), str(row["hash"]))
