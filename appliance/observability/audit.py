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
head and inserts the next record in one transaction (``appliance.store.audit``), so
concurrent appends stay linear.

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

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from appliance.store import audit as rows
from appliance.store.audit import GENESIS, AuditRecord, record_hash
from appliance.store.db import Database

__all__ = ["GENESIS", "Audit", "AuditRecord", "Verification", "record_hash"]


@dataclass(frozen=True)
class Verification:
    """The result of ``verify``: ``ok``, or the first broken record and why."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""


def _verify(conn: sqlite_utils.Database,
              known_head: tuple[int, str] | None = None) -> Verification:
    """Walk the whole chain and the anchor; stop at the first broken record.
    ``known_head`` (seq, hash), a head printed by an earlier ``verify`` and kept
    elsewhere: that record must still be in the chain with that hash."""
    prev, expected, n = GENESIS, 1, 0
    known: str | None = None

    def broken(seq: int, reason: str) -> Verification:
        return Verification(False, n, expected - 1, prev, seq, reason)

    for rec in rows.records(conn):
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
    head = rows.anchor(conn)
    if head is None:
        return broken(expected, "the anchor row is missing")
    if head.seq > n:
        return broken(n + 1, f"the anchor names record {head.seq} as the head but the "
                             f"log ends at {n}: records {n + 1}..{head.seq} were removed")
    if head.seq != n or head.hash != prev:
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
        return await self._db.write(lambda conn: rows.append(conn, event, actor, body, ts))

    def append_sync(self, event: str, actor: str,
                    detail: Mapping[str, Any] | None = None) -> AuditRecord:
        ts, body = self._clock(), dict(detail or {})
        return self._db.write_sync(lambda conn: rows.append(conn, event, actor, body, ts))

    async def append_many(self, items: Sequence[tuple[str, str, Mapping[str, Any]]]
                          ) -> list[AuditRecord]:
        """Several records in one transaction (one fsync), in order."""
        ts = self._clock()
        return await self._db.write(
            lambda conn: [rows.append(conn, e, a, dict(d), ts) for e, a, d in items])

    async def verify(self, known_head: tuple[int, str] | None = None) -> Verification:
        return await self._db.read(lambda conn: _verify(conn, known_head))

    async def recent(self, limit: int, since: float | None = None,
                     event_prefix: str = "") -> list[AuditRecord]:
        """The newest ``limit`` records (from ``since`` on), newest first."""
        return await self._db.read(lambda conn: rows.recent(conn, limit, since,
                                                            event_prefix))

    async def export(self, since: float | None = None) -> list[AuditRecord]:
        return await self._db.read(lambda conn: list(rows.records(conn, since)))

    def verify_sync(self, known_head: tuple[int, str] | None = None) -> Verification:
        return self._db.read_sync(lambda conn: _verify(conn, known_head))

    def export_sync(self, since: float | None = None) -> list[AuditRecord]:
        return self._db.read_sync(lambda conn: list(rows.records(conn, since)))
