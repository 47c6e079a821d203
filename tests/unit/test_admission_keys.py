"""KeyStore against a real SQLite file: hashing, revocation, expiry, scopes, caching."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import sqlite_utils

from appliance.admission import (
    SECRET_PREFIX,
    KeyRecord,
    KeyStore,
    ManualClock,
    Scope,
    require_scope,
)
from appliance.errors import AuthenticationError, InvalidRequest, NotFound, PermissionDenied
from appliance.store import Database
from appliance.web.key_routes import key_body

T = TypeVar("T")
NOW = 1_800_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "keys.db")
    yield database
    database.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def store(db: Database, clock: ManualClock) -> KeyStore:
    return KeyStore(db, clock=clock, cache_ttl_s=5.0)


class CountingReads:
    """Wraps a Database to count reads (and optionally run a hook after each one)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.reads = 0
        self.after_read: Callable[[], Any] | None = None

    async def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        self.reads += 1
        result = await self.db.read(fn)
        if self.after_read is not None:
            hook, self.after_read = self.after_read, None
            await hook()
        return result

    def read_sync(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        self.reads += 1
        return self.db.read_sync(fn)

    async def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        return await self.db.write(fn)

    def write_sync(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        return self.db.write_sync(fn)


async def test_create_shows_the_secret_once_and_stores_only_its_hash(
    store: KeyStore, db: Database, tmp_path: Path
) -> None:
    created = await store.create("ci", rpm=60, tpm=1000, scopes={Scope.CHAT})
    secret = created.secret
    assert secret.startswith(SECRET_PREFIX)
    assert len(secret) == len(SECRET_PREFIX) + 43
    assert secret not in repr(created)
    assert created.record.hint == secret[-4:]
    assert created.record.masked == f"{SECRET_PREFIX}...{secret[-4:]}"
    rows = await db.read(lambda c: list(c.query("SELECT * FROM api_keys")))
    assert rows[0]["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert all(secret not in str(v) for v in rows[0].values())
    await db.aclose()  # checkpoint the WAL, then look at every byte on disk
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes()
        assert secret[len(SECRET_PREFIX):].encode() not in f.read_bytes()


async def test_authenticate_returns_the_record(store: KeyStore) -> None:
    created = await store.create("app", rpm=10, tpm=20, burst_requests=3, burst_tokens=40,
                                 max_concurrent=2, priority=7,
                                 scopes=["chat", "embeddings"])
    record = await store.authenticate(created.secret)
    assert record == created.record
    assert (record.rpm, record.tpm, record.burst_requests, record.burst_tokens) == (
        10, 20, 3, 40)
    assert (record.max_concurrent, record.priority) == (2, 7)
    assert record.scopes == frozenset({Scope.CHAT, Scope.EMBEDDINGS})
    assert record.created_at == NOW


@pytest.mark.parametrize("bad", ["", "sk-appl-short", "Bearer x",
                                 SECRET_PREFIX + "A" * 43, "sk-other" + "A" * 43])
async def test_wrong_or_malformed_secrets_are_refused(store: KeyStore, bad: str) -> None:
    await store.create("app")
    with pytest.raises(AuthenticationError) as refused:
        await store.authenticate(bad)
    assert refused.value.status == 401


async def test_revoke_takes_effect_immediately_despite_the_cache(store: KeyStore) -> None:
    created = await store.create("app")
    await store.authenticate(created.secret)  # now cached
    revoked = await store.revoke("app")
    assert revoked.revoked_at == NOW
    with pytest.raises(AuthenticationError, match="revoked"):
        await store.authenticate(created.secret)


async def test_revoke_racing_a_lookup_does_not_cache_the_stale_record(
    db: Database, clock: ManualClock
) -> None:
    counting = CountingReads(db)
    store = KeyStore(counting, clock=clock)  # type: ignore[arg-type]
    created = await store.create("app")

    async def revoke() -> None:
        await store.revoke("app")

    counting.after_read = revoke  # the lookup read the row before the revoke committed
    await store.authenticate(created.secret)
    with pytest.raises(AuthenticationError, match="revoked"):
        await store.authenticate(created.secret)


async def test_expired_keys_are_refused_even_when_cached(
    store: KeyStore, clock: ManualClock
) -> None:
    created = await store.create("temp", expires_at=NOW + 10)
    await store.authenticate(created.secret, now=NOW + 9)
    with pytest.raises(AuthenticationError, match="expired"):
        await store.authenticate(created.secret, now=NOW + 10)
    with pytest.raises(InvalidRequest, match="past"):
        await store.create("late", expires_at=NOW - 1)


async def test_cache_hits_skip_sqlite_until_the_ttl(db: Database, clock: ManualClock) -> None:
    counting = CountingReads(db)
    store = KeyStore(counting, clock=clock, cache_ttl_s=5.0)  # type: ignore[arg-type]
    created = await store.create("app")
    unknown = SECRET_PREFIX + "B" * 43
    for _ in range(10):
        await store.authenticate(created.secret)
        with pytest.raises(AuthenticationError):
            await store.authenticate(unknown)
    assert counting.reads == 2
    clock.advance(5.0)
    await store.authenticate(created.secret)
    assert counting.reads == 3


async def test_revocation_by_another_process_applies_within_the_ttl(
    db: Database, clock: ManualClock
) -> None:
    server = KeyStore(db, clock=clock, cache_ttl_s=5.0)
    cli = KeyStore(db, clock=clock)
    created = await server.create("app")
    await server.authenticate(created.secret)
    await cli.revoke("app")
    await server.authenticate(created.secret)  # still cached here
    clock.advance(5.0)
    with pytest.raises(AuthenticationError, match="revoked"):
        await server.authenticate(created.secret)


async def test_names_are_unique_among_active_keys(store: KeyStore) -> None:
    first = await store.create("app")
    with pytest.raises(InvalidRequest, match="already exists") as dup:
        await store.create("app")
    assert dup.value.code == "duplicate_key_name"
    await store.revoke("app")
    second = await store.create("app")  # rotation: same name, new secret
    assert second.secret != first.secret
    assert (await store.authenticate(second.secret)).id == second.record.id
    with pytest.raises(NotFound):
        await store.revoke("missing")


async def test_list_includes_revoked_keys_unless_asked(store: KeyStore) -> None:
    await store.create("a")
    await store.create("b")
    await store.revoke("a")
    listed = await store.list()
    assert [(k.name, k.revoked) for k in listed] == [("a", True), ("b", False)]
    assert [k.name for k in await store.list(include_revoked=False)] == ["b"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"name": ""}, "name"), ({"name": "has space"}, "name"), ({"name": "x" * 65}, "name"),
     ({"rpm": 0}, "rpm"), ({"tpm": -5}, "tpm"), ({"max_concurrent": 0}, "max_concurrent"),
     ({"scopes": ["chat", "root"]}, "scopes"), ({"scopes": []}, "scopes"),
     # past what SQLite and JSON carry: refused, not a failed insert or response
     ({"rpm": 2**63}, "rpm"), ({"burst_tokens": 2**70}, "burst_tokens"),
     ({"priority": 2**63}, "priority"), ({"priority": -(2**63) - 1}, "priority"),
     ({"expires_at": 2.2e139}, "expires_at"), ({"expires_at": math.inf}, "expires_at"),
     ({"expires_at": math.nan}, "expires_at")],
)
async def test_invalid_creations_are_refused(
    store: KeyStore, kwargs: dict[str, Any], param: str
) -> None:
    args = {"name": "ok", **kwargs}
    with pytest.raises(InvalidRequest) as refused:
        await store.create(**args)
    assert refused.value.param == param
    assert await store.list() == []


async def test_the_largest_accepted_values_are_stored_and_shown(store: KeyStore) -> None:
    created = await store.create("far", rpm=2**63 - 1, priority=-(2**63),
                                 expires_at=253402300799.0)
    [stored] = await store.list()  # read back from SQLite
    body = orjson.loads(orjson.dumps(key_body(stored, NOW)))
    assert (body["rpm"], body["priority"], body["expires_at"]) == (
        2**63 - 1, -(2**63), 253402300799)
    assert stored.id == created.record.id


def _record(scopes: set[Scope]) -> KeyRecord:
    return KeyRecord(id=1, name="k", hint="abcd", scopes=frozenset(scopes), rpm=None,
                     tpm=None, burst_requests=None, burst_tokens=None, max_concurrent=None,
                     priority=0, created_at=0.0, expires_at=None, revoked_at=None)


def test_require_scope() -> None:
    require_scope(_record({Scope.CHAT}), Scope.CHAT)
    with pytest.raises(PermissionDenied) as denied:
        require_scope(_record({Scope.CHAT}), Scope.MEMORY)
    assert denied.value.status == 403
    for scope in Scope:
        require_scope(_record({Scope.ADMIN}), scope)  # admin implies every scope


def test_sync_api_and_persistence_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    db = Database(path)
    store = KeyStore(db)
    created = store.create_sync("cli", scopes=[Scope.ADMIN])
    assert store.authenticate_sync(created.secret).scopes == frozenset({Scope.ADMIN})
    db.close()
    reopened = Database(path)
    try:
        fresh = KeyStore(reopened)
        assert fresh.authenticate_sync(created.secret).name == "cli"
        assert [k.name for k in fresh.list_sync()] == ["cli"]
        fresh.revoke_sync("cli")
        with pytest.raises(AuthenticationError):
            fresh.authenticate_sync(created.secret)
    finally:
        reopened.close()


async def test_a_key_keeps_its_guard_policy(store: KeyStore) -> None:
    made = await store.create("ward3", guard_policy="clinic")
    plain = await store.create("desk")
    assert made.record.guard_policy == "clinic" and plain.record.guard_policy is None
    assert (await store.authenticate(made.secret)).guard_policy == "clinic"
    assert {r.name: r.guard_policy for r in await store.list()} == {"ward3": "clinic",
                                                                     "desk": None}


async def test_the_audit_log_names_who_created_and_revoked(store: KeyStore,
                                                           db: Database) -> None:
    from appliance.store import audit

    await store.create("by-api", actor="key:admin")
    await store.revoke("by-api", actor="key:admin")
    await store.create("by-cli")
    records = await db.read(lambda c: list(audit.records(c)))
    assert [(r.event, r.actor) for r in records] == [
        ("key.create", "key:admin"), ("key.revoke", "key:admin"), ("key.create", "operator")]
