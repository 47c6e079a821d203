"""Wiring: settings -> model store -> engine -> service -> aiohttp app, and start-up.

Resources live in ``cleanup_ctx`` generators registered in dependency order; aiohttp tears
them down in reverse.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyStore
from appliance.admission.limiter import RateLimiter
from appliance.admission.queue import AdmissionQueue
from appliance.config import Settings
from appliance.cpu_turns import CpuTurns
from appliance.embed import Encoder
from appliance.engine.engine import Engine, EngineConfig
from appliance.engine.models import ModelStore
from appliance.errors import ConfigError
from appliance.guards.policy import load_policy
from appliance.guards.rails import Guards
from appliance.service import GenerationService
from appliance.store.db import Database
from appliance.web import observability
from appliance.web.embedding_routes import routes as embedding_routes
from appliance.web.guard_routes import guard_routes
from appliance.web.keys import (
    DATABASE,
    ENCODER,
    ENGINE,
    GATE,
    SERVED,
    SERVICE,
    SETTINGS,
    STARTED_AT,
    STORE,
)
from appliance.web.mem_wiring import wire_memory_and_cache
from appliance.web.memory_routes import routes as memory_routes
from appliance.web.middleware import auth_middleware, errors_middleware
from appliance.web.routes import routes

log = logging.getLogger("appliance.web")


async def _database_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[DATABASE].aclose()


async def _guards_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the guard models off the event loop while the server already listens (requests
    get 503 until then, and /ready says so); a load or self-test failure is reported, not
    fatal, so /ready can explain it."""
    settings, service, encoder = app[SETTINGS], app[SERVICE], app[ENCODER]
    task = None
    if settings.guards:
        def load() -> Guards:
            guards = Guards.load(default_policy=settings.guard_policy, encoder=encoder)
            guards.self_test()
            return guards

        async def run() -> None:
            try:
                service.guards = await asyncio.to_thread(load)
            except Exception as exc:  # reported on /ready and to every request
                log.error("guards failed to load: %s", exc)
                service.guards_error = str(exc)

        task = asyncio.create_task(run())
    yield
    if task is not None:
        task.cancel()
    if service.guards is not None:
        service.guards.close()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    engine.start(asyncio.get_running_loop())
    yield
    await asyncio.to_thread(engine.stop)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _make_gate(settings: Settings, db: Database) -> Gate:
    keys = KeyStore(db, cache_ttl_s=settings.key_cache_ttl)
    open_access = is_loopback(settings.host)
    if not open_access and not keys.list_sync(include_revoked=False):
        raise ConfigError(
            f"refusing to serve on {settings.host} (not loopback) without API keys: create "
            f"one with `appliance keys create --name NAME`, or bind 127.0.0.1")
    queue = AdmissionQueue(slots=settings.parallel, depth=settings.queue_depth,
                           timeout_s=settings.queue_timeout_s)
    return Gate(keys, RateLimiter(), queue, open_access=open_access,
                key_count_ttl_s=settings.key_cache_ttl)


def make_app(settings: Settings) -> web.Application:
    """Build the app. Resolves and verifies the model (sha256) before anything listens;
    the engine loads it in its own thread once the server is up (see /ready)."""
    store = ModelStore(settings.manifest, settings.models_dir)
    spec = store.resolve(settings.model)
    served = store.verify(spec)
    if settings.guards:
        load_policy(settings.guard_policy)  # a bad policy stops start-up with its error
    # The shared sentence encoder (pinned, verified): guards, cache, memory, embeddings.
    # CPU turn-taking between the engine and the encoder (see cpu_turns.py); with layers
    # offloaded to a GPU the engine's decode leaves the CPU to the encoder: no turns.
    turns = CpuTurns() if settings.cpu_turns and settings.n_gpu_layers == 0 else None
    encoder = Encoder.from_manifest(threads=settings.guard_threads, turns=turns)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database)
    try:
        gate = _make_gate(settings, db)
    except BaseException:
        db.close()
        raise
    engine = Engine(EngineConfig(
        model_path=served.path, parallel=settings.parallel, ctx_size=settings.ctx_size,
        batch_size=settings.batch_size, n_threads=settings.n_threads,
        n_gpu_layers=settings.n_gpu_layers, split_mode=settings.split_mode,
        main_gpu=settings.main_gpu, prefix_reuse_min=settings.prefix_reuse_min,
        default_seed=settings.seed,
    ), turns=turns)
    service = GenerationService(engine, gate, served, store.specs,
                                ctx_size=settings.ctx_size,
                                template_fallback=settings.chat_template_fallback,
                                guards_enabled=settings.guards,
                                holdback_tokens=settings.guard_holdback_tokens)
    app = web.Application(middlewares=[errors_middleware, auth_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[STORE] = store
    app[SERVED] = served
    app[ENGINE] = engine
    app[SERVICE] = service
    app[DATABASE] = db
    app[GATE] = gate
    app[STARTED_AT] = time.time()
    app[ENCODER] = encoder
    app.cleanup_ctx.append(_database_ctx)
    app.cleanup_ctx.append(_guards_ctx)
    app.cleanup_ctx.append(_engine_ctx)
    app.add_routes(routes)
    app.add_routes(guard_routes)
    observability.install(app)  # /metrics, the metrics registry, the audit log
    wire_memory_and_cache(app, settings, db, encoder)  # memory and cache (issue 5)
    app.add_routes(embedding_routes)  # memory and cache (issue 5)
    app.add_routes(memory_routes)  # memory and cache (issue 5)
    return app


async def serve(settings: Settings, *, app: web.Application | None = None,
                ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever), then drain and clean up. Used by the CLI
    and, with an ``app`` they keep a handle on, by the tests."""
    app = app if app is not None else make_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("listening on http://%s:%d (model %s)", settings.host, settings.port,
             app[SERVED].spec.id)
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
    queue = app[GATE].queue
    queue.close()
    stats = queue.stats()
    timeout = app[SETTINGS].drain_timeout
    log.info("draining: %d running, %d queued refused; waiting up to %.0fs",
             stats.running, stats.queued, timeout)
    if not await queue.wait_idle(timeout):
        log.warning("drain timeout: %d requests still running are cut off",
                    queue.stats().running)
