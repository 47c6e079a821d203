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
from appliance.errors import InvalidRequest, PayloadTooLarge
from appliance.pipeline.job import Job, RequestContext
from appliance.web.cache_http import cache_directives, session_id
from appliance.web.extensions import FIELD as EXTRA_FIELD
from appliance.web.extensions import appliance_extra
from appliance.web.formatting import ChunkFormatter, completion_body, models_body
from appliance.web.sse import EventStream
from appliance.web.state import (
    ENGINE,
    GATE,
    GUARDS,
    KEY,
    MODELS,
    PIPELINE,
    SERVED,
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
    pipeline, served = request.app[PIPELINE], request.app[SERVED]
    if not job.options.stream:
        result = await pipeline.complete(job, ctx)
        body = completion_body(job, result, served.id, served.fingerprint)
        return json_response(_with_extra(body, appliance_extra(job, ctx.trace)))
    fmt = ChunkFormatter(job, served.id, served.fingerprint)
    out = EventStream(request)
    async with contextlib.aclosing(pipeline.stream(job, ctx)) as chunks:
        first = await anext(chunks)  # errors before the first token are still plain JSON
        await out.open()
        opening = fmt.first()
        bodies = [opening, *fmt.chunk(first)] if opening else fmt.chunk(first)
        if bodies:
            bodies[0] = _with_extra(bodies[0], appliance_extra(job, ctx.trace))
        await out.send(bodies)
        async for chunk in chunks:
            await out.send(fmt.chunk(chunk))
        await out.done()
    return out.response


def _with_extra(body: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    return body if extra is None else {**body, EXTRA_FIELD: extra}


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
    store, served = request.app[MODELS], request.app[SERVED]
    available = {s.id for s in store.specs if store.is_available(s)}
    return json_response(models_body(store.specs, served.model.spec, available,
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
    """Ready once the model is loaded, a first decode succeeded and (when on) the guards
    are loaded and passed their self-test; otherwise 503 saying which part is not."""
    engine, guards = request.app[ENGINE], request.app[GUARDS]
    status = guards.status
    is_ready = engine.ready and status in ("ready", "off")
    body: dict[str, Any] = {
        "status": "ready" if is_ready else engine.state if not engine.ready else
        f"guards {status}",
        "model": request.app[SERVED].id, "guards": status,
        "uptime_s": round(time.time() - request.app[STARTED_AT], 3)}
    if engine.error:
        body["error"] = engine.error
    if guards.error:
        body["guards_error"] = guards.error
    if engine.ready:
        body["backend"] = engine.backend
    return json_response(body, 200 if is_ready else 503)
