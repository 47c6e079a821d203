"""Migrations: applied once, in order, atomically; history is never rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlite_utils

from appliance.errors import ConfigError
from appliance.store import MIGRATIONS, Database, Migration
from appliance.store.migrations import check_sequence


def _recorded(db: Database) -> list[tuple[int, str]]:
    return db.read_sync(lambda c: [(r["number"], r["name"]) for r in
                                   c.query("SELECT number, name FROM _migrations ORDER BY 1")])


def _create(table: str) -> Migration:
    def apply(conn: sqlite_utils.Database) -> None:
        conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)")

    return Migration(0, table, apply)


def _numbered(*migrations: Migration) -> list[Migration]:
    return [Migration(i, m.name, m.apply) for i, m in enumerate(migrations, start=1)]


def test_shipped_migrations_are_numbered_in_order() -> None:
    check_sequence(MIGRATIONS)
    assert MIGRATIONS[0].number == 1
    assert MIGRATIONS[0].name == "api_keys"


def test_check_sequence_rejects_gaps_and_duplicates() -> None:
    a, b = _create("a"), _create("b")
    with pytest.raises(ValueError, match="expected 2"):
        check_sequence([Migration(1, "a", a.apply), Migration(3, "b", b.apply)])
    with pytest.raises(ValueError, match="unique"):
        check_sequence([Migration(1, "a", a.apply), Migration(2, "a", b.apply)])


def test_migrations_apply_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    first = Database(path)
    assert first.applied_migrations == [m.number for m in MIGRATIONS]
    assert "api_keys" in first.read_sync(lambda c: c.table_names())
    first.close()
    second = Database(path)
    try:
        assert second.applied_migrations == []
        assert _recorded(second) == [(m.number, m.name) for m in MIGRATIONS]
    finally:
        second.close()


def test_new_migrations_are_applied_in_order_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Database(path, migrations=_numbered(_create("a"))).close()
    db = Database(path, migrations=_numbered(_create("a"), _create("b"), _create("c")))
    try:
        assert db.applied_migrations == [2, 3]
        assert _recorded(db) == [(1, "a"), (2, "b"), (3, "c")]
        assert {"a", "b", "c"} <= set(db.read_sync(lambda c: c.table_names()))
    finally:
        db.close()


def test_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "m.db"

    def half_then_fail(conn: sqlite_utils.Database) -> None:
        conn.execute("CREATE TABLE half (id INTEGER)")
        raise RuntimeError("migration bug")

    broken = _numbered(_create("a"), Migration(0, "half", half_then_fail))
    with pytest.raises(RuntimeError, match="migration bug"):
        Database(path, migrations=broken)
    db = Database(path, migrations=_numbered(_create("a")))
    try:
        assert _recorded(db) == [(1, "a")]  # migration 1 committed, 2 rolled back
        assert "half" not in db.read_sync(lambda c: c.table_names())
    finally:
        db.close()


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Database(path, migrations=_numbered(_create("a"), _create("b"))).close()
    with pytest.raises(ConfigError, match="newer version"):
        Database(path, migrations=_numbered(_create("a")))


def test_edited_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    Database(path, migrations=_numbered(_create("a"))).close()
    with pytest.raises(ConfigError, match="was changed"):
        Database(path, migrations=_numbered(_create("renamed")))
