"""``POST /v1/responses``: a text turn of the Responses API through the same pipeline as
chat (guards, cache, memory, admission): parse, prepare the chat job, map the result to a
``response`` object or its event stream."""

from __future__ import annotations

import contextlib

from aiohttp import web

from appliance.api.responses import parse_responses
from appliance.pipeline.choices import complete_jobs
from appliance.web.responses_format import ResponseEvents, ResponseShape
from appliance.web.routes import admit_and_read, json_response
from appliance.web.sse import EventStream
from appliance.web.state import PIPELINE, SERVED

routes = web.RouteTableDef()


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    body, ctx = await admit_and_read(request)
    req = parse_responses(body)
    pipeline, served = request.app[PIPELINE], request.app[SERVED]
    job = await pipeline.prepare.chat(req.chat, ctx)
    shape = ResponseShape(job, req, served.id)
    if not job.options.stream:
        (answer,) = await complete_jobs(pipeline, [job], ctx)
        return json_response(shape.body(text=answer.text, finish=answer.finish_reason,
                                        usage=answer.usage))
    events = ResponseEvents(shape)
    out = EventStream(request)
    async with contextlib.aclosing(pipeline.stream(job, ctx)) as chunks:
        first = await anext(chunks)  # errors before the first token are still plain JSON
        await out.open()
        await out.send_typed([*events.opening(), *events.chunk(first)])
        async for chunk in chunks:
            await out.send_typed(events.chunk(chunk))
        await out.end()
    return out.response
