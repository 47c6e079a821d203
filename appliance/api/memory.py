"""``/v1/memory`` requests, parsed and validated at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from appliance.errors import InvalidRequest
from appliance.store.rows import MAX_INTEGER

MAX_CONTENT_CHARS = 16_384
MAX_NAME_CHARS = 256
MAX_ID = MAX_INTEGER
TIERS = ("session", "user", "global")
Tier = Literal["session", "user", "global"]


@dataclass(frozen=True)
class MemoryWrite:
    tier: Tier
    user: str
    session_id: str
    content: str
    pinned: bool


@dataclass(frozen=True)
class MemoryQuery:
    tier: Tier
    user: str
    session_id: str


def _name(source: Mapping[str, Any], name: str) -> str:
    value = source.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"'{name}' must be a string of at most {MAX_NAME_CHARS} "
                             "characters", param=name)
    return value


def _tier(source: Mapping[str, Any], user: str, session_id: str) -> Tier:
    tier = source.get("scope")
    if tier not in TIERS:
        raise InvalidRequest(f"'scope' must be one of {', '.join(TIERS)}", param="scope")
    if tier == "session" and not session_id:
        raise InvalidRequest("scope 'session' needs a 'session_id'", param="session_id")
    if tier == "user" and not user:
        raise InvalidRequest("scope 'user' needs a 'user'", param="user")
    if tier == "global" and (user or session_id):
        raise InvalidRequest("scope 'global' takes no 'user' or 'session_id'", param="scope")
    return cast(Tier, tier)


def parse_memory_write(body: Any) -> MemoryWrite:
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    user, session_id = _name(body, "user"), _name(body, "session_id")
    tier = _tier(body, user, session_id)
    content = body.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidRequest("'content' must be a non-empty string", param="content")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidRequest(f"'content' is longer than {MAX_CONTENT_CHARS} characters",
                             param="content")
    return MemoryWrite(tier, user, session_id, content, parse_pinned(body, default=False))


def parse_pinned(body: Any, *, default: bool | None = None) -> bool:
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    pinned = body.get("pinned", default)
    if not isinstance(pinned, bool):
        raise InvalidRequest("'pinned' must be a boolean", param="pinned")
    return pinned


def parse_memory_query(query: Mapping[str, str]) -> MemoryQuery:
    user, session_id = _name(query, "user"), _name(query, "session_id")
    return MemoryQuery(_tier(query, user, session_id), user, session_id)


def parse_user(source: Mapping[str, Any]) -> str:
    return _name(source, "user")


def parse_session_id(source: Mapping[str, Any]) -> str:
    return _name(source, "session_id")


def parse_id(raw: str) -> int:
    """A path's memory id: ASCII digits only (``int()`` would also take signs, spaces,
    underscores and other scripts' digits), within SQLite's INTEGER."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ID)):
        raise InvalidRequest(f"memory id {raw[:32]!r} is not a positive integer", param="id")
    value = int(raw)
    if not 1 <= value <= MAX_ID:
        raise InvalidRequest(f"memory ids are integers from 1 to {MAX_ID}", param="id")
    return value
