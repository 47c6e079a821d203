"""``appliance serve``: serve the OpenAI-compatible API until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
from typing import TYPE_CHECKING

from appliance import config

if TYPE_CHECKING:
    from aiohttp import web


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    config.add_arguments(serve)
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.observability.logs import setup_logging
    from appliance.web.app import make_app  # aiohttp is imported only when serving

    settings = config.load(args)
    setup_logging(settings.log_level)
    # Everything is built and checked (model pins, keys for a non-loopback bind) before the
    # event loop starts and before anything binds: a refusal is one line and exit code 2.
    app = make_app(settings)
    _allow_descriptors(settings.max_connections)
    asyncio.run(_serve(settings, app))
    return 0


def _allow_descriptors(max_connections: int) -> None:
    # Each connection holds a descriptor; a default soft limit of 1024 would turn the
    # connection cap into EMFILE errors before the cap's clean 503 is ever reached.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 256  # the model, SQLite files, the index, logs
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _serve(settings: config.Settings, app: web.Application) -> None:
    from appliance.web.app import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, app, stop=stop)
