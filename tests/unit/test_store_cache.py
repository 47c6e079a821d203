"""The cache_entries repository against a real, migrated SQLite file."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.store import cache
from appliance.store.cache import NewEntry
from appliance.store.db import Database
from appliance.store.rows import IndexedRow, Uses

_BASE = NewEntry(scope="key:1/user:", exact_key="k", context="c", fingerprint="fp",
                 vector=b"\x00" * 8, kind="chat", text="Paris.", finish_reason="stop",
                 prompt_tokens=12, completion_tokens=3, created_at=100.0, expires_at=200.0)


def _entry(**fields: Any) -> NewEntry:
    return dataclasses.replace(_BASE, **fields)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "app.db")
    yield database
    database.close()


def _put(db: Database, **fields: Any) -> int:
    return db.write_sync(lambda c: cache.insert(c, _entry(**fields)))


def test_exact_tries_scopes_in_order_and_ignores_expired(db: Database) -> None:
    own = _put(db, text="own")
    shared = _put(db, scope="global", text="shared")
    _put(db, scope="global", exact_key="other")
    hit = db.read_sync(lambda c: cache.exact(c, ["key:1/user:", "global"], "k", 150.0))
    assert hit is not None and (hit.id, hit.text, hit.finish_reason) == (own, "own", "stop")
    hit = db.read_sync(lambda c: cache.exact(c, ["key:2/user:", "global"], "k", 150.0))
    assert hit is not None and hit.id == shared
    assert db.read_sync(lambda c: cache.exact(c, ["key:1/user:"], "k", 200.0)) is None


def test_candidates_match_context_fingerprint_and_expiry(db: Database) -> None:
    good = _put(db, finish_reason="length")
    ids = [good, _put(db, context="other"), _put(db, fingerprint="old"),
           _put(db, expires_at=120.0)]
    found = db.read_sync(lambda c: cache.candidates(c, ids, "c", "fp", 150.0))
    assert [(e.id, e.finish_reason) for e in found] == [(good, "length")]


def test_deletes_return_the_rows_gone_for_the_index(db: Database) -> None:
    first = _put(db)
    _put(db, exact_key="k2", scope="global", fingerprint="old")
    third = _put(db, exact_key="k3", expires_at=120.0)
    gone = db.write_sync(lambda c: cache.delete_exact(c, "key:1/user:", "k"))
    assert gone == [IndexedRow("key:1/user:", first)]
    assert db.write_sync(lambda c: cache.delete_expired(c, 150.0)) == [
        IndexedRow("key:1/user:", third)]
    assert db.write_sync(lambda c: cache.delete_other_fingerprints(c, "fp")) == [
        IndexedRow("global", 2)]
    assert db.read_sync(cache.count) == 0
    assert db.write_sync(lambda c: cache.delete_exact(c, "nobody", "k")) == []


def test_evict_over_drops_the_least_recently_used(db: Database) -> None:
    ids = [_put(db, exact_key=f"k{i}", created_at=100.0 + i) for i in range(4)]
    db.write_sync(lambda c: cache.flush_uses(c, {ids[0]: Uses(3, 500.0)}))
    db.write_sync(lambda c: cache.flush_uses(c, {ids[0]: Uses(1, 400.0)}))  # max() keeps 500
    gone = db.write_sync(lambda c: cache.evict_over(c, 2))
    assert [g.id for g in gone] == [ids[1], ids[2]]
    assert db.write_sync(lambda c: cache.evict_over(c, 2)) == []
    used = db.read_sync(lambda c: list(c.query(
        "SELECT hits, last_used_at FROM cache_entries WHERE id = ?", [ids[0]])))
    assert used == [{"hits": 4, "last_used_at": 500.0}]


def test_an_entry_without_a_vector_is_stored_as_null(db: Database) -> None:
    entry = _put(db, vector=None)
    stored = db.read_sync(lambda c: list(c.query(
        "SELECT vector, last_used_at FROM cache_entries WHERE id = ?", [entry])))
    assert stored == [{"vector": None, "last_used_at": 100.0}]
    assert db.read_sync(cache.count) == 1
