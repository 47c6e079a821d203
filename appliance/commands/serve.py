"""``appliance serve``: serve the OpenAI-compatible API until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from appliance import config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    config.add_arguments(serve)
    serve.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.observability.logs import setup_logging

    settings = config.load(args)
    setup_logging(settings.log_level)
    asyncio.run(_serve(settings))
    return 0


async def _serve(settings: config.Settings) -> None:
    from appliance.web.app import serve  # aiohttp is imported only when serving

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)
