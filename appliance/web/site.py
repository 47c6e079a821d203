"""The listening socket, with a cap on open connections.

aiohttp accepts every connection it is offered; each one costs a file descriptor, a
protocol object and, once a request arrives, a task. Past ``max_connections`` a new
connection is answered at once with a complete ``503 server_overloaded`` (the OpenAI error
shape, ``Retry-After``) and closed, before any of its bytes are read, so a flood of idle or
slow connections cannot starve the clients already being served. (Connections that never
finish their headers are closed after ``idle_timeout_s`` by aiohttp's own keep-alive timer,
which starts when a connection is made.)
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from appliance.errors import Overloaded

_REFUSAL = Overloaded("too many open connections; retry shortly", retry_after=1)
_BODY = orjson.dumps(_REFUSAL.body())
_RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
             + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_RESPONSE)
        transport.close()


class BoundedSite(web.TCPSite):
    """A TCP site that serves at most ``max_connections`` connections at once."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *,
                 max_connections: int) -> None:
        super().__init__(runner, host, port)
        self._max_connections = max_connections

    async def start(self) -> None:
        await web.BaseSite.start(self)  # (registers the site; TCPSite.start would bind too)
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.Protocol:
            if len(server.connections) >= self._max_connections:
                return _Refuse()
            return server()

        self._server = await asyncio.get_running_loop().create_server(
            protocol, self._host, self._port, backlog=self._backlog)
