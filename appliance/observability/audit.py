"""The audit log: an append-only, hash-chained table of security-relevant events.

What is recorded: every guard decision that blocks, redacts or flags (``guard.block`` ...,
from the request trace when the request ends), every API-key creation and revocation
(``key.create``, ``key.revoke``, in the same transaction as the change), and whatever
another component appends through ``Audit.append(event, actor, detail)`` (memory
deletions: ``memory.delete``). Details never hold prompt or response text.

The chain. Record ``seq`` (1, 2, 3, ...) stores ``prev_hash``, the ``hash`` of record
``seq - 1`` (64 zeros for the first), and its own ``hash``: the SHA-256 of the canonical
serialisation (orjson, sorted keys) of ``{seq, ts, event, actor, detail, prev_hash}``.
Every append runs on the database's one writer thread (``appliance.store.db``), reads the
head and inserts the next record in one transaction, so concurrent appends stay linear.

The anchor. A one-row table ``audit_anchor`` holds the head (last ``seq`` and its
``hash``), updated in the same transaction as each append.

What ``verify`` detects, naming the first broken record:

* a record whose fields were edited (its hash no longer matches its content);
* a record deleted in the middle (a gap in ``seq``; the next record's ``prev_hash`` no
  longer links);
* records cut off the end (the anchor names a later head than the table holds), and a
  forged anchor that does not match the last record.

What it cannot detect on its own: someone with write access who removes or rewrites the
tail *and* recomputes every later hash and the anchor (SQLite holds no secret). Against
that, keep the head that ``appliance audit verify`` prints (seq and hash) somewhere else (a
ticket, a printed report) and pass it back later (``verify --head SEQ:HASH``): the chain
must still contain that record with that hash.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlite_utils

from appliance.store.db import Database

GENESIS = "0" * 64  # prev_hash of record 1 (the tables come from migration "audit_log")
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
class Verification:
    """The result of ``verify``: ``ok``, or the first broken record and why."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""


def record_hash(seq: int, ts: float, event: str, actor: str, detail: Mapping[str, Any],
                prev_hash: str) -> str:
    canonical = orjson.dumps({"seq": seq, "ts": ts, "event": event, "actor": actor,
                              "detail": detail, "prev_hash": prev_hash},
                             option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def append_in(conn: sqlite_utils.Database, event: str, actor: str,
              detail: Mapping[str, Any], ts: float) -> AuditRecord:
    """Append one record inside the caller's transaction (on the writer thread): for a
    change that must be audited atomically with itself (key creation, a deletion)."""
    row = conn.execute(f"SELECT seq, hash FROM {ANCHOR} WHERE id = 1").fetchone()
    head_seq, prev = (int(row[0]), str(row[1])) if row else (0, GENESIS)
    seq = head_seq + 1
    detail = dict(detail)
    digest = record_hash(seq, ts, event, actor, detail, prev)
    conn.execute(f"INSERT INTO {TABLE} (seq, ts, event, actor, detail, prev_hash, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 [seq, ts, event, actor, orjson.dumps(detail, option=orjson.OPT_SORT_KEYS)
                  .decode(), prev, digest])
    conn.execute(f"UPDATE {ANCHOR} SET seq = ?, hash = ? WHERE id = 1", [seq, digest])
    return AuditRecord(seq, ts, event, actor, detail, prev, digest)


def _rows(conn: sqlite_utils.Database, since: float | None = None) -> Iterator[AuditRecord]:
    where, args = ("WHERE ts >= ?", [since]) if since is not None else ("", [])
    cursor = conn.execute(f"SELECT seq, ts, event, actor, detail, prev_hash, hash "
                          f"FROM {TABLE} {where} ORDER BY seq", args)
    for seq, ts, event, actor, detail, prev_hash, digest in cursor:
        try:
            parsed = orjson.loads(detail)
        except orjson.JSONDecodeError:
            parsed = {"unparseable": str(detail)}
        yield AuditRecord(int(seq), float(ts), str(event), str(actor),
                          parsed if isinstance(parsed, dict) else {"value": parsed},
                          str(prev_hash), str(digest))


def verify_in(conn: sqlite_utils.Database,
              known_head: tuple[int, str] | None = None) -> Verification:
    """Walk the whole chain and the anchor; stop at the first broken record.
    ``known_head`` (seq, hash), a head printed by an earlier ``verify`` and kept
    elsewhere: that record must still be in the chain with that hash."""
    prev, expected, n = GENESIS, 1, 0
    known: str | None = None

    def broken(seq: int, reason: str) -> Verification:
        return Verification(False, n, expected - 1, prev, seq, reason)

    for rec in _rows(conn):
        if rec.seq != expected:
            return broken(expected, f"record {expected} is missing (the chain jumps from "
                                    f"{expected - 1} to {rec.seq}): deleted")
        if rec.prev_hash != prev:
            return broken(rec.seq, "its prev_hash does not match the hash of record "
                                   f"{rec.seq - 1}")
        if record_hash(rec.seq, rec.ts, rec.event, rec.actor, rec.detail,
                       rec.prev_hash) != rec.hash:
            return broken(rec.seq, "its content does not match its hash: edited")
        if known_head is not None and rec.seq == known_head[0]:
            known = rec.hash
            if rec.hash != known_head[1]:
                return broken(rec.seq, "its hash differs from the known head's: the chain "
                                       "was rewritten from here on")
        prev, expected, n = rec.hash, expected + 1, n + 1
    row = conn.execute(f"SELECT seq, hash FROM {ANCHOR} WHERE id = 1").fetchone()
    if row is None:
        return broken(expected, "the anchor row is missing")
    anchor_seq, anchor_hash = int(row[0]), str(row[1])
    if anchor_seq > n:
        return broken(n + 1, f"the anchor names record {anchor_seq} as the head but the "
                             f"log ends at {n}: records {n + 1}..{anchor_seq} were removed")
    if anchor_seq != n or anchor_hash != prev:
        return broken(n, "the anchor does not match the last record")
    if known_head is not None and known is None:
        return broken(known_head[0], f"the known head, record {known_head[0]}, is not in "
                                     f"the log (it ends at {n}): records were removed")
    return Verification(True, n, n, prev)


class Audit:
    """The audit log of one ``Database``; appends go through its writer thread."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def append(self, event: str, actor: str,
                     detail: Mapping[str, Any] | None = None) -> AuditRecord:
        ts, body = self._clock(), dict(detail or {})
        return await self._db.write(lambda conn: append_in(conn, event, actor, body, ts))

    def append_sync(self, event: str, actor: str,
                    detail: Mapping[str, Any] | None = None) -> AuditRecord:
        ts, body = self._clock(), dict(detail or {})
        return self._db.write_sync(lambda conn: append_in(conn, event, actor, body, ts))

    async def append_many(self, items: Sequence[tuple[str, str, Mapping[str, Any]]]
                          ) -> list[AuditRecord]:
        """Several records in one transaction (one fsync), in order."""
        ts = self._clock()
        return await self._db.write(
            lambda conn: [append_in(conn, e, a, dict(d), ts) for e, a, d in items])

    def verify_sync(self, known_head: tuple[int, str] | None = None) -> Verification:
        return self._db.read_sync(lambda conn: verify_in(conn, known_head))

    def export_sync(self, since: float | None = None) -> list[AuditRecord]:
        return self._db.read_sync(lambda conn: list(_rows(conn, since)))
