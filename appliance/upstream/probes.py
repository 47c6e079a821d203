"""Health probes of the upstream engines, in the background.

Every ``interval`` seconds each upstream is asked ``GET /v1/models`` (all at once): an
answer counts as a success for its :class:`~appliance.routing.health.Health` and refreshes
the models of an engine configured without a list; no answer counts as a failure, like a
failed request. The first round runs at start-up, before the server listens, so discovered
models are routable from the first request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from appliance.errors import RequestError
from appliance.routing.router import Router
from appliance.upstream.client import UpstreamEngine

log = logging.getLogger("appliance.upstream")


async def probe_once(engine: UpstreamEngine, router: Router) -> bool:
    try:
        models = await engine.probe()
    except RequestError as exc:
        if router.report(engine.name, False):
            log.warning("upstream %s ejected after failed probes (%s)", engine.name,
                        exc.code)
        return False
    health = router.health(engine.name)
    was = health.state if health is not None else "up"
    router.report(engine.name, True)
    if health is not None and was != health.state:
        log.info("upstream %s is back (%d models)", engine.name, len(models))
    return True


async def probe_round(engines: Sequence[UpstreamEngine], router: Router) -> None:
    await asyncio.gather(*(probe_once(e, router) for e in engines))


async def probe_forever(engines: Sequence[UpstreamEngine], router: Router,
                        interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await probe_round(engines, router)
        except Exception:
            log.exception("upstream probes failed; retrying in %.1fs", interval)
