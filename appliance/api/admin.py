"""The administration endpoints' requests (``/v1/admin/...``), parsed and validated at the
edge: a new API key, an audit-log query, a user to forget."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.errors import InvalidRequest

MAX_AUDIT_LIMIT = 1000
_LIMITS = ("rpm", "tpm", "burst_requests", "burst_tokens", "max_concurrent")
_KEY_FIELDS = frozenset({"name", "scopes", "priority", "expires_at", "policy", *_LIMITS})


@dataclass(frozen=True)
class KeyCreate:
    name: str
    scopes: tuple[str, ...]
    limits: Mapping[str, int | None]  # rpm, tpm, burst_requests, burst_tokens, max_concurrent
    priority: int
    expires_at: float | None
    policy: str | None  # a preset name; None: the server's policy


@dataclass(frozen=True)
class AuditQuery:
    limit: int
    since: float | None
    event: str  # a prefix of the event name ("guard." ...); "" for every event


def _int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer or null", param=name)
    return value


def parse_key_create(body: Any, presets: tuple[str, ...]) -> KeyCreate:
    """The body of ``POST /v1/admin/keys``; the key store checks names, scopes and limits."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = set(body) - _KEY_FIELDS
    if unknown:
        raise InvalidRequest(f"unknown field(s) {sorted(unknown)}; fields are "
                             f"{', '.join(sorted(_KEY_FIELDS))}", param=sorted(unknown)[0])
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("'name' must be a string", param="name")
    scopes = body.get("scopes", ["chat", "embeddings", "memory"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise InvalidRequest("'scopes' must be an array of strings", param="scopes")
    expires = body.get("expires_at")
    if expires is not None and (isinstance(expires, bool)
                                or not isinstance(expires, int | float)):
        raise InvalidRequest("'expires_at' must be a Unix time in seconds or null",
                             param="expires_at")
    policy = body.get("policy")
    if policy is not None and (not isinstance(policy, str) or policy not in presets):
        raise InvalidRequest(f"'policy' must be one of the presets {list(presets)} or null "
                             "(a policy file is given with `appliance keys create --policy`)",
                             param="policy")
    return KeyCreate(name, tuple(scopes), {n: _int(body, n) for n in _LIMITS},
                     _int(body, "priority") or 0,
                     float(expires) if expires is not None else None, policy)


def parse_since(raw: str | None) -> float | None:
    """``since``: a Unix time in seconds, or an ISO date or date-time (UTC when no zone)."""
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"'since' must be a Unix time or an ISO date like 2026-11-01, "
                             f"not {raw!r}", param="since") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def parse_audit_query(query: Mapping[str, str]) -> AuditQuery:
    raw = query.get("limit", "100")
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidRequest(f"'limit' must be an integer, not {raw!r}", param="limit") from None
    if not 1 <= limit <= MAX_AUDIT_LIMIT:
        raise InvalidRequest(f"'limit' must be between 1 and {MAX_AUDIT_LIMIT}", param="limit")
    event = query.get("event", "")
    if len(event) > 64:
        raise InvalidRequest("'event' is at most 64 characters", param="event")
    return AuditQuery(limit, parse_since(query.get("since")), event)


def parse_forget_user(query: Mapping[str, str]) -> str:
    user = query.get("user", "")
    if not user or len(user) > 256:
        raise InvalidRequest("DELETE /v1/admin/memory needs ?user=... (at most 256 "
                             "characters): that user's memories under every key are deleted",
                             param="user")
    return user
