"""The aiohttp application: the built components in its state, the routes, the
middlewares, and each resource's life cycle.

Resources live in ``cleanup_ctx`` generators registered in dependency order (database,
guard models, the embedded engine, the upstream client session and its health probes,
vector indexes and the background sweeper); aiohttp tears them down in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from appliance.config import Settings
from appliance.guards.rails import Guards
from appliance.upstream.probes import probe_forever, probe_round
from appliance.web import (
    admin_routes,
    console_routes,
    embedding_routes,
    guard_routes,
    key_routes,
    memory_routes,
    observability,
    openapi,
    responses_routes,
    routes,
)
from appliance.web.cors import CORS, CorsPolicy, cors_middleware
from appliance.web.middleware import auth_middleware, errors_middleware
from appliance.web.protocol import Runner
from appliance.web.site import BoundedSite
from appliance.web.state import (
    AUDIT,
    CACHE,
    CACHE_INDEX,
    CONSOLE,
    DATABASE,
    EMBEDDINGS,
    ENCODER,
    ENGINES,
    GATE,
    GUARD_CHECK,
    GUARDS,
    KEYS,
    MEMORY,
    MEMORY_INDEX,
    MEMORY_WRITER,
    METRICS,
    MODELS,
    OPENAPI,
    PIPELINE,
    PSEUDONYMS,
    SCRUBBER,
    SETTINGS,
    STARTED_AT,
    SUMMARISER,
)
from appliance.web.wiring import Components, build

log = logging.getLogger("appliance.web")

# Every route of the HTTP surface (the docs test reads this), and the OpenAPI document's
# operations, module by module: a test checks that the two describe the same surface.
ROUTES = (routes.routes, guard_routes.routes, observability.routes, embedding_routes.routes,
          memory_routes.routes, responses_routes.routes, key_routes.routes,
          admin_routes.routes, console_routes.routes, openapi.routes)
OPERATIONS = (*routes.OPERATIONS, *guard_routes.OPERATIONS, *observability.OPERATIONS,
              *embedding_routes.OPERATIONS, *memory_routes.OPERATIONS,
              *responses_routes.OPERATIONS, *key_routes.OPERATIONS, *admin_routes.OPERATIONS,
              *console_routes.OPERATIONS, *openapi.OPERATIONS)


def make_app(settings: Settings) -> web.Application:
    """Build every component (the model is verified before anything listens) and the app
    that serves them."""
    return application(build(settings))


def application(c: Components) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, cors_middleware, auth_middleware],
                          client_max_size=c.settings.max_body_bytes)
    app[CORS] = CorsPolicy.parse(c.settings.cors_origins)
    app[SETTINGS], app[MODELS], app[ENGINES] = c.settings, c.models, c.engines
    app[PIPELINE], app[DATABASE], app[GATE] = c.pipeline, c.database, c.gate
    app[ENCODER], app[GUARDS], app[GUARD_CHECK] = c.encoder, c.guards, c.guard_check
    app[EMBEDDINGS], app[CACHE], app[CACHE_INDEX] = c.embeddings, c.cache, c.cache_index
    app[MEMORY], app[MEMORY_INDEX], app[SUMMARISER] = c.memory, c.memory_index, c.summariser
    app[METRICS], app[AUDIT] = c.metrics, c.audit
    app[OPENAPI] = openapi.render(OPERATIONS)
    app[MEMORY_WRITER], app[PSEUDONYMS], app[SCRUBBER] = (c.memory_writer, c.pseudonyms,
                                                        c.scrubber)
    app[KEYS], app[CONSOLE] = c.keys, c.console
    app[STARTED_AT] = time.time()
    for ctx in (_database_ctx, _guards_ctx, _engine_ctx, _upstreams_ctx, _indexes_ctx):
        app.cleanup_ctx.append(ctx)
    for table in ROUTES:
        app.add_routes(table)
    return app


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[DATABASE].aclose()


async def _guards_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the guard models off the event loop while the server already listens (requests
    get 503 until then, and /ready says so); a load or self-test failure is reported, not
    fatal, so /ready can explain it."""
    settings, state, encoder = app[SETTINGS], app[GUARDS], app[ENCODER]
    task = None
    if state.enabled:
        def load() -> Guards:
            guards = Guards.load(default_policy=settings.guard_policy, encoder=encoder,
                                 threads=settings.guard_threads)
            guards.self_test()
            return guards

        async def run() -> None:
            try:
                state.loaded(await asyncio.to_thread(load))
            except Exception as exc:  # reported on /ready and to every request
                log.error("guards failed to load: %s", exc)
                state.failed(str(exc))

        task = asyncio.create_task(run())
    yield
    if task is not None:
        task.cancel()
    state.close()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINES].embedded
    if engine is not None:
        engine.start(asyncio.get_running_loop())
    yield
    if engine is not None:
        await asyncio.to_thread(engine.stop)


async def _upstreams_ctx(app: web.Application) -> AsyncIterator[None]:
    """The client session on this loop; a first round of probes before the server listens
    (discovered models are routable at once), then probes every interval."""
    engines = app[ENGINES]
    if not engines.upstreams:
        yield
        return
    await engines.http.open()
    await probe_round(engines.upstreams, engines.router)
    task = asyncio.create_task(probe_forever(
        engines.upstreams, engines.router, app[SETTINGS].upstream_probe_interval_s))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await engines.http.close()


async def _sweeper(app: web.Application, interval: float) -> None:
    """Cache sweep, memory GC, session summaries, then save both vector indexes; every
    ``interval`` s."""
    while True:
        await asyncio.sleep(interval)
        try:
            await app[CACHE].sweep()
            await app[MEMORY].gc()
            embedded = app[ENGINES].embedded
            if embedded is None or embedded.ready:
                await app[SUMMARISER].run_once()
            await app[CACHE_INDEX].asave()
            await app[MEMORY_INDEX].asave()
            counts, size = await app[MEMORY].usage()
            for tier, n in counts.items():
                app[METRICS].set_memory_entries(tier, n)
            app[METRICS].set_memory_store_bytes(size)
        except Exception:
            log.exception("cache/memory sweep failed; retrying in %.0fs", interval)


async def _indexes_ctx(app: web.Application) -> AsyncIterator[None]:
    for name, index in (("cache", app[CACHE_INDEX]), ("memory", app[MEMORY_INDEX])):
        report = await asyncio.to_thread(index.open)
        log.info("%s index: %d rows, %d scopes loaded, %d repaired, %d rebuilt", name,
                 report.rows, report.loaded, report.repaired, report.rebuilt)
    task = asyncio.create_task(_sweeper(app, app[SETTINGS].cache_sweep_interval_s))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(Exception):
        await app[CACHE].sweep()
        await app[MEMORY].gc()
    await app[CACHE_INDEX].aclose()
    await app[MEMORY_INDEX].aclose()


async def serve(settings: Settings, app: web.Application, *,
                ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve ``app`` (made by :func:`make_app` before the loop started) until ``stop`` is
    set (or forever), then drain and clean up. Used by the CLI and by the tests."""
    # keepalive_timeout also runs from the moment a connection is made, so it bounds how
    # long a client may take to send its headers, not only idle keep-alive time.
    runner = Runner(app, handler_cancellation=True, access_log=None,
                    keepalive_timeout=settings.idle_timeout_s)
    await runner.setup()
    site = BoundedSite(runner, settings.host, settings.port,
                       max_connections=settings.max_connections)
    await site.start()
    log.info("listening on http://%s:%d (engines %s)", settings.host, settings.port,
             ", ".join(e.name for e in app[ENGINES].router.engines))
    if ready is not None:
        ready.set()
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
        await drain(app)
    finally:
        await runner.cleanup()


async def drain(app: web.Application) -> None:
    """Graceful drain: new requests get 503 while in-flight ones finish (up to the
    drain timeout); the server keeps listening meanwhile so nobody sees a refused
    connection."""
    gate = app[GATE]
    gate.close()
    stats = gate.stats()
    timeout = app[SETTINGS].drain_timeout
    log.info("draining: %d running, %d queued refused; waiting up to %.0fs",
             stats.running, stats.queued, timeout)
    if not await gate.wait_idle(timeout):
        log.warning("drain timeout: %d requests still running are cut off",
                    gate.stats().running)
