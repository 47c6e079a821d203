"""Which engine takes the next request of a route, and what each request's outcome says.

A route served by the embedded engine goes there. Otherwise, among the upstream engines
serving the route's model that are not ejected (:mod:`appliance.routing.health`) and not
already tried by this request: the one with the fewest outstanding requests (running or
queued in its admission lane), ties taken in turn. No engine left is a 503 with
``Retry-After`` set to the soonest re-admission.

The pipeline reports every request's outcome (``report``) and the probes every probe's;
both feed the same :class:`~appliance.routing.health.Health`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from appliance.engine.interface import GenerationEngine
from appliance.errors import Unavailable
from appliance.routing.catalog import Route
from appliance.routing.health import Health


class Upstream(GenerationEngine, Protocol):
    @property
    def models(self) -> tuple[str, ...]: ...


class Router:
    def __init__(self, embedded: GenerationEngine | None, upstreams: Sequence[Upstream],
                 health: Mapping[str, Health], load: Callable[[str], int]) -> None:
        self._embedded = embedded
        self._upstreams = tuple(upstreams)
        self._health = dict(health)
        self._load = load
        self._turn = itertools.count()

    @property
    def engines(self) -> tuple[GenerationEngine, ...]:
        return ((self._embedded,) if self._embedded is not None else ()) + self._upstreams

    def health(self, name: str) -> Health | None:
        """An upstream's health (None for the embedded engine)."""
        return self._health.get(name)

    def pick(self, route: Route, exclude: Collection[str] = ()) -> GenerationEngine:
        if route.embedded:
            if self._embedded is None:
                raise Unavailable("no embedded engine runs on this server")
            return self._embedded
        serving = [u for u in self._upstreams
                   if route.model in u.models and u.name not in exclude]
        ready = [u for u in serving if self._health[u.name].available]
        if not ready:
            waits = [self._health[u.name].retry_after() for u in serving]
            raise Unavailable(f"no engine serving {route.model!r} is reachable now "
                              f"({len(serving)} out after failures); retry later",
                              retry_after=min(waits) if waits else 5.0)
        turn = next(self._turn)
        n = len(ready)
        best = min(range(n), key=lambda i: (self._load(ready[i].name), (i - turn) % n))
        return ready[best]

    def report(self, name: str, ok: bool) -> bool:
        """One request's (or probe's) outcome; True when a failure ejected the engine."""
        health = self._health.get(name)
        if health is None:
            return False
        if ok:
            health.success()
            return False
        return health.failure()
