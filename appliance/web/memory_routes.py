"""``/v1/memory``: write, list, delete and pin memories (parse, call the store, map).

The ``user`` and ``session_id`` a request names are hashed (keyed, see
:mod:`appliance.store.pseudonyms`) before the store sees them; answers echo the plain ids
the request named, never the hashes (an id it did not name is ``null``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyRecord, Scope
from appliance.api import schema
from appliance.api.memory import (
    parse_id,
    parse_memory_query,
    parse_memory_write,
    parse_pinned,
    parse_session_id,
    parse_user,
)
from appliance.errors import InvalidRequest, NotFound
from appliance.memory.memories import MemoryEntry
from appliance.web.openapi import Operation, Param
from appliance.web.routes import json_response, read_json
from appliance.web.state import KEY, MEMORY, MEMORY_WRITER, PSEUDONYMS, TRACE

routes = web.RouteTableDef()


def entry_body(e: MemoryEntry, names: Mapping[str, str]) -> dict[str, Any]:
    """An entry as the API shows it; ``names``: keyed hash -> the plain id the request
    named."""
    return {"id": e.id, "object": "memory", "scope": e.tier, "user": names.get(e.user),
            "session_id": names.get(e.session_id), "content": e.content, "pinned": e.pinned,
            "kind": e.kind, "role": e.role, "tokens": e.tokens,
            "created_at": int(e.created_at), "last_accessed_at": int(e.last_accessed_at),
            "access_count": e.access_count}


def _caller(request: web.Request) -> KeyRecord:
    key = request[KEY]
    Gate.require(key, Scope.MEMORY)
    return key


def _names(request: web.Request, *plain: str) -> dict[str, str]:
    ids = request.app[PSEUDONYMS]
    return {ids.of(name): name for name in plain if name}


def _hashed(request: web.Request, name: str) -> str:
    return request.app[PSEUDONYMS].of(name)


def _is_admin(key: KeyRecord) -> bool:
    return Scope.ADMIN in key.scopes


def _not_found(entry_id: int) -> NotFound:
    return NotFound(f"no memory {entry_id} for this key and user", param="id")


@routes.post("/v1/memory")
async def create_memory(request: web.Request) -> web.Response:
    key = _caller(request)
    req = parse_memory_write(await read_json(request))
    if req.tier == "global":
        Gate.require(key, Scope.ADMIN)
    written = await request.app[MEMORY_WRITER].add(
        key, req.tier, req.content, user=_hashed(request, req.user),
        session_id=_hashed(request, req.session_id), pinned=req.pinned,
        trace=request[TRACE])
    body = entry_body(written.entry, _names(request, req.user, req.session_id))
    return json_response({**body, "redacted": written.redacted})


@routes.get("/v1/memory")
async def list_memory(request: web.Request) -> web.Response:
    key = _caller(request)
    q = parse_memory_query(request.query)
    entries = await request.app[MEMORY].entries(
        key.id, q.tier, user=_hashed(request, q.user),
        session_id=_hashed(request, q.session_id))
    names = _names(request, q.user, q.session_id)
    return json_response({"object": "list", "data": [entry_body(e, names) for e in entries]})


@routes.delete("/v1/memory/{id}")
async def delete_memory(request: web.Request) -> web.Response:
    key = _caller(request)
    entry_id = parse_id(request.match_info["id"])
    store = request.app[MEMORY]
    deleted = await store.delete(key.id, entry_id, _hashed(request, parse_user(request.query)))
    if not deleted and _is_admin(key):
        deleted = await store.delete_global(key.id, entry_id)
    if not deleted:
        raise _not_found(entry_id)
    return json_response({"id": entry_id, "object": "memory.deleted", "deleted": True})


@routes.delete("/v1/memory")
async def forget_user(request: web.Request) -> web.Response:
    key = _caller(request)
    user = parse_user(request.query)
    if not user:
        raise InvalidRequest("DELETE /v1/memory needs ?user=... (everything for that user "
                             "under this key is deleted)", param="user")
    deleted = await request.app[MEMORY].forget_user(key.id, _hashed(request, user))
    return json_response({"object": "memory.deleted", "user": user, "deleted": deleted})


@routes.patch("/v1/memory/{id}")
async def pin_memory(request: web.Request) -> web.Response:
    key = _caller(request)
    entry_id = parse_id(request.match_info["id"])
    body = await read_json(request)
    pinned = parse_pinned(body)
    user = parse_user(body)
    entry = await request.app[MEMORY].set_pinned(key.id, entry_id, _hashed(request, user),
                                                 pinned, admin=_is_admin(key))
    if entry is None:
        raise _not_found(entry_id)
    return json_response(entry_body(entry, _names(request, user, parse_session_id(body))))


_ID = Param("id", "path", schema.MEMORY_ID)
_USER = Param("user", "query", schema.NAME)
OPERATIONS = (
    Operation("POST", "/v1/memory", "store a session, user or (admin) global memory",
              body=schema.MEMORY_WRITE),
    Operation("GET", "/v1/memory", "list memories of a scope",
              params=(Param("scope", "query", schema.MEMORY_SCOPE, required=True), _USER,
                      Param("session_id", "query", schema.NAME))),
    Operation("DELETE", "/v1/memory/{id}", "delete one memory", params=(_ID, _USER),
              errors=(404,)),
    Operation("DELETE", "/v1/memory", "forget everything of a user under this key",
              params=(Param("user", "query", {**schema.NAME, "minLength": 1},
                            required=True),)),
    Operation("PATCH", "/v1/memory/{id}", "pin or unpin a memory", params=(_ID,),
              body=schema.MEMORY_PIN, errors=(404,)),
)
