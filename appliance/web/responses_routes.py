"""``POST /v1/responses``: a text turn of the Responses API through the same pipeline as
chat (guards, cache, memory, admission): parse, prepare the chat job, map the result to a
``response`` object or its event stream."""

from __future__ import annotations

from aiohttp import web

from appliance.api import schema
from appliance.api.responses import parse_responses
from appliance.pipeline.choices import complete_jobs
from appliance.web.cache_http import GENERATION_HEADERS
from appliance.web.openapi import Operation
from appliance.web.responses_format import ResponseEvents, ResponseShape
from appliance.web.routes import admit_and_read, context, json_response, relay
from appliance.web.state import PIPELINE

routes = web.RouteTableDef()


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    body = await admit_and_read(request)
    req = parse_responses(body)
    ctx = context(request, body, req.chat.options.user)
    pipeline = request.app[PIPELINE]
    job = await pipeline.prepare.chat(req.chat, ctx)
    shape = ResponseShape(job, req, job.route.model)
    if not job.options.stream:
        (answer,) = await complete_jobs(pipeline, [job], ctx)
        return json_response(shape.body(text=answer.text, finish=answer.finish_reason,
                                        usage=answer.usage))
    events = ResponseEvents(shape)
    return await relay(request, ctx, pipeline.stream(job, ctx),
                       lambda chunk, first: [*events.opening(), *events.chunk(chunk)] if first
                       else events.chunk(chunk), typed=True)


OPERATIONS = (
    Operation("POST", "/v1/responses", "the Responses API for text turns, streamed (typed SSE "
              "events) or not", body=schema.RESPONSES, params=GENERATION_HEADERS,
              errors=(404, 429, 503), media=("application/json", "text/event-stream")),
)
