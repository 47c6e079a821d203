"""HTTP handlers of generation and health: parse, call the pipeline, map the result (JSON
or SSE)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson
from aiohttp import web

from appliance.admission.keys import Scope
from appliance.api.requests import parse_chat, parse_completion
from appliance.errors import InvalidRequest, PayloadTooLarge, RequestError
from appliance.pipeline.job import Job, RequestContext
from appliance.web.cache_http import cache_directives, session_id
from appliance.web.engines import EngineSet, engine_views
from appliance.web.formatting import ChunkFormatter, completion_body, models_body
from appliance.web.sse import EventStream
from appliance.web.state import (
    ENGINES,
    GATE,
    GUARDS,
    KEY,
    MODELS,
    PIPELINE,
    STARTED_AT,
    TRACE,
)

routes = web.RouteTableDef()


async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"the request body exceeds {exc.text or 'the limit'}") from None
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


async def _respond(request: web.Request, job: Job, ctx: RequestContext) -> web.StreamResponse:
    """The answer names the model that served it (``auto``: the one the rule chose)."""
    pipeline, route = request.app[PIPELINE], job.route
    if not job.options.stream:
        result = await pipeline.complete(job, ctx)
        return json_response(completion_body(job, result, route.model, route.fingerprint))
    fmt = ChunkFormatter(job, route.model, route.fingerprint)
    out = EventStream(request)
    async with contextlib.aclosing(pipeline.stream(job, ctx)) as chunks:
        first = await anext(chunks)  # errors before the first token are still plain JSON
        await out.open()
        opening = fmt.first()
        await out.send([opening, *fmt.chunk(first)] if opening else fmt.chunk(first))
        try:
            async for chunk in chunks:
                await out.send(fmt.chunk(chunk))
        except RequestError as err:  # too late for a status: an error event ends it
            ctx.trace.error_type = err.type
            await out.send([err.body()])
            await out.response.write_eof()
            return out.response
        await out.done()
    return out.response


async def _admit_and_read(request: web.Request) -> tuple[Any, RequestContext]:
    """Scope check and load shedding before the body is even read, then the JSON."""
    gate = request.app[GATE]
    gate.require(request[KEY], Scope.CHAT)
    gate.check_capacity()
    body = await read_json(request)
    ctx = RequestContext(request[KEY], request[TRACE], cache_directives(request),
                         session_id(request, body))
    return body, ctx


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body, ctx = await _admit_and_read(request)
    job = await request.app[PIPELINE].prepare.chat(parse_chat(body), ctx)
    return await _respond(request, job, ctx)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    body, ctx = await _admit_and_read(request)
    job = await request.app[PIPELINE].prepare.completion(parse_completion(body), ctx)
    return await _respond(request, job, ctx)


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    store, engines = request.app[MODELS], request.app[ENGINES]
    available = {s.id for s in store.specs if store.is_available(s)}
    return json_response(models_body(engines.catalog, store.specs, available,
                                     int(request.app[STARTED_AT])))


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
