"""The generation of one job on the engines serving its model, with failover.

:class:`FailoverStream` is an engine's event stream as the pipeline consumes it. When the
engine fails before it produced any event (unreachable, refusing, failing, or busy), so
nothing reached the client, the stream moves the request to another engine serving the
same model (the router's pick, excluding those tried): its admission slot is moved to that
engine's lane, then the request is sent there. A failure after the first event, a timeout,
or no engine left is raised as it is. Every outcome is reported to the router, which
ejects an engine after consecutive failures.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from appliance.admission.gate import Gate, Ticket
from appliance.engine.interface import EventStream, GenerationEngine
from appliance.engine.types import Event, Finished, GenerationRequest
from appliance.errors import BadGateway, GatewayTimeout, Overloaded, Unavailable
from appliance.observability.trace import RequestTrace
from appliance.routing.catalog import Route
from appliance.routing.router import Router

log = logging.getLogger("appliance.routing")


class FailoverStream:
    def __init__(self, router: Router, gate: Gate, ticket: Ticket, route: Route,
                 request: GenerationRequest, engine: GenerationEngine,
                 trace: RequestTrace) -> None:
        self._router = router
        self._gate = gate
        self._ticket = ticket
        self._route = route
        self._request = request
        self._engine = engine
        self._trace = trace
        self._current: EventStream | None = None
        self._cancelled = False

    def start(self) -> None:
        """Send the request to the first engine now (the embedded engine then prefills
        while the input classifiers run); otherwise the first iteration sends it."""
        if self._current is None:
            self._current = self._engine.submit(self._request)

    def cancel(self) -> None:
        self._cancelled = True
        if self._current is not None:
            self._current.cancel()

    async def __aiter__(self) -> AsyncIterator[Event]:
        tried: list[str] = []
        engine = self._engine
        self.start()
        try:
            while not self._cancelled:
                handle = self._current
                assert handle is not None
                produced = False
                try:
                    async for event in handle:
                        produced = True
                        if isinstance(event, Finished):
                            self._router.report(engine.name, event.reason != "error")
                        yield event
                    return
                except (BadGateway, Overloaded) as exc:
                    self._failed(engine, exc)
                    if produced:
                        raise
                    tried.append(engine.name)
                    engine = await self._next(tried, exc)
                    self._current = engine.submit(self._request)
                except GatewayTimeout as exc:
                    self._failed(engine, exc)
                    raise
        finally:
            self.cancel()

    def _failed(self, engine: GenerationEngine, exc: Exception) -> None:
        if isinstance(exc, Overloaded):
            return  # busy is not broken
        if self._router.report(engine.name, False):
            log.warning("engine %s ejected after consecutive failures", engine.name)

    async def _next(self, tried: list[str], failure: BadGateway | Overloaded
                    ) -> GenerationEngine:
        """Another engine for the route, its slot taken; the failure if none is left."""
        try:
            engine = self._router.pick(self._route, exclude=tried)
        except Unavailable:
            raise failure from None
        await self._gate.transfer(self._ticket, engine.name)
        self._trace.failovers += 1
        self._trace.engine = engine.name
        log.info("request %s: %s failed before answering, retrying on %s",
                 self._trace.request_id, tried[-1], engine.name)
        return engine
