"""HTTP handlers: parse, call the service, map the result (JSON or SSE)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from appliance.admission.gate import Gate
from appliance.admission.keys import Scope
from appliance.api.requests import parse_chat, parse_completion
from appliance.errors import InvalidRequest, PayloadTooLarge
from appliance.pipeline_types import Prepared
from appliance.service import GenerationService
from appliance.web.cache_http import cache_directives, session_id
from appliance.web.formatting import ChunkFormatter, completion_body, models_body
from appliance.web.keys import GATE, KEY, SERVICE, STARTED_AT, STORE, TRACE
from appliance.web.sse import EventStream

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


async def _respond(request: web.Request, service: GenerationService,
                   prepared: Prepared) -> web.StreamResponse:
    model, fp = service.model_id, service.fingerprint
    key, trace = request[KEY], request[TRACE]
    if not prepared.options.stream:
        result = await service.complete(prepared, key, trace)
        return web.Response(body=orjson.dumps(completion_body(prepared, result, model, fp)),
                            content_type="application/json")
    fmt = ChunkFormatter(prepared, model, fp)
    chunks = service.stream(prepared, key, trace)
    out = EventStream(request)
    try:
        first = await anext(chunks)  # errors before the first token are still plain JSON
        await out.open()
        opening = fmt.first()
        await out.send([opening, *fmt.chunk(first)] if opening else fmt.chunk(first))
        async for chunk in chunks:
            await out.send(fmt.chunk(chunk))
        await out.done()
    finally:
        await chunks.aclose()
    return out.response


async def _admit_and_read(request: web.Request) -> Any:
    """Scope check and load shedding before the body is even read, then the JSON."""
    Gate.require(request[KEY], Scope.CHAT)
    request.app[GATE].queue.check_capacity()
    return await read_json(request)


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await _admit_and_read(request)
    service = request.app[SERVICE]
    directives = cache_directives(request)  # memory and cache (issue 5)
    prepared = await service.prepare_chat(parse_chat(body), request[KEY], request[TRACE],
                                          directives, session_id(request, body))
    return await _respond(request, service, prepared)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    body = await _admit_and_read(request)
    service = request.app[SERVICE]
    directives = cache_directives(request)  # memory and cache (issue 5)
    prepared = await service.prepare_completion(parse_completion(body), request[KEY],
                                                request[TRACE], directives)
    return await _respond(request, service, prepared)


@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    service, store = request.app[SERVICE], request.app[STORE]
    available = {s.id for s in store.specs if store.is_available(s)}
    body = models_body(store.specs, service.served.spec, available,
                       int(request.app[STARTED_AT]))
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness: always 200; ``degraded`` while the queue is above 80% or slots are full."""
    stats = request.app[GATE].queue.stats()
    body = {"status": "degraded" if stats.degraded or stats.draining else "ok",
            "running": stats.running, "queued": stats.queued, "slots": stats.slots,
            "queue_depth": stats.depth, "draining": stats.draining}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """Ready once the model is loaded, a first decode succeeded and (when on) the guards
    are loaded and passed their self-test; otherwise 503 saying which part is not."""
    service = request.app[SERVICE]
    engine = service.engine
    guards = ("off" if not service.guards_enabled else "ready" if service.guards is not None
              else "failed" if service.guards_error is not None else "loading")
    is_ready = engine.ready and guards in ("ready", "off")
    body: dict[str, Any] = {
        "status": "ready" if is_ready else engine.state if not engine.ready else
        f"guards {guards}",
        "model": service.model_id, "guards": guards,
        "uptime_s": round(time.time() - request.app[STARTED_AT], 3)}
    if engine.error:
        body["error"] = engine.error
    if service.guards_error:
        body["guards_error"] = service.guards_error
    if engine.ready:
        body["backend"] = engine.backend
    return web.Response(status=200 if is_ready else 503, body=orjson.dumps(body),
                        content_type="application/json")
