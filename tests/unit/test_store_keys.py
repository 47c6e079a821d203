"""The api_keys repository against a real, migrated SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.store import keys
from appliance.store.db import Database
from appliance.store.keys import KeyRecord, Scope


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "app.db")
    yield database
    database.close()


_BASE = KeyRecord(id=0, name="", hint="abcd", scopes=frozenset({Scope.CHAT, Scope.ADMIN}),
                  rpm=60, tpm=None, burst_requests=None, burst_tokens=500, max_concurrent=2,
                  priority=3, created_at=100.0, expires_at=900.0, revoked_at=None,
                  guard_policy="strict")


def _key(name: str, **fields: Any) -> KeyRecord:
    return dataclasses.replace(_BASE, name=name, **fields)


def test_insert_then_read_back_every_field(db: Database) -> None:
    stored = db.write_sync(lambda c: keys.insert(c, _key("ci"), "f" * 64))
    assert stored.id == 1 and stored == _key("ci", id=1)
    assert db.read_sync(lambda c: keys.active(c, "ci")) == stored
    found = db.read_sync(lambda c: keys.by_secret_sha256(c, "f" * 64))
    assert found is not None and found.record == stored and found.secret_sha256 == "f" * 64
    assert db.read_sync(lambda c: keys.by_secret_sha256(c, "0" * 64)) is None
    assert db.read_sync(lambda c: keys.active(c, "nobody")) is None


def test_revoked_keys_leave_the_active_name_free(db: Database) -> None:
    first = db.write_sync(lambda c: keys.insert(c, _key("ci"), "a" * 64))
    with pytest.raises(sqlite3.IntegrityError):  # one active key per name
        db.write_sync(lambda c: keys.insert(c, _key("ci"), "b" * 64))
    revoked = db.write_sync(lambda c: keys.revoke(c, first, 200.0))
    assert revoked.revoked_at == 200.0 and revoked.revoked
    assert db.read_sync(lambda c: keys.active(c, "ci")) is None
    second = db.write_sync(lambda c: keys.insert(c, _key("ci", rpm=None), "b" * 64))
    assert db.read_sync(lambda c: keys.active(c, "ci")) == second
    every = db.read_sync(lambda c: keys.listed(c, include_revoked=True))
    assert [(k.id, k.revoked_at) for k in every] == [(1, 200.0), (2, None)]
    assert db.read_sync(lambda c: keys.listed(c, include_revoked=False)) == [second]
