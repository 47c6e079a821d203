"""HTTP handlers of generation and health: parse, call the pipeline, map the result (JSON
or SSE)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson
from aiohttp import web

from appliance.admission.keys import Scope
from appliance.api import schema
from appliance.api.requests import parse_chat, parse_completion
from appliance.errors import (
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
)
from appliance.pipeline.choices import complete_jobs, stream_jobs
from appliance.pipeline.job import Chunk, Job, RequestContext
from appliance.web.cache_http import GENERATION_HEADERS, cache_directives, session_id
from appliance.web.choice_format import ChoicesFormatter, choices_body
from appliance.web.engines import EngineSet, engine_views
from appliance.web.extensions import FIELD as EXTRA_FIELD
from appliance.web.extensions import appliance_extra
from appliance.web.formatting import models_body
from appliance.web.observability import CLIENT_DISCONNECTED
from appliance.web.openapi import Operation, Param
from appliance.web.protocol import http_error
from appliance.web.sse import ClientStalled, EventStream
from appliance.web.state import (
    ENGINES,
    GATE,
    GUARDS,
    KEY,
    MODELS,
    PIPELINE,
    PSEUDONYMS,
    SETTINGS,
    STARTED_AT,
    TRACE,
)

routes = web.RouteTableDef()


async def read_json(request: web.Request) -> Any:
    timeout = request.app[SETTINGS].body_timeout_s
    try:
        raw = await asyncio.wait_for(request.read(), timeout)
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"the request body exceeds {exc.text or 'the limit'}") from None
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    except web.RequestPayloadError as exc:  # bad gzip, bad chunks, a short body
        raise http_error(exc) from None
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        what = "is not valid UTF-8" if "utf-8" in str(exc).lower() else "is not valid JSON"
        raise InvalidRequest(f"the request body {what}: {exc}") from None


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json")


async def _respond(request: web.Request, jobs: list[Job],
                   ctx: RequestContext) -> web.StreamResponse:
    """The answer names the model that served it (``auto``: the one the rule chose)."""
    pipeline, route = request.app[PIPELINE], jobs[0].route
    if not jobs[0].options.stream:
        results = await complete_jobs(pipeline, jobs, ctx)
        body = choices_body(jobs, results, route.model, route.fingerprint)
        return json_response(_with_extra(body, appliance_extra(jobs[0], ctx.trace)))
    fmt = ChoicesFormatter(jobs, route.model, route.fingerprint)

    def render(chunk: Chunk, first: bool) -> list[dict[str, Any]]:
        if not first:
            return fmt.chunk(chunk)
        bodies = [*fmt.first(), *fmt.chunk(chunk)]
        if bodies:  # (the extra is known once the input rail and the first chunk are)
            bodies[0] = _with_extra(bodies[0], appliance_extra(jobs[0], ctx.trace))
        return bodies

    return await relay(request, ctx, stream_jobs(pipeline, jobs, ctx), render)


def _with_extra(body: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    return body if extra is None else {**body, EXTRA_FIELD: extra}


async def relay(request: web.Request, ctx: RequestContext,
                chunks: AsyncGenerator[Chunk, None],
                render: Callable[[Chunk, bool], list[dict[str, Any]]], *,
                typed: bool = False) -> web.StreamResponse:
    """``chunks`` as server-sent events, each rendered by ``render(chunk, is_first)``
    (``typed``: the Responses API's named events, no ``[DONE]``)."""
    out = EventStream(request, stall_timeout=request.app[SETTINGS].stream_stall_timeout_s)
    send = out.send_typed if typed else out.send
    async with contextlib.aclosing(chunks) as source:
        first = await anext(source)  # errors before the first token are still plain JSON
        await out.open()
        answered = False
        try:
            await send(render(first, True))
            async for chunk in source:
                await send(render(chunk, False))
            answered = True  # what is left is the end marker
            await (out.end() if typed else out.done())
        except ClientStalled:
            # Leaving the block cancels the generation; the connection is of no more use.
            ctx.trace.error_type = "client_stalled"
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            # The client left mid-answer (recorded as gone), or closed the connection once
            # it had the whole answer, before the end marker's last bytes (nothing lost).
            if not answered:
                ctx.trace.error_type = CLIENT_DISCONNECTED
        except RequestError as err:  # too late for a status: an error event ends it
            ctx.trace.error_type = err.type
            await (out.send_typed([{"type": "error", **err.body()}]) if typed
                   else out.send([err.body()]))
            await out.response.write_eof()
    return out.response


async def admit_and_read(request: web.Request) -> Any:
    """Scope check and load shedding before the body is even read, then the JSON."""
    gate = request.app[GATE]
    gate.require(request[KEY], Scope.CHAT)
    gate.check_capacity()
    return await read_json(request)


def context(request: web.Request, body: Any, user: str | None) -> RequestContext:
    """Who asks: the key, and the client's ``user`` and session as their keyed hashes
    (hashed here, before any lookup or store)."""
    ids = request.app[PSEUDONYMS]
    return RequestContext(request[KEY], request[TRACE], cache_directives(request),
                          ids.maybe(session_id(request, body)), ids.of(user or ""))


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await admit_and_read(request)
    req = parse_chat(body)
    ctx = context(request, body, req.options.user)
    job = await request.app[PIPELINE].prepare.chat(req, ctx)
    return await _respond(request, [job], ctx)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    body = await admit_and_read(request)
    req = parse_completion(body)
    ctx = context(request, body, req.options.user)
    jobs = await request.app[PIPELINE].prepare.completions(req, ctx)
    return await _respond(request, jobs, ctx)


def _models(request: web.Request) -> dict[str, Any]:
    store, engines = request.app[MODELS], request.app[ENGINES]
    available = {s.id for s in store.specs if store.is_available(s)}
    return models_body(engines.catalog, store.specs, available, int(request.app[STARTED_AT]))


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    return json_response(_models(request))


@routes.get("/v1/models/{model_id}")
async def model(request: web.Request) -> web.Response:
    """One row of /v1/models (``default`` names the served model)."""
    model_id = request.match_info["model_id"]
    for row in _models(request)["data"]:
        if row["id"] == model_id:
            return json_response(row)
    raise ModelNotFound(f"the model {model_id!r} does not exist; GET /v1/models lists them",
                        param="model")


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: always 200; ``degraded`` while the queue is above 80% or slots are full."""
    stats = request.app[GATE].stats()
    return json_response({
        "status": "degraded" if stats.degraded or stats.draining else "ok",
        "running": stats.running, "queued": stats.queued, "slots": stats.slots,
        "queue_depth": stats.depth, "draining": stats.draining})


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Ready once the embedded model (if any) is loaded and a first decode succeeded, some
    upstream engine (if any) takes requests, and (when on) the guards are loaded and passed
    their self-test; otherwise 503 saying which part is not. Each engine is reported."""
    engines, guards = request.app[ENGINES], request.app[GUARDS]
    engine, status = engines.embedded, guards.status
    views = engine_views(engines, request.app[GATE])
    upstreams_ok = not engines.upstreams or any(v.up for v in views if v.kind == "openai")
    local_ok = engine is None or engine.ready
    is_ready = local_ok and upstreams_ok and status in ("ready", "off")
    state = ("ready" if is_ready else engine.state if engine is not None and not local_ok
             else "no upstream engine reachable" if not upstreams_ok else f"guards {status}")
    body: dict[str, Any] = {
        "status": state, "model": engines.served.id if engines.served else None,
        "guards": status, "uptime_s": round(time.time() - request.app[STARTED_AT], 3),
        "engines": [{"name": v.name, "kind": v.kind, "up": v.up, "outstanding": v.outstanding,
                     "slots": v.slots, **_engine_detail(engines, v.name)} for v in views]}
    if engine is not None and engine.error:
        body["error"] = engine.error
    if guards.error:
        body["guards_error"] = guards.error
    if engine is not None and engine.ready:
        body["backend"] = engine.backend
    return json_response(body, 200 if is_ready else 503)


_GENERATED = ("application/json", "text/event-stream")
OPERATIONS = (
    Operation("POST", "/v1/chat/completions", "chat, streamed (SSE) or not",
              body=schema.CHAT, params=GENERATION_HEADERS, errors=(404, 429, 503),
              media=_GENERATED),
    Operation("POST", "/v1/completions", "text completion, streamed (SSE) or not",
              body=schema.COMPLETION, params=GENERATION_HEADERS, errors=(404, 429, 503),
              media=_GENERATED),
    Operation("GET", "/v1/models", "every model an engine serves (\"default\" and \"auto\" "
              "among them), then the manifest's other models"),
    Operation("GET", "/v1/models/{model_id}", "one model (\"default\" names the served one)",
              params=(Param("model_id", "path", {"type": "string"}, required=True),),
              errors=(404,)),
    Operation("GET", "/health", "liveness: ok, or degraded while the queue is nearly full",
              auth="none"),
    Operation("GET", "/ready", "200 once the model and the guards are ready, else 503",
              auth="none", errors=(503,)),
)


def _engine_detail(engines: EngineSet, name: str) -> dict[str, Any]:
    """What ``/ready`` says of one engine beyond its view: state and models (never its
    address or key)."""
    if engines.embedded is not None and name == engines.embedded.name:
        return {"state": engines.embedded.state,
                "models": [engines.served.id] if engines.served else []}
    upstream = next(u for u in engines.upstreams if u.name == name)
    health = engines.router.health(name)
    return {"state": health.state if health is not None else "up",
            "models": list(upstream.models),
            "retry_in_s": round(health.retry_after(), 3) if health is not None else 0.0}
