"""Shared row shapes, and the SQL behind the vector indexes, against real SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlite_utils

from appliance.store import vector_rows
from appliance.store.db import Database
from appliance.store.rows import IndexedRow, Uses, by_scope, touch
from appliance.store.vector_rows import SavedFile


def test_touch_counts_uses_and_keeps_the_latest() -> None:
    pending: dict[int, Uses] = {}
    touch(pending, 7, 10.0)
    touch(pending, 7, 12.0)
    touch(pending, 8, 11.0)
    assert pending == {7: Uses(2, 12.0), 8: Uses(1, 11.0)}


def test_by_scope_groups_ids_and_skips_unindexed_rows() -> None:
    rows = [IndexedRow("a", 1), IndexedRow("", 2), IndexedRow("b", 3), IndexedRow("a", 4)]
    assert by_scope(rows) == {"a": [1, 4], "b": [3]}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "app.db")
    database.write_sync(lambda c: c.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, vector BLOB)"))
    yield database
    database.close()


def test_vectors_by_scope_and_by_id_in_chunks(db: Database) -> None:
    def fill(conn: sqlite_utils.Database) -> None:
        for i in range(1, 1201):
            scope = "a" if i % 2 else "b"
            vector = None if i % 100 == 0 else i.to_bytes(4, "little")
            conn.execute("INSERT INTO items (id, scope, vector) VALUES (?, ?, ?)",
                         [i, scope, vector])

    db.write_sync(fill)
    ids = db.read_sync(lambda c: vector_rows.ids_by_scope(c, "items"))
    assert ids["a"] == set(range(1, 1201, 2))
    assert ids["b"] == {i for i in range(2, 1201, 2) if i % 100}
    found = db.read_sync(lambda c: vector_rows.vectors(c, "items", "a"))
    assert [v.id for v in found] == list(range(1, 1201, 2))
    assert found[0].blob == (1).to_bytes(4, "little")
    wanted = list(range(2, 1201, 2))  # more ids than one IN (...) takes
    found = db.read_sync(lambda c: vector_rows.vectors(c, "items", "b", wanted))
    assert sorted(v.id for v in found) == sorted(ids["b"])  # rows without a vector: left out


def test_saved_files_are_recorded_per_table(db: Database) -> None:
    db.write_sync(lambda c: vector_rows.record_files(
        c, "items", [SavedFile("a.hnsw", "1" * 64, 3), SavedFile("b.hnsw", "2" * 64, 1)], []))
    db.write_sync(lambda c: vector_rows.record_files(
        c, "other", [SavedFile("a.hnsw", "9" * 64, 1)], []))
    db.write_sync(lambda c: vector_rows.record_files(
        c, "items", [SavedFile("a.hnsw", "3" * 64, 4)], ["b.hnsw"]))
    assert db.read_sync(lambda c: vector_rows.recorded_files(c, "items")) == {
        "a.hnsw": "3" * 64}
    assert db.read_sync(lambda c: vector_rows.recorded_files(c, "other")) == {
        "a.hnsw": "9" * 64}
