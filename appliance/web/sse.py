"""Server-sent events framing for OpenAI streams (``data: {json}`` ... ``data: [DONE]``; the
Responses API names each event, ``event: <type>``, and ends without ``[DONE]``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from appliance.web.middleware import response_headers

_DONE = b"data: [DONE]\n\n"


class EventStream:
    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })

    async def open(self) -> None:
        self.response.headers.update(response_headers(self.request))
        await self.response.prepare(self.request)

    async def send(self, bodies: Iterable[dict[str, Any]]) -> None:
        """Write several events in one write (one syscall per engine step)."""
        data = b"".join(b"data: " + orjson.dumps(b) + b"\n\n" for b in bodies)
        if data:
            await self.response.write(data)

    async def send_typed(self, events: Iterable[dict[str, Any]]) -> None:
        """Events named by their ``type`` (the Responses API's framing), in one write."""
        data = b"".join(b"event: " + str(e["type"]).encode() + b"\ndata: " + orjson.dumps(e)
                        + b"\n\n" for e in events)
        if data:
            await self.response.write(data)

    async def done(self) -> None:
        await self.response.write(_DONE)
        await self.response.write_eof()

    async def end(self) -> None:
        """The end of a stream that has no ``[DONE]`` (the Responses API)."""
        await self.response.write_eof()
