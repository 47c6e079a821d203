"""The memories repository against a real, migrated SQLite file: ownership filters,
recall queries, retention and eviction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.store import memory
from appliance.store.db import Database
from appliance.store.memory import NewMemory, SessionRef, index_scope
from appliance.store.rows import IndexedRow, Uses

_BASE = NewMemory(key_id=1, tier="user", user="u", session_id="", kind="note", role="note",
                  content="Lives in Oslo.", tokens=4, pinned=False, scope="user:1/u",
                  vector=b"\x00" * 8)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "app.db")
    yield database
    database.close()


def _add(db: Database, now: float = 100.0, **fields: Any) -> int:
    new = dataclasses.replace(_BASE, **fields)
    return db.write_sync(lambda c: memory.insert(c, new, now)).id


def _turn(db: Database, session: str, now: float, tokens: int = 5, **fields: Any) -> int:
    return _add(db, now, tier="session", session_id=session, kind="turn", role="user",
                scope="", vector=None, tokens=tokens, **fields)


def test_index_scope_partitions_by_key_and_user() -> None:
    assert index_scope(1, "user", "u") == "user:1/u"
    assert index_scope(2, "global", "u") == "global"
    assert index_scope(1, "session", "u") is None


def test_insert_and_get_round_trip(db: Database) -> None:
    entry = db.write_sync(lambda c: memory.insert(c, dataclasses.replace(_BASE, pinned=True),
                                                  50.0))
    assert db.read_sync(lambda c: memory.get(c, entry.id)) == entry
    assert entry.pinned and entry.created_at == entry.last_accessed_at == 50.0
    assert db.read_sync(lambda c: memory.get(c, 99)) is None


def test_deletes_stay_within_their_owner(db: Database) -> None:
    mine = _add(db)
    other_user = _add(db, user="v", scope="user:1/v")
    other_key = _add(db, key_id=2, scope="user:2/u")
    shared = _add(db, tier="global", scope="global", user="")
    turn = _turn(db, "s", 100.0)
    assert db.write_sync(lambda c: memory.delete_owned(c, 1, "u", shared)) == []
    assert db.write_sync(lambda c: memory.delete_owned(c, 2, "u", mine)) == []
    assert db.write_sync(lambda c: memory.delete_owned(c, 1, "u", mine)) == [
        IndexedRow("user:1/u", mine)]
    assert db.write_sync(lambda c: memory.delete_user(c, 1, "u")) == [IndexedRow("", turn)]
    assert db.write_sync(lambda c: memory.delete_global(c, other_user)) == []
    assert db.write_sync(lambda c: memory.delete_global(c, shared)) == [
        IndexedRow("global", shared)]
    left = db.read_sync(lambda c: memory.entries(c, 2, "user", user="u", session_id=""))
    assert [e.id for e in left] == [other_key]


def test_set_pinned_needs_ownership_and_admin_for_global(db: Database) -> None:
    mine = _add(db)
    shared = _add(db, tier="global", scope="global", user="")
    assert db.write_sync(lambda c: memory.set_pinned(c, mine, 1, "v", True, admin=False)) is None
    pinned = db.write_sync(lambda c: memory.set_pinned(c, mine, 1, "u", True, admin=False))
    assert pinned is not None and pinned.pinned
    assert db.write_sync(lambda c: memory.set_pinned(c, shared, 1, "u", True,
                                                     admin=False)) is None
    pinned = db.write_sync(lambda c: memory.set_pinned(c, shared, 1, "u", True, admin=True))
    assert pinned is not None and pinned.pinned


def test_session_context_has_the_newest_turns_and_every_summary(db: Database) -> None:
    turns = [_turn(db, "s", 100.0 + i) for i in range(5)]
    _turn(db, "other", 100.0)
    facts = _add(db, 100.0, tier="session", session_id="s", kind="facts", role="summary",
                 scope="", vector=None)
    _add(db, 10.0, tier="session", session_id="s", kind="digest", role="summary", scope="",
         vector=None)  # too old
    found = db.read_sync(lambda c: memory.session_context(c, 1, "u", "s", used_after=50.0,
                                                          turns=3))
    assert sorted(e.id for e in found) == sorted([*turns[-3:], facts])


def test_visible_keeps_global_and_own_live_user_rows(db: Database) -> None:
    mine = _add(db, 100.0)
    stale = _add(db, 10.0)
    stale_pinned = _add(db, 10.0, pinned=True)
    theirs = _add(db, user="v", scope="user:1/v")
    shared = _add(db, 10.0, tier="global", scope="global", user="")
    turn = _turn(db, "s", 100.0)
    ids = [mine, stale, stale_pinned, theirs, shared, turn]
    found = db.read_sync(lambda c: memory.visible(c, ids, 1, "u", user_used_after=50.0))
    assert sorted(e.id for e in found) == [mine, stale_pinned, shared]


def test_retention_and_eviction(db: Database) -> None:
    old_turn = _turn(db, "s", 10.0)
    old_note = _add(db, 10.0)
    _add(db, 10.0, pinned=True)
    kept = [_add(db, 100.0), _add(db, 100.0)]
    db.write_sync(lambda c: memory.flush_uses(c, {kept[0]: Uses(5, 120.0)}))
    expired = db.write_sync(lambda c: memory.delete_expired(c, session_before=50.0,
                                                            user_before=20.0))
    assert sorted(r.id for r in expired) == [old_turn, old_note]

    def by_uses(age: float, uses: int, half_life: float) -> float:
        return float(uses)

    evicted = db.write_sync(lambda c: memory.evict_least_important(
        c, 1, now=200.0, half_life_s=1.0, importance=by_uses))
    assert evicted == [IndexedRow("user:1/u", kept[1])]  # pinned rows are never evicted
    used = db.read_sync(lambda c: memory.get(c, kept[0]))
    assert used is not None and (used.access_count, used.last_accessed_at) == (5, 120.0)


def test_long_sessions_session_rows_count_and_usage(db: Database) -> None:
    turns = [_turn(db, "s", 100.0, tokens=300) for _ in range(2)]
    _turn(db, "short", 100.0, tokens=10)
    _add(db, content="abc")
    refs = db.read_sync(lambda c: memory.long_sessions(c, 500))
    assert refs == [SessionRef(1, "u", "s", 600)]
    assert [e.id for e in db.read_sync(lambda c: memory.session_rows(c, refs[0]))] == turns
    assert db.read_sync(memory.count) == 4
    usage = db.read_sync(memory.usage)
    assert usage.entries == {"session": 3, "user": 1, "global": 0}
    assert usage.bytes == 3 * len("Lives in Oslo.") + len("abc") + 8


def test_delete_session_rows_only_touches_that_session(db: Database) -> None:
    mine = _turn(db, "s", 100.0)
    other = _turn(db, "t", 100.0)
    ref = SessionRef(1, "u", "s", 5)
    gone = db.write_sync(lambda c: memory.delete_session_rows(c, ref, [mine, other]))
    assert gone == [IndexedRow("", mine)]
    assert db.write_sync(lambda c: memory.delete_session_rows(c, ref, [])) == []
    assert db.read_sync(lambda c: memory.get(c, other)) is not None
