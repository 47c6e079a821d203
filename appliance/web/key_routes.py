"""``GET /v1/me`` (who is calling and what they may do, for any valid key) and the API-key
administration endpoints (``/v1/admin/keys``, admin scope) over the server's one key store,
so a revocation here is refused at once by this process."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from appliance.admission.gate import ANONYMOUS, Gate
from appliance.admission.keys import MAX_EXPIRES_AT, KeyRecord, Scope
from appliance.api.admin import parse_key_create
from appliance.guards.policy import presets
from appliance.store.rows import MAX_INTEGER
from appliance.web.openapi import Operation, Param
from appliance.web.routes import json_response, read_json
from appliance.web.state import KEY, KEYS, SETTINGS

routes = web.RouteTableDef()


def key_body(r: KeyRecord, now: float) -> dict[str, Any]:
    state = "revoked" if r.revoked else "expired" if r.expired(now) else "active"
    return {"object": "api_key", "id": r.id, "name": r.name,
            "key": r.masked if r.hint else None, "scopes": sorted(r.scopes),
            "rpm": r.rpm, "tpm": r.tpm, "burst_requests": r.burst_requests,
            "burst_tokens": r.burst_tokens, "max_concurrent": r.max_concurrent,
            "priority": r.priority, "policy": r.guard_policy,
            "created_at": int(r.created_at),
            "expires_at": int(r.expires_at) if r.expires_at is not None else None,
            "revoked_at": int(r.revoked_at) if r.revoked_at is not None else None,
            "state": state}


def _admin(request: web.Request) -> KeyRecord:
    key = request[KEY]
    Gate.require(key, Scope.ADMIN)
    return key


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    """The caller's key (never its secret) and scopes; in open access (loopback, no keys
    yet) the anonymous caller, who may do everything, and how to create the first key."""
    key, settings = request[KEY], request.app[SETTINGS]
    body = key_body(key, time.time())
    body["open_access"] = key is ANONYMOUS
    body["server_policy"] = settings.guard_policy
    if key is ANONYMOUS:
        body["create_key_command"] = (f"appliance keys create --name admin --scopes admin "
                                      f"--data-dir {settings.data_dir}")
    return json_response(body)


@routes.get("/v1/admin/keys")
async def list_keys(request: web.Request) -> web.Response:
    _admin(request)
    now = time.time()
    keys = await request.app[KEYS].list(include_revoked=True)
    return json_response({"object": "list", "data": [key_body(k, now) for k in keys]})


@routes.post("/v1/admin/keys")
async def create_key(request: web.Request) -> web.Response:
    """A new key; the response holds its secret, the only time it is shown."""
    admin = _admin(request)
    req = parse_key_create(await read_json(request), presets())
    limits = req.limits
    created = await request.app[KEYS].create(
        req.name, rpm=limits["rpm"], tpm=limits["tpm"],
        burst_requests=limits["burst_requests"], burst_tokens=limits["burst_tokens"],
        max_concurrent=limits["max_concurrent"], scopes=req.scopes, priority=req.priority,
        expires_at=req.expires_at, guard_policy=req.policy, actor=f"key:{admin.name}")
    return json_response({**key_body(created.record, time.time()),
                          "secret": created.secret}, status=201)


@routes.delete("/v1/admin/keys/{name}")
async def revoke_key(request: web.Request) -> web.Response:
    admin = _admin(request)
    record = await request.app[KEYS].revoke(request.match_info["name"],
                                            actor=f"key:{admin.name}")
    return json_response({**key_body(record, time.time()), "revoked": True})


# The key store's bounds (``KeyStore.create``); an expiry must also lie in the future.
_LIMIT = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_INTEGER}, {"type": "null"}]}
KEY_CREATE = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
        "priority": {"anyOf": [{"type": "integer", "minimum": -MAX_INTEGER - 1,
                                "maximum": MAX_INTEGER}, {"type": "null"}]},
        "expires_at": {"anyOf": [{"type": "number", "maximum": MAX_EXPIRES_AT},
                                 {"type": "null"}]},
        "policy": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        **{name: _LIMIT for name in ("rpm", "tpm", "burst_requests", "burst_tokens",
                                     "max_concurrent")}},
}
OPERATIONS = (
    Operation("GET", "/v1/me", "the calling key (never its secret), its scopes and limits"),
    Operation("GET", "/v1/admin/keys", "admin: every API key, with its state"),
    Operation("POST", "/v1/admin/keys", "admin: create a key (the answer holds its secret)",
              body=KEY_CREATE, success=201),
    Operation("DELETE", "/v1/admin/keys/{name}", "admin: revoke a key",
              params=(Param("name", "path", {"type": "string"}, required=True),),
              errors=(404,)),
)
