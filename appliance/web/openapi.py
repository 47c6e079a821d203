"""The OpenAPI 3.1 document of the HTTP surface, served at ``GET /openapi.json``.

Each route module declares its operations next to its handlers (``OPERATIONS``, a tuple of
``Operation``); request bodies are the JSON Schemas in ``appliance/api/schema.py``, beside
the parsers that enforce them. ``app.py`` collects every module's operations next to its
routes, and ``document()`` assembles them once at start-up. A test checks that the
document's paths and methods are exactly the application's routes, so an endpoint added
without its ``Operation`` (or the other way round) fails ``make test``; the property-based
fuzz of ``tests/e2e/test_fuzz.py`` generates its requests from this document.

Built in code, not shipped as a JSON file: the schemas share their limits with the parsers
(the constants are imported, not copied), and the guard policy names are read from the
presets that exist.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import orjson
from aiohttp import web

from appliance.web.state import OPENAPI

Auth = Literal["key", "none", "metrics"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string", "description": "invalid_request_error, "
                     "authentication_error, permission_error, rate_limit_exceeded, "
                     "server_error, server_overloaded"},
            "param": {"type": ["string", "null"], "description": "the offending field"},
            "code": {"type": ["string", "null"]},
            "guard": {"type": "string", "description": "content_filter only"},
            "category": {"type": ["string", "null"], "description": "content_filter only"},
        }}},
}

_STATUS_TEXT = {
    400: "invalid request (the param and code say what)", 401: "missing or wrong API key",
    403: "the key lacks a scope", 404: "no such model, memory or endpoint",
    405: "method not allowed", 413: "body larger than max_body_bytes",
    429: "a rate limit of the key (Retry-After says when)",
    500: "a bug: the server log has the request id",
    503: "overloaded, draining or not ready (Retry-After says when)",
}
# Any request may get these: a malformed body, a bad method, the server's own trouble.
_ALWAYS = (400, 405, 500)
_JSON = "application/json"
_ERROR_REF = "#/components/schemas/Error"


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["query", "path", "header"]
    schema: Mapping[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """One method on one path, as the document describes it. ``success``: the status of its
    answer (201 for one that creates); ``errors``: the 4xx/5xx statuses it answers beyond
    those of every operation (400, 405, 500), those its ``auth`` implies (401 and 403) and
    413 for one that takes a body."""

    method: str
    path: str
    summary: str
    body: Mapping[str, Any] | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()
    auth: Auth = "key"
    media: tuple[str, ...] = (_JSON,)  # of the success response
    result: Mapping[str, Any] = field(default_factory=lambda: {"type": "object"})
    success: int = 200

    @property
    def statuses(self) -> tuple[int, ...]:
        implied = () if self.auth == "none" else (401, 403)
        sized = (413,) if self.body is not None else ()
        return tuple(sorted({self.success, *_ALWAYS, *implied, *sized, *self.errors}))


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "operationId": _operation_id(op)}
    if op.params:
        out["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required or p.where == "path",
             "schema": dict(p.schema), **({"description": p.description}
                                          if p.description else {})}
            for p in op.params]
    if op.body is not None:
        out["requestBody"] = {"required": True,
                              "content": {_JSON: {"schema": dict(op.body)}}}
    responses: dict[str, Any] = {str(op.success): {
        "description": HTTPStatus(op.success).phrase, "content": {
            media: {"schema": dict(op.result) if media == _JSON else {"type": "string"}}
            for media in op.media}}}
    for status in op.statuses:
        if status != op.success:
            responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    out["responses"] = responses
    out["security"] = [] if op.auth == "none" else [{"bearer": []}]
    if op.auth == "metrics":
        out["description"] = "Open, or an admin key: see the metrics_access setting."
    return out


def _operation_id(op: Operation) -> str:
    words = op.path.translate(str.maketrans("/.", "__", "{}")).strip("_")
    return f"{op.method.lower()}_{words}"


def _version() -> str:
    try:
        return importlib.metadata.version("appliance")
    except importlib.metadata.PackageNotFoundError:  # a bundle without the metadata
        return "unknown"


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        method = op.method.lower()
        if method in paths.get(op.path, {}):
            raise ValueError(f"{op.method} {op.path} is described twice")
        paths.setdefault(op.path, {})[method] = _operation(op)
    errors = {f"E{status}": {"description": text,
                             "content": {_JSON: {"schema": {"$ref": _ERROR_REF}}}}
              for status, text in _STATUS_TEXT.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "The appliance", "version": _version(),
                 "description": "An on-prem LLM server speaking the OpenAI API. Every error "
                                "is {\"error\": {\"message\", \"type\", \"param\", \"code\"}}."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "responses": errors,
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API key from `appliance keys create`; not needed while "
                               "none exists and the server is bound to loopback"}},
        },
    }


def render(operations: Iterable[Operation]) -> bytes:
    return orjson.dumps(document(operations))


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type=_JSON)


OPERATIONS = (
    Operation("GET", "/openapi.json", "this document", auth="none"),
)
