"""Administration endpoints (admin scope) over the components the server already has: the
audit log (recent records, verify, export), cache and memory sizes, clearing the cache,
forgetting a user under every key, and the guard policy in force.

Records of the audit log hold no prompt or response text (see
``appliance.observability.audit``), so listing and exporting them shows no PII.
"""

from __future__ import annotations

import datetime

import orjson
from aiohttp import web

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyRecord, Scope
from appliance.api.admin import parse_audit_query, parse_forget_user, parse_since
from appliance.errors import InvalidRequest
from appliance.guards.policy import presets
from appliance.web.openapi import Operation, Param
from appliance.web.policy_body import policy_body
from appliance.web.routes import json_response
from appliance.web.state import AUDIT, CACHE, GUARDS, KEY, MEMORY, PSEUDONYMS, SETTINGS

routes = web.RouteTableDef()


def _admin(request: web.Request) -> KeyRecord:
    key = request[KEY]
    Gate.require(key, Scope.ADMIN)
    return key


@routes.get("/v1/admin/audit")
async def audit_recent(request: web.Request) -> web.Response:
    """The newest records first: ``?limit=100&since=2026-11-01&event=guard.``."""
    _admin(request)
    q = parse_audit_query(request.query)
    records = await request.app[AUDIT].recent(q.limit, q.since, q.event)
    return json_response({"object": "list", "data": [r.as_json() for r in records]})


@routes.get("/v1/admin/audit/verify")
async def audit_verify(request: web.Request) -> web.Response:
    """The hash chain checked whole, as ``appliance audit verify`` does."""
    _admin(request)
    v = await request.app[AUDIT].verify()
    return json_response({"object": "audit.verification", "ok": v.ok, "records": v.records,
                          "head": {"seq": v.head_seq, "hash": v.head_hash},
                          "broken_seq": v.broken_seq, "reason": v.reason or None})


@routes.get("/v1/admin/audit/export")
async def audit_export(request: web.Request) -> web.Response:
    """JSON lines (``?since=``), as ``appliance audit export`` writes them."""
    _admin(request)
    records = await request.app[AUDIT].export(parse_since(request.query.get("since")))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return web.Response(
        body=b"".join(orjson.dumps(r.as_json()) + b"\n" for r in records),
        headers={"Content-Type": "application/x-ndjson",
                 "Content-Disposition": f'attachment; filename="audit-{stamp}.jsonl"'})


@routes.get("/v1/admin/storage")
async def storage(request: web.Request) -> web.Response:
    """Entries of the response cache and of each memory tier, and the database's size."""
    _admin(request)
    settings = request.app[SETTINGS]
    entries, memory_bytes = await request.app[MEMORY].usage()
    db_bytes = sum(p.stat().st_size for p in (
        settings.database, settings.database.with_name(settings.database.name + "-wal"))
        if p.exists())
    return json_response({
        "object": "storage",
        "cache": {"enabled": settings.cache_enabled,
                  "entries": await request.app[CACHE].count()},
        "memory": {"enabled": settings.memory_enabled, "entries": entries,
                   "bytes": memory_bytes},
        "database": {"bytes": db_bytes}})


@routes.delete("/v1/admin/cache")
async def clear_cache(request: web.Request) -> web.Response:
    """Every cached response of every key is deleted (audited as ``cache.clear``)."""
    admin = _admin(request)
    deleted = await request.app[CACHE].clear()
    await request.app[AUDIT].append("cache.clear", f"key:{admin.name}", {"deleted": deleted})
    return json_response({"object": "cache.cleared", "deleted": deleted})


@routes.delete("/v1/admin/memory")
async def forget_user_everywhere(request: web.Request) -> web.Response:
    """``?user=``: that user's session and user memories under every key (an erasure
    request); ``DELETE /v1/memory?user=`` forgets only under the caller's key."""
    admin = _admin(request)
    user = parse_forget_user(request.query)
    # Stored under its keyed hash, as every client-named id (store.pseudonyms).
    hashed = request.app[PSEUDONYMS].of(user)
    deleted = await request.app[MEMORY].forget_user(None, hashed, actor_id=admin.id)
    return json_response({"object": "memory.deleted", "user": user, "deleted": deleted,
                          "all_keys": True})


@routes.get("/v1/admin/policy")
async def policy(request: web.Request) -> web.Response:
    """The server's guard policy, or the preset ``?name=``."""
    _admin(request)
    server = request.app[SETTINGS].guard_policy
    name = request.query.get("name") or server
    if name != server and name not in presets():
        raise InvalidRequest(f"'name' must be one of the presets {list(presets())}",
                             param="name")
    rails = request.app[GUARDS].get().rails(name)
    return json_response({**policy_body(rails.policy, server_default=name == server),
                          "presets": list(presets())})


_SINCE = Param("since", "query", {"type": "string"},
               description="a Unix time or an ISO date like 2026-11-01")
OPERATIONS = (
    Operation("GET", "/v1/admin/audit", "admin: audit records, newest first",
              params=(Param("limit", "query", {"type": "string", "pattern": "^[0-9]{1,4}$"},
                            description="1..1000 (default 100)"), _SINCE,
                      Param("event", "query", {"type": "string", "maxLength": 64}))),
    Operation("GET", "/v1/admin/audit/verify", "admin: the audit log's hash chain checked"),
    Operation("GET", "/v1/admin/audit/export", "admin: audit records as JSON lines",
              params=(_SINCE,), media=("application/x-ndjson",)),
    Operation("GET", "/v1/admin/storage", "admin: cache and memory sizes"),
    Operation("DELETE", "/v1/admin/cache", "admin: delete every cached response"),
    Operation("DELETE", "/v1/admin/memory", "admin: forget a user under every key",
              params=(Param("user", "query", {"type": "string", "minLength": 1,
                                              "maxLength": 256}, required=True),)),
    Operation("GET", "/v1/admin/policy", "admin: the guard policy in force, or a preset",
              params=(Param("name", "query", {"type": "string"}),), errors=(404,)),
)
