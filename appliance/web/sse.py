"""Server-sent events framing for OpenAI streams (``data: {json}`` ... ``data: [DONE]``; the
Responses API names each event, ``event: <type>``, and ends without ``[DONE]``).

A write waits while the client's socket buffer is full (backpressure); a client that reads
nothing for ``stall_timeout`` seconds is given up on (:class:`ClientStalled`): the caller
closes the connection, which cancels the generation and frees its slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from appliance.web.middleware import response_headers

_DONE = b"data: [DONE]\n\n"


class ClientStalled(Exception):
    """The client stopped reading a stream."""


class EventStream:
    def __init__(self, request: web.Request, *, stall_timeout: float) -> None:
        self.request = request
        self._stall_timeout = stall_timeout
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
            await self._write(data)

    async def send_typed(self, events: Iterable[dict[str, Any]]) -> None:
        """Events named by their ``type`` (the Responses API's framing), in one write."""
        data = b"".join(b"event: " + str(e["type"]).encode() + b"\ndata: " + orjson.dumps(e)
                        + b"\n\n" for e in events)
        if data:
            await self._write(data)

    async def done(self) -> None:
        await self._write(_DONE)
        await self.response.write_eof()

    async def end(self) -> None:
        """The end of a stream that has no ``[DONE]`` (the Responses API)."""
        await self.response.write_eof()

    async def _write(self, data: bytes) -> None:
        try:
            await asyncio.wait_for(self.response.write(data), self._stall_timeout)
        except TimeoutError:
            raise ClientStalled(f"the client read nothing for {self._stall_timeout:g} s") \
                from None
