"""The audit-log repository against a real, migrated SQLite file: the chain as written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from appliance.store import audit
from appliance.store.audit import GENESIS, Head
from appliance.store.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "app.db")
    yield database
    database.close()


def test_appends_link_to_the_head_and_move_the_anchor(db: Database) -> None:
    assert db.read_sync(audit.anchor) == Head(0, GENESIS)
    first = db.write_sync(lambda c: audit.append(c, "key.create", "operator", {"b": 1}, 10.0))
    second = db.write_sync(lambda c: audit.append(c, "key.revoke", "operator", {}, 20.0))
    assert (first.seq, first.prev_hash) == (1, GENESIS)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert first.hash == audit.record_hash(1, 10.0, "key.create", "operator", {"b": 1},
                                           GENESIS)
    assert db.read_sync(audit.anchor) == Head(2, second.hash)
    assert db.read_sync(lambda c: list(audit.records(c))) == [first, second]
    assert db.read_sync(lambda c: list(audit.records(c, since=15.0))) == [second]


def test_a_failed_transaction_leaves_neither_record_nor_anchor(db: Database) -> None:
    def append_then_fail(conn: sqlite_utils.Database) -> None:
        audit.append(conn, "memory.delete", "key:1", {"id": 1}, 1.0)
        raise ValueError("the change it audits failed")

    with pytest.raises(ValueError):
        db.write_sync(append_then_fail)
    assert db.read_sync(audit.anchor) == Head(0, GENESIS)
    assert db.read_sync(lambda c: list(audit.records(c))) == []


def test_records_survive_details_that_are_not_json_objects(db: Database) -> None:
    db.write_sync(lambda c: audit.append(c, "guard.flag", "k", {"i": 1}, 1.0))
    db.write_sync(lambda c: c.execute("UPDATE audit_log SET detail = '[1, 2]' WHERE seq = 1"))
    db.write_sync(lambda c: audit.append(c, "guard.flag", "k", {"i": 2}, 2.0))
    db.write_sync(lambda c: c.execute("UPDATE audit_log SET detail = 'not json' WHERE seq = 2"))
    first, second = db.read_sync(lambda c: list(audit.records(c)))
    assert first.detail == {"value": [1, 2]} and second.detail == {"unparseable": "not json"}


def test_anchor_is_none_when_its_row_is_gone(db: Database) -> None:
    db.write_sync(lambda c: c.execute("DELETE FROM audit_anchor"))
    assert db.read_sync(audit.anchor) is None


def test_recent_is_newest_first_with_limit_since_and_event_prefix(db: Database) -> None:
    for i, event in enumerate(("key.create", "guard.block", "guard.redact", "key.revoke")):
        db.write_sync(lambda c, e=event, t=float(i): audit.append(c, e, "op", {"i": t}, t))
    seqs = [r.seq for r in db.read_sync(lambda c: audit.recent(c, 10))]
    assert seqs == [4, 3, 2, 1]
    assert [r.seq for r in db.read_sync(lambda c: audit.recent(c, 2))] == [4, 3]
    guard = db.read_sync(lambda c: audit.recent(c, 10, event_prefix="guard."))
    assert [r.event for r in guard] == ["guard.redact", "guard.block"]
    assert [r.seq for r in db.read_sync(lambda c: audit.recent(c, 10, since=2.0))] == [4, 3]
    assert db.read_sync(lambda c: audit.recent(c, 10, event_prefix="%")) == []
