"""The one HTTP client session every upstream engine shares.

An ``aiohttp.ClientSession`` belongs to the event loop it is made on, so the wiring builds
this holder before the loop runs and the app's ``cleanup_ctx`` opens it at start-up and
closes it at shutdown. No connection limit of its own: each engine's admission lane bounds
how many requests it gets. The environment's proxy settings are ignored (``trust_env``
off): an air-gapped appliance talks to the engines it was given, directly.
"""

from __future__ import annotations

import aiohttp

from appliance.errors import NotReady


class HttpClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
                trust_env=False, raise_for_status=False)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise NotReady("the upstream client is not started yet; retry shortly",
                           retry_after=1)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
