"""API keys: create, list, revoke, authenticate, check scopes.

A secret looks like ``sk-appl-<43 url-safe characters>`` (32 random bytes). It is shown
once, by ``create``; the database keeps only its SHA-256 (with 256 random bits a fast
hash is enough: there is nothing to brute-force) and its last four characters, for
display. Authentication looks a key up by that hash, then confirms it with
``hmac.compare_digest``; timing can reveal at most something about a hash, not the secret.

    store = KeyStore(db)                       # db: appliance.store.Database
    created = await store.create("ci", rpm=60, tpm=40_000, scopes={Scope.CHAT})
    print(created.secret)                      # the only time it is available
    record = await store.authenticate(secret)  # KeyRecord, or AuthenticationError (401)
    require_scope(record, Scope.CHAT)          # or PermissionDenied (403)
    await store.revoke("ci")                   # refused from now on, in this process

Every method has a blocking ``*_sync`` twin for the CLI (no event loop on that thread).

Names are 1-64 characters of letters, digits and ``._@-``, unique among keys that are not
revoked (``InvalidRequest`` otherwise); a revoked key stays listed, and its name can be
reused, which is how a key is rotated. Scopes are ``chat``, ``embeddings``, ``memory`` and
``admin``; ``admin`` implies the others. New keys get every scope except ``admin``.
Creation and revocation are appended to the audit log (``appliance.observability.audit``)
in the same transaction as the change. The rows: :mod:`appliance.store.keys`.

Speed. ``authenticate`` runs on every request, so results (found, revoked, expired and
unknown secrets alike) are cached in memory for ``cache_ttl_s`` seconds: a cache hit is a
hash and a dict lookup. ``revoke`` through this store evicts the key at once (and a
generation counter stops a lookup that raced with it from caching the stale record), so
revocation is immediate in this process; a key revoked by another process (the CLI while
the server runs) is refused within ``cache_ttl_s``. Expiry is checked on every call.
``now`` and the store's clock are wall-clock seconds (``time.time``), like ``expires_at``.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlite_utils

from appliance.admission.clock import Clock
from appliance.errors import AuthenticationError, InvalidRequest, NotFound, PermissionDenied
from appliance.store import audit
from appliance.store import keys as rows
from appliance.store.db import Database
from appliance.store.keys import SECRET_PREFIX, KeyRecord, Scope, StoredKey
from appliance.store.rows import MAX_INTEGER

__all__ = ["DEFAULT_SCOPES", "MAX_EXPIRES_AT", "SECRET_PREFIX", "CreatedKey", "KeyRecord",
           "KeyStore", "Scope", "require_scope"]

_SECRET_BYTES = 32
_SECRET_LEN = len(SECRET_PREFIX) + len(secrets.token_urlsafe(_SECRET_BYTES))
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# The last second of the year 9999, the latest expiry a date can name; a later, infinite or
# NaN one is refused.
MAX_EXPIRES_AT = 253402300799.0
# What token_urlsafe writes; anything else (a header carrying non-UTF-8 bytes, say) is not
# a key, and is refused before it is hashed.
_SECRET_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_NEGATIVE_CACHE_MAX = 4096


DEFAULT_SCOPES: frozenset[Scope] = frozenset({Scope.CHAT, Scope.EMBEDDINGS, Scope.MEMORY})


@dataclass(frozen=True)
class CreatedKey:
    """What ``create`` returns: the record, and the secret, which is never stored."""

    record: KeyRecord
    secret: str = field(repr=False)


def require_scope(record: KeyRecord, scope: Scope) -> None:
    """Raise ``PermissionDenied`` unless the key has ``scope`` (or ``admin``)."""
    if scope not in record.scopes and Scope.ADMIN not in record.scopes:
        raise PermissionDenied(f"API key {record.name!r} does not have the {scope.value!r} "
                               "scope.")


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class _Cached:
    record: KeyRecord | None
    at: float


class KeyStore:
    """API keys in the ``api_keys`` table, with an in-memory authentication cache."""

    def __init__(self, db: Database, *, clock: Clock = time.time,
                 cache_ttl_s: float = 5.0, actor: str = "operator") -> None:
        self._db = db
        self._actor = actor  # who creates and revokes, as the audit log records it
        self._clock = clock
        self._ttl = cache_ttl_s
        self._cache: dict[str, _Cached] = {}  # secret sha256 -> known key
        self._unknown: dict[str, float] = {}  # secret sha256 -> when it was not found
        self._generation = 0

    # -- create ---------------------------------------------------------------------------

    async def create(
        self, name: str, *, rpm: int | None = None, tpm: int | None = None,
        burst_requests: int | None = None, burst_tokens: int | None = None,
        max_concurrent: int | None = None, scopes: Iterable[Scope | str] = DEFAULT_SCOPES,
        expires_at: float | None = None, priority: int = 0, guard_policy: str | None = None,
        actor: str | None = None,
    ) -> CreatedKey:
        """Make a key; ``InvalidRequest`` for a bad or duplicate name or a bad limit.
        ``actor``: who creates it, for the audit log (default: the store's)."""
        job = self._create_job(name, rpm, tpm, burst_requests, burst_tokens, max_concurrent,
                               scopes, expires_at, priority, guard_policy, actor)
        return await self._db.write(job)

    def create_sync(
        self, name: str, *, rpm: int | None = None, tpm: int | None = None,
        burst_requests: int | None = None, burst_tokens: int | None = None,
        max_concurrent: int | None = None, scopes: Iterable[Scope | str] = DEFAULT_SCOPES,
        expires_at: float | None = None, priority: int = 0, guard_policy: str | None = None,
    ) -> CreatedKey:
        job = self._create_job(name, rpm, tpm, burst_requests, burst_tokens, max_concurrent,
                               scopes, expires_at, priority, guard_policy)
        return self._db.write_sync(job)

    def _create_job(
        self, name: str, rpm: int | None, tpm: int | None, burst_requests: int | None,
        burst_tokens: int | None, max_concurrent: int | None,
        scopes: Iterable[Scope | str], expires_at: float | None, priority: int,
        guard_policy: str | None = None, actor: str | None = None,
    ) -> Callable[[sqlite_utils.Database], CreatedKey]:
        if not _NAME.fullmatch(name):
            raise InvalidRequest("A key name is 1-64 letters, digits or '._@-', starting "
                                 "with a letter or digit.", param="name")
        limits = {"rpm": rpm, "tpm": tpm, "burst_requests": burst_requests,
                  "burst_tokens": burst_tokens, "max_concurrent": max_concurrent}
        for param, value in limits.items():
            if value is not None and (isinstance(value, bool) or not 1 <= value <= MAX_INTEGER):
                raise InvalidRequest(f"{param} must be a positive integer (at most "
                                     f"{MAX_INTEGER}) or unset.", param=param)
        if isinstance(priority, bool) or not -MAX_INTEGER - 1 <= priority <= MAX_INTEGER:
            raise InvalidRequest(f"priority must be an integer from {-MAX_INTEGER - 1} to "
                                 f"{MAX_INTEGER}.", param="priority")
        scope_set = _parse_scopes(scopes)
        now = self._clock()
        if expires_at is not None:
            if expires_at <= now:
                raise InvalidRequest("expires_at is in the past.", param="expires_at")
            if not expires_at <= MAX_EXPIRES_AT:  # also NaN
                raise InvalidRequest(f"expires_at must be a Unix time no later than "
                                     f"{MAX_EXPIRES_AT:.0f} (the end of the year 9999).",
                                     param="expires_at")
        secret = SECRET_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
        new = KeyRecord(id=0, name=name, hint=secret[-4:], scopes=scope_set, rpm=rpm,
                        tpm=tpm, burst_requests=burst_requests, burst_tokens=burst_tokens,
                        max_concurrent=max_concurrent, priority=priority, created_at=now,
                        expires_at=expires_at, revoked_at=None, guard_policy=guard_policy)

        def job(conn: sqlite_utils.Database) -> CreatedKey:
            if rows.active(conn, name) is not None:
                raise InvalidRequest(f"An API key named {name!r} already exists; revoke it "
                                     "first or choose another name.", param="name",
                                     code="duplicate_key_name")
            record = rows.insert(conn, new, _hash_secret(secret))
            audit.append(conn, "key.create", actor or self._actor, {
                "key_id": record.id, "name": name, "hint": record.hint,
                "scopes": " ".join(sorted(scope_set)), **limits, "priority": priority,
                "expires_at": expires_at}, now)
            return CreatedKey(record, secret)

        return job

    # -- list and revoke ------------------------------------------------------------------

    async def list(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        return await self._db.read(lambda conn: rows.listed(conn,
                                                            include_revoked=include_revoked))

    def list_sync(self, *, include_revoked: bool = True) -> builtins.list[KeyRecord]:
        return self._db.read_sync(lambda conn: rows.listed(conn,
                                                           include_revoked=include_revoked))

    async def revoke(self, name: str, *, actor: str | None = None) -> KeyRecord:
        """Revoke the active key ``name`` (``NotFound`` if none); refused from now on."""
        self._generation += 1
        try:
            return await self._db.write(self._revoke_job(name, actor))
        finally:
            self._evict(name)

    def revoke_sync(self, name: str) -> KeyRecord:
        self._generation += 1
        try:
            return self._db.write_sync(self._revoke_job(name))
        finally:
            self._evict(name)

    def _revoke_job(self, name: str, actor: str | None = None
                    ) -> Callable[[sqlite_utils.Database], KeyRecord]:
        now = self._clock()

        def job(conn: sqlite_utils.Database) -> KeyRecord:
            key = rows.active(conn, name)
            if key is None:
                raise NotFound(f"No active API key named {name!r}.", param="name")
            revoked = rows.revoke(conn, key, now)
            audit.append(conn, "key.revoke", actor or self._actor,
                         {"key_id": key.id, "name": name, "hint": key.hint}, now)
            return revoked

        return job

    def _evict(self, name: str) -> None:
        self._generation += 1
        for digest in [d for d, c in self._cache.items()
                       if c.record is not None and c.record.name == name]:
            del self._cache[digest]

    # -- authenticate ---------------------------------------------------------------------

    async def authenticate(self, secret: str, now: float | None = None) -> KeyRecord:
        """The key for ``secret``, or ``AuthenticationError`` (unknown, revoked, expired)."""
        now = self._clock() if now is None else now
        digest = _digest(secret)
        cached = self._cached(digest, now)
        if cached is None:
            generation = self._generation
            found = await self._db.read(lambda conn: rows.by_secret_sha256(conn, digest))
            cached = self._remember(digest, found, now, generation)
        return _verdict(cached, now)

    def authenticate_sync(self, secret: str, now: float | None = None) -> KeyRecord:
        now = self._clock() if now is None else now
        digest = _digest(secret)
        cached = self._cached(digest, now)
        if cached is None:
            generation = self._generation
            found = self._db.read_sync(lambda conn: rows.by_secret_sha256(conn, digest))
            cached = self._remember(digest, found, now, generation)
        return _verdict(cached, now)

    def _cached(self, digest: str, now: float) -> _Cached | None:
        hit = self._cache.get(digest)
        if hit is not None and hit.at <= now < hit.at + self._ttl:
            return hit
        at = self._unknown.get(digest)
        if at is not None and at <= now < at + self._ttl:
            return _Cached(None, at)
        return None

    def _remember(self, digest: str, found: StoredKey | None, now: float,
                  generation: int) -> _Cached:
        if found is not None and not hmac.compare_digest(found.secret_sha256, digest):
            found = None
        cached = _Cached(None if found is None else found.record, now)
        if generation == self._generation:  # no revoke raced with this lookup
            if cached.record is None:
                if len(self._unknown) >= _NEGATIVE_CACHE_MAX:
                    self._unknown.clear()
                self._unknown[digest] = now
            else:
                self._cache[digest] = cached
        return cached


def _digest(secret: str) -> str:
    if (len(secret) != _SECRET_LEN or not secret.startswith(SECRET_PREFIX)
            or not _SECRET_CHARS.fullmatch(secret, len(SECRET_PREFIX))):
        raise AuthenticationError("Incorrect API key provided.")
    return _hash_secret(secret)


def _verdict(cached: _Cached, now: float) -> KeyRecord:
    record = cached.record
    if record is None:
        raise AuthenticationError("Incorrect API key provided.")
    if record.revoked:
        raise AuthenticationError(f"API key {record.masked} has been revoked.")
    if record.expired(now):
        raise AuthenticationError(f"API key {record.masked} has expired.")
    return record


def _parse_scopes(scopes: Iterable[Scope | str]) -> frozenset[Scope]:
    out: set[Scope] = set()
    for s in scopes:
        try:
            out.add(Scope(s))
        except ValueError:
            raise InvalidRequest(f"Unknown scope {s!r}; scopes are "
                                 f"{', '.join(x.value for x in Scope)}.",
                                 param="scopes") from None
    if not out:
        raise InvalidRequest("A key needs at least one scope.", param="scopes")
    return frozenset(out)
