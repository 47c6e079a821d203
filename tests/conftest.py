"""Shared fixtures: settings in a temporary data dir, and a real server on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance import config
from appliance.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(tmp: Path, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings for tests: a private data dir, the shared assembled-models dir; ``env`` is
    the environment the settings see (only what is given)."""
    base = config.load(env={})
    values: dict[str, Any] = {"data_dir": tmp, "models_dir": base.models_dir,
                              "port": free_port(), "threads": 2,
                              # engine and admission tests repeat greedy requests and must
                              # reach the engine; the cache tests turn it on
                              "cache_enabled": False}
    values.update(overrides)
    return config.load(env=env or {}, overrides=values)


@dataclass
class RunningServer:
    settings: Settings
    app: Any
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def engine(self) -> Any:
        """The embedded engine."""
        from appliance.web.state import ENGINES

        return self.app[ENGINES].embedded

    def wait_ready(self, timeout: float = 120.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base_url + "/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code != 503:
                    raise
                body = exc.read().decode()
                if '"failed"' in body:
                    raise RuntimeError(f"engine failed: {body}") from None
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError("server did not become ready")

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(60)


def start_server(settings: Settings, *, wait: bool = True) -> RunningServer:
    """Start the real aiohttp app (same wiring as `appliance serve`) in its own thread."""
    from appliance.web.app import make_app, serve

    holder: dict[str, Any] = {}
    started = threading.Event()
    app = make_app(settings)  # as the CLI does: built and checked before the loop runs

    async def main() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        holder.update(app=app, loop=asyncio.get_running_loop(), stop=stop)
        task = asyncio.ensure_future(serve(settings, app, ready=ready, stop=stop))
        await asyncio.wait([task, asyncio.ensure_future(ready.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        started.set()
        await task

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            holder["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="test-server", daemon=True)
    thread.start()
    started.wait(120)
    if "error" in holder:
        raise holder["error"]
    server = RunningServer(settings, holder["app"], holder["loop"], holder["stop"], thread)
    if wait:
        server.wait_ready()
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The default model, 16 parallel sequences: shared by the end-to-end tests."""
    settings = make_settings(tmp_path_factory.mktemp("data"), parallel=16, ctx_size=1024,
                             max_body_bytes=256 * 1024)
    srv = start_server(settings)
    yield srv
    srv.close()
