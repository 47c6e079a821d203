"""API-key rows: the ``api_keys`` table. A key is stored by the SHA-256 of its secret and
the secret's last four characters, never the secret. The rules (names, scopes, limits,
authentication, caching): :mod:`appliance.admission.keys`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils

SECRET_PREFIX = "sk-appl-"
_COLUMNS = ("id, name, secret_sha256, hint, scopes, rpm, tpm, burst_requests, burst_tokens, "
            "max_concurrent, priority, created_at, expires_at, revoked_at, guard_policy")


class Scope(enum.StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    MEMORY = "memory"
    ADMIN = "admin"


@dataclass(frozen=True)
class KeyRecord:
    """An API key as stored (never its secret). Limits of ``None`` mean unlimited."""

    id: int
    name: str
    hint: str  # last four characters of the secret
    scopes: frozenset[Scope]
    rpm: int | None
    tpm: int | None
    burst_requests: int | None
    burst_tokens: int | None
    max_concurrent: int | None
    priority: int
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    guard_policy: str | None = None  # a guard policy name or path; None: the server default

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    @property
    def masked(self) -> str:
        return f"{SECRET_PREFIX}...{self.hint}"


@dataclass(frozen=True)
class StoredKey:
    """A key found by its secret's hash, with that hash to confirm in constant time."""

    record: KeyRecord
    secret_sha256: str


def insert(conn: sqlite_utils.Database, key: KeyRecord, secret_sha256: str) -> KeyRecord:
    """Store a new key (its ``id`` is ignored); return it with the id it got."""
    row: dict[str, Any] = {
        "name": key.name, "secret_sha256": secret_sha256, "hint": key.hint,
        "scopes": " ".join(sorted(key.scopes)), "rpm": key.rpm, "tpm": key.tpm,
        "burst_requests": key.burst_requests, "burst_tokens": key.burst_tokens,
        "max_concurrent": key.max_concurrent, "priority": key.priority,
        "created_at": key.created_at, "expires_at": key.expires_at,
        "revoked_at": key.revoked_at, "guard_policy": key.guard_policy,
    }
    cursor = conn.execute(f"INSERT INTO api_keys ({', '.join(row)}) VALUES "
                          f"({', '.join('?' for _ in row)})", list(row.values()))
    return dataclasses.replace(key, id=int(cursor.lastrowid or 0))


def active(conn: sqlite_utils.Database, name: str) -> KeyRecord | None:
    """The key called ``name`` that is not revoked, if any (names are unique among them)."""
    for row in conn.query(f"SELECT {_COLUMNS} FROM api_keys WHERE name = ? "
                          "AND revoked_at IS NULL", [name]):
        return _record(row)
    return None


def by_secret_sha256(conn: sqlite_utils.Database, digest: str) -> StoredKey | None:
    for row in conn.query(f"SELECT {_COLUMNS} FROM api_keys WHERE secret_sha256 = ?",
                          [digest]):
        return StoredKey(_record(row), str(row["secret_sha256"]))
    return None


def listed(conn: sqlite_utils.Database, *, include_revoked: bool) -> list[KeyRecord]:
    """Every key in creation order; revoked ones only if ``include_revoked``."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    return [_record(r) for r in conn.query(f"SELECT {_COLUMNS} FROM api_keys{where} "
                                           "ORDER BY id")]


def revoke(conn: sqlite_utils.Database, key: KeyRecord, at: float) -> KeyRecord:
    conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [at, key.id])
    return dataclasses.replace(key, revoked_at=at)


def _record(row: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        id=int(row["id"]), name=row["name"], hint=row["hint"],
        scopes=frozenset(Scope(s) for s in str(row["scopes"]).split()),
        rpm=row["rpm"], tpm=row["tpm"], burst_requests=row["burst_requests"],
        burst_tokens=row["burst_tokens"], max_concurrent=row["max_concurrent"],
        priority=int(row["priority"]), created_at=float(row["created_at"]),
        expires_at=row["expires_at"], revoked_at=row["revoked_at"],
        guard_policy=row["guard_policy"],
    )
