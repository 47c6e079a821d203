"""Observability in the web layer: ``GET /metrics``, and what happens when a request ends.

``request_done(request, trace)`` is called once per request by the errors middleware, after
the response: it feeds the metrics from the trace, writes the access-log line, and appends
the trace's guard actions to the audit log.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web

from appliance.admission.keys import Scope
from appliance.observability.logs import ACCESS_LOGGER, access_fields
from appliance.observability.metrics import CONTENT_TYPE, UNMATCHED
from appliance.observability.redaction import Scrubber
from appliance.observability.trace import RequestTrace
from appliance.store.pseudonyms import Pseudonyms
from appliance.web.openapi import Operation
from appliance.web.state import (
    AUDIT,
    GATE,
    METRICS,
    PSEUDONYMS,
    SCRUBBER,
    SETTINGS,
    TRACE,
)
from appliance.web.wiring import is_loopback

CLIENT_GONE = 499  # the status recorded for a request whose client went away (nginx's)
CLIENT_DISCONNECTED = "client_disconnected"  # its error type
# Methods logged as they are; any other token (a client may send "555-0132" as a method)
# is logged as OTHER.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ID_FIELDS = ("user", "session_id")  # logged as their keyed hashes, as they are stored

log = logging.getLogger("appliance.web")
access_log = logging.getLogger(ACCESS_LOGGER)

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; who may read it is ``metrics_access``."""
    settings, gate = request.app[SETTINGS], request.app[GATE]
    access = settings.metrics_access
    if access == "auto":
        open_bind = is_loopback(settings.host) or not await gate.has_keys()
        access = "open" if open_bind else "admin"
    if access == "admin":
        key = await gate.authenticate(request.headers.get("Authorization"))
        request[TRACE].key_name = key.name
        gate.require(key, Scope.ADMIN)
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def logged_method(request: web.Request) -> str:
    return request.method if request.method in _METHODS else "OTHER"


def endpoint_label(request: web.Request) -> str:
    """The route's canonical path (bounded), or one value for every unmatched path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


OPERATIONS = (
    Operation("GET", "/metrics", "Prometheus metrics (see docs/METRICS.md)", auth="metrics",
              media=(CONTENT_TYPE,)),
)


async def request_done(request: web.Request, trace: RequestTrace) -> None:
    """Metrics, access log and audit for a finished (or abandoned) request. Never raises."""
    trace.finished_s = trace.elapsed()
    # The client went away: the handler was cancelled (no status), or a stream found the
    # connection closed while writing and ended itself. Which one is a race; one status.
    if trace.status is None or trace.error_type == CLIENT_DISCONNECTED:
        trace.status = CLIENT_GONE
        trace.error_type = trace.error_type or CLIENT_DISCONNECTED
    try:
        endpoint = endpoint_label(request)
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.observe_request(trace, endpoint)
        if access_log.isEnabledFor(logging.INFO):
            content = await _content(request, trace) if trace.keep_content else None
            method = logged_method(request)
            access_log.info("%s %s %s", method, endpoint, trace.status,
                            extra={"fields": access_fields(trace, method, endpoint,
                                                           content=content)})
        audit = request.app.get(AUDIT)
        if audit is not None and trace.guard_actions:
            actor = trace.key_name or "anonymous"
            items = [(f"guard.{a.action}", actor,
                      {"request_id": trace.request_id, "route": endpoint,
                       "guard": a.guard, "direction": a.direction, "label": a.label,
                       "action": a.action, "ms": a.ms}) for a in trace.guard_actions]
            # Shielded: a client that went away must not cost the audit its records.
            await asyncio.shield(audit.append_many(items))
    except Exception:
        log.exception("recording request %s failed", trace.request_id)


async def _content(request: web.Request, trace: RequestTrace) -> dict[str, str]:
    """The request body and response text, PII-redacted (content logging only)."""
    scrub = request.app[SCRUBBER]
    out: dict[str, str] = {}
    if request.body_exists:
        try:
            raw = await request.read()
        except Exception:
            raw = b""
        try:  # every JSON string redacted on its own: escapes cannot split or hide PII
            body = _pseudonymous(orjson.loads(raw), request.app[PSEUDONYMS])
            text = orjson.dumps(_redact_json(body, scrub)).decode()
        except orjson.JSONDecodeError:
            text = scrub.text(raw.decode("utf-8", "replace"))
        out["request_body"] = text
    if trace.response_parts:
        out["response_text"] = scrub.text("".join(trace.response_parts))
    return out


def _pseudonymous(body: object, ids: Pseudonyms) -> object:
    """A JSON body with its ``user`` and ``session_id`` as stored: keyed hashes."""
    if not isinstance(body, dict):
        return body
    return {k: ids.of(v) if k in _ID_FIELDS and isinstance(v, str) else v
            for k, v in body.items()}


def _redact_json(value: object, scrub: Scrubber) -> object:
    if isinstance(value, str):
        return scrub.text(value)
    if isinstance(value, list):
        return [_redact_json(v, scrub) for v in value]
    if isinstance(value, dict):
        return {scrub.text(str(k)): _redact_json(v, scrub) for k, v in value.items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        clean = scrub.text(str(value))  # a card number sent as a JSON number
        return value if clean == str(value) else clean
    return value
