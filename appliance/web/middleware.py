"""Middleware: request ids and the one place errors are rendered as OpenAI error bodies."""

from __future__ import annotations

import logging
import math

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from appliance.errors import (
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestError,
    UnsupportedMediaType,
)
from appliance.observability.trace import RequestTrace
from appliance.web.cache_http import cache_headers
from appliance.web.cors import CORS
from appliance.web.observability import endpoint_label, logged_method, request_done
from appliance.web.state import GATE, KEY, REQUEST_ID_KEY, SCRUBBER, SETTINGS, TRACE

log = logging.getLogger("appliance.web")

REQUEST_ID = "X-Request-Id"


def error_response(err: RequestError) -> web.Response:
    headers = {}
    if err.retry_after is not None and math.isfinite(err.retry_after):
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    return web.Response(status=err.status, body=orjson.dumps(err.body()),
                        content_type="application/json", headers=headers)


def _from_http(exc: web.HTTPException) -> RequestError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge(f"the request body is larger than the limit "
                               f"({exc.text or 'see max_body_bytes'})")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such endpoint; see /v1/models, /v1/chat/completions, "
                        "/v1/completions, /health, /ready")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"method not allowed; use {', '.join(sorted(exc.allowed_methods))}")
    if isinstance(exc, web.HTTPUnsupportedMediaType):
        return UnsupportedMediaType(exc.text or "unsupported media type")
    err = RequestError(exc.text or exc.reason)
    err.status = exc.status
    err.type = "invalid_request_error" if exc.status < 500 else "server_error"
    return err


def response_headers(request: web.Request) -> dict[str, str]:
    """Headers every response carries: the request id, the caller's rate limits, CORS."""
    headers = {REQUEST_ID: request[REQUEST_ID_KEY]}
    headers.update(request.app[CORS].headers(request.headers.get("Origin")))
    key = request.get(KEY)
    if key is not None:
        headers.update(request.app[GATE].rate_headers(key))
    headers.update(cache_headers(request[TRACE]))
    return headers


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place errors become OpenAI error bodies (outermost middleware)."""
    # The client's id only when short and plain: it is logged, audited and sent back.
    request_id = request.app[SCRUBBER].request_id(request.headers.get(REQUEST_ID))
    request[REQUEST_ID_KEY] = request_id
    request[TRACE] = trace = RequestTrace(request_id, endpoint_label(request))
    trace.keep_content = request.app[SETTINGS].log_content
    try:
        try:
            response = await handler(request)
        except RequestError as err:
            trace.error_type = err.type
            if isinstance(err, RateLimited):
                trace.rate_limit_kind = err.kind
            response = error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                trace.status = exc.status  # a redirect, answered by aiohttp
                raise
            http_err = _from_http(exc)
            trace.error_type = http_err.type
            response = error_response(http_err)
        except Exception:
            trace.error_type = "server_error"
            log.exception("unhandled error on %s %s (request %s)", logged_method(request),
                          trace.route, request_id)
            response = error_response(InternalError("internal error; see the server log "
                                                    "with this request id"))
        if not response.prepared:
            response.headers.update(response_headers(request))
        trace.status = response.status
        return response
    finally:  # metrics, access log, audit (also for a client that went away)
        await request_done(request, trace)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API keys on /v1/ (open access on loopback while no key exists; see Gate)."""
    if request.path.startswith("/v1/"):
        request[KEY] = key = await request.app[GATE].authenticate(
            request.headers.get("Authorization"))
        request[TRACE].key_name = key.name
    return await handler(request)
