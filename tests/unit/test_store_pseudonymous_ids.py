"""Migration 7: plain user and session ids written by older versions become keyed hashes,
in rows, scopes and vector index files, and no plain copy is left in the SQLite files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import sqlite_utils

from appliance.cache.keys import scope_for
from appliance.errors import ConfigError
from appliance.store import memory as memory_rows
from appliance.store.db import Database
from appliance.store.migrations import MIGRATIONS
from appliance.store.pseudonyms import Pseudonyms
from appliance.store.vectors import IndexParams, VectorIndex, scope_file, to_blob

EMAIL, CARD, PHONE = "jane.roe@example.org", "4539148803436467", "(415) 555-0132"
PARAMS = IndexParams(dim=8)


def _unit(seed: int) -> npt.NDArray[np.float32]:
    v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return v / np.linalg.norm(v)


def _fill(conn: sqlite_utils.Database) -> None:
    rows = [(1, "user", EMAIL, "", f"user:1/{EMAIL}", 1),
            (1, "session", EMAIL, PHONE, "", None),
            (2, "user", CARD, "", f"user:2/{CARD}", 2),
            (1, "session", "", "visit-1", "", None),
            (1, "global", "", "", "global", 3)]
    for key_id, tier, user, session, scope, seed in rows:
        conn.execute(
            "INSERT INTO memories (key_id, tier, user, session_id, kind, role, content, "
            "tokens, scope, vector, created_at, last_accessed_at) VALUES "
            "(?, ?, ?, ?, 'note', 'note', 'Zanzibar', 1, ?, ?, 0, 0)",
            [key_id, tier, user, session, scope,
             None if seed is None else to_blob(_unit(seed))])
    for scope, seed in ((f"key:1/user:{EMAIL}", 4), ("key:2/user:", 5), ("global", 6)):
        conn.execute(
            "INSERT INTO cache_entries (scope, exact_key, context, fingerprint, vector, kind, "
            "text, finish_reason, prompt_tokens, completion_tokens, created_at, expires_at, "
            "last_used_at) VALUES (?, 'e', 'c', 'f', ?, 'chat', 'Hello', 'stop', 1, 1, 0, "
            "9e9, 0)", [scope, to_blob(_unit(seed))])


def _old_database(path: Path, vectors: Path) -> None:
    """A database as version 6 of the schema wrote it, with its index files saved."""
    with Database(path, migrations=MIGRATIONS[:6]) as db:
        db.write_sync(_fill)
        for table in ("memories", "cache_entries"):
            index = VectorIndex(db, table, vectors / table, PARAMS)
            index.open()
            index.close()


@pytest.fixture
def upgraded(tmp_path: Path) -> tuple[Path, Path, Pseudonyms]:
    path, vectors = tmp_path / "appliance.db", tmp_path / "vectors"
    _old_database(path, vectors)
    assert (vectors / "memories" / scope_file(f"user:1/{EMAIL}")).exists()
    return path, vectors, Pseudonyms.load_or_create(tmp_path)


def test_rows_and_scopes_are_converted_and_the_indexes_rebuilt(
        upgraded: tuple[Path, Path, Pseudonyms]) -> None:
    path, vectors, ids = upgraded
    with Database(path, pseudonyms=ids) as db:
        assert db.applied_migrations == [7]
        found = db.read_sync(lambda c: [tuple(r) for r in c.execute(
            "SELECT key_id, tier, user, session_id, scope FROM memories ORDER BY id")])
        assert found == [(1, "user", ids.of(EMAIL), "", f"user:1/{ids.of(EMAIL)}"),
                         (1, "session", ids.of(EMAIL), ids.of(PHONE), ""),
                         (2, "user", ids.of(CARD), "", f"user:2/{ids.of(CARD)}"),
                         (1, "session", "", ids.of("visit-1"), ""),
                         (1, "global", "", "", "global")]
        scopes = db.read_sync(lambda c: [r[0] for r in c.execute(
            "SELECT scope FROM cache_entries ORDER BY id")])
        assert scopes == [scope_for(1, ids.of(EMAIL)), "key:2/user:", "global"]
        assert scopes[0] == f"key:1/user:{ids.of(EMAIL)}"
        # the API's lookups (with the request's id hashed) find the converted rows
        mine = db.read_sync(lambda c: memory_rows.entries(c, 1, "user", user=ids.of(EMAIL),
                                                         session_id=""))
        assert [e.content for e in mine] == ["Zanzibar"]
        for table, expected in (("memories", {f"user:1/{ids.of(EMAIL)}": {1},
                                              f"user:2/{ids.of(CARD)}": {3}, "global": {5}}),
                                ("cache_entries", {scopes[0]: {1}, "key:2/user:": {2},
                                                   "global": {3}})):
            index = VectorIndex(db, table, vectors / table, PARAMS)
            report = index.open()
            assert report.rebuilt == len(expected) and report.loaded == 0
            assert index.ids_sync() == expected
            hits = index.search_sync(next(iter(expected)), _unit(1 if table == "memories"
                                                                 else 4), 1)
            assert [h.id for h in hits] == [1]
            index.close()
        names = {p.name for p in (vectors / "memories").glob("*.hnsw")}
        assert names == {scope_file(s) for s in (f"user:1/{ids.of(EMAIL)}",
                                                 f"user:2/{ids.of(CARD)}", "global")}


def test_no_plain_id_is_left_in_the_sqlite_files(
        upgraded: tuple[Path, Path, Pseudonyms]) -> None:
    path, _, ids = upgraded
    before = b"".join(p.read_bytes() for p in path.parent.glob("appliance.db*"))
    assert EMAIL.encode() in before and CARD.encode() in before  # the control
    db = Database(path, pseudonyms=ids)
    try:
        files = sorted(path.parent.glob("appliance.db*"))
        assert {p.name for p in files} >= {"appliance.db", "appliance.db-wal"}
        for p in files:  # while open, WAL and shared memory included
            raw = p.read_bytes()
            for plain in (EMAIL, CARD, PHONE, "visit-1"):
                assert plain.encode() not in raw, (plain, p.name)
    finally:
        db.close()
    raw = path.read_bytes()
    assert b"Zanzibar" in raw
    assert not any(plain.encode() in raw for plain in (EMAIL, CARD, PHONE, "visit-1"))


def test_without_the_install_key_the_conversion_refuses_and_changes_nothing(
        upgraded: tuple[Path, Path, Pseudonyms], tmp_path: Path) -> None:
    path, _, ids = upgraded
    with pytest.raises(ConfigError, match="install key"):
        Database(path)
    with Database(path, pseudonyms=ids) as db:  # still convertible: nothing was applied
        assert db.applied_migrations == [7]
    fresh = tmp_path / "fresh" / "appliance.db"
    with Database(fresh) as db:  # a new database has nothing to convert
        assert db.applied_migrations[-1] == 7
    shutil.rmtree(fresh.parent)
