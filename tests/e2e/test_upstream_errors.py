"""Upstream failures as a client sees them, through a real appliance in front of a tiny
aiohttp upstream that misbehaves on purpose (stalls, fails, is busy) and of a port nobody
listens on: clean OpenAI-shaped 504/502/503 answers that say nothing of the upstream's
address, key or own words. (The real-engine tests are in test_upstream.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from tests.conftest import RunningServer, free_port, make_settings, start_server

SECRET_KEY = "sk-upstream-very-secret"
LEAK = "Traceback (most recent call last): /srv/engine/secret.py at 10.9.9.9"


@dataclass
class Stub:
    url: str
    port: int
    stalls: list[float]  # when a stalled request's connection went away


def _stub_app(stub: list[float]) -> web.Application:
    async def models(request: web.Request) -> web.Response:
        assert request.headers.get("Authorization") == f"Bearer {SECRET_KEY}"
        return web.json_response({"object": "list", "data": [
            {"id": m} for m in ("slow", "broken", "busy", "midway")]})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        if model == "broken":
            return web.json_response({"error": {"message": LEAK}}, status=500)
        if model == "busy":
            return web.json_response({"error": {"message": LEAK}}, status=503,
                                     headers={"Retry-After": "3"})
        if model == "slow":
            try:
                await asyncio.sleep(30)  # never answers within the read timeout
            finally:
                stub.append(time.monotonic())
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        for word in ("Hello", " there"):
            chunk = {"choices": [{"index": 0, "delta": {"content": word},
                                  "finish_reason": None}]}
            await out.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await asyncio.sleep(30)  # then silence, mid-stream
        return out

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture(scope="module")
def stub() -> Iterator[Stub]:
    port = free_port()
    stalls: list[float] = []
    started = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        async def main() -> None:
            runner = web.AppRunner(_stub_app(stalls), shutdown_timeout=0.1,
                                   handler_cancellation=True)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            stop = asyncio.Event()
            holder.update(loop=asyncio.get_running_loop(), stop=stop)
            started.set()
            await stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield Stub(f"http://127.0.0.1:{port}", port, stalls)
    loop, stop = holder["loop"], holder["stop"]
    loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
    thread.join(10)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again at once: nobody listens


@pytest.fixture(scope="module")
def appliance(stub: Stub, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[RunningServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("upstream-errors"), env={"STUB_KEY": SECRET_KEY},
        queue_depth=0, guards=False, upstream_eject_failures=1000,  # (ejection: elsewhere)
        engines=[{"name": "stub", "kind": "openai", "url": stub.url, "api_key_env": "STUB_KEY",
                  "read_timeout_s": 1.0, "connect_timeout_s": 1.0, "max_concurrent": 2},
                 {"name": "gone", "kind": "openai", "url": f"http://127.0.0.1:{_closed_port()}",
                  "models": ["ghost"]}])
    srv = start_server(settings)
    yield srv
    srv.close()


def _client(srv: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0,
                         timeout=20)


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def _post(http: aiohttp.ClientSession, srv: RunningServer, model: str) -> Answer:
    async with http.post(srv.base_url + "/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "Hi"}]}) as r:
        return Answer(r.status, dict(r.headers), await r.text())


def _ask(srv: RunningServer, model: str) -> Answer:
    async def run() -> Answer:
        async with aiohttp.ClientSession() as http:
            return await _post(http, srv, model)

    return asyncio.run(run())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _clean(response: Any, stub: Stub) -> dict[str, object]:
    body = response.json()
    text = response.text
    for leak in (str(stub.port), "127.0.0.1", SECRET_KEY, "Traceback", "/srv", "10.9.9.9"):
        assert leak not in text, f"{leak!r} leaked into {text}"
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


def test_a_slow_upstream_hits_its_read_timeout_with_a_clean_504(
        appliance: RunningServer, stub: Stub) -> None:
    start = time.monotonic()
    with _client(appliance) as client, pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="slow", messages=[{"role": "user",
                                                                  "content": "Hi"}])
    took = time.monotonic() - start
    assert exc.value.status_code == 504
    error = _clean(exc.value.response, stub)
    assert (error["type"], error["code"]) == ("server_error", "gateway_timeout")
    assert 0.9 < took < 10, took
    # the appliance closed the stalled connection: the stub's handler was cancelled
    deadline = time.monotonic() + 5
    while not stub.stalls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stub.stalls, "the upstream request was left open"


def test_an_upstream_failure_is_a_502_without_its_words(appliance: RunningServer,
                                                        stub: Stub) -> None:
    response = _ask(appliance, "broken")
    assert response.status_code == 502
    error = _clean(response, stub)
    assert (error["type"], error["code"]) == ("server_error", "bad_gateway")


def test_a_busy_upstream_is_a_503_with_its_retry_after(appliance: RunningServer,
                                                       stub: Stub) -> None:
    response = _ask(appliance, "busy")
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    assert _clean(response, stub)["code"] == "server_overloaded"


def test_an_unreachable_upstream_is_a_502_or_a_503_once_ejected(
        appliance: RunningServer, stub: Stub) -> None:
    response = _ask(appliance, "ghost")
    assert response.status_code in (502, 503)  # 503 once probes ejected it
    error = _clean(response, stub)
    assert error["code"] in ("bad_gateway", "unavailable")
    ready = _get(appliance.base_url + "/ready")
    engines = {e["name"]: e for e in ready["engines"]}
    assert engines["stub"]["up"] is True and "url" not in str(ready)
    assert str(stub.port) not in str(ready)


def test_a_stall_after_the_first_bytes_ends_the_stream_with_an_error_event(
        appliance: RunningServer, stub: Stub) -> None:
    with _client(appliance) as client:
        stream = client.chat.completions.create(
            model="midway", stream=True, messages=[{"role": "user", "content": "Hi"}])
        texts = []
        with pytest.raises(openai.APIError) as exc:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    texts.append(chunk.choices[0].delta.content)
    assert "".join(texts) == "Hello there"
    assert "gateway_timeout" in str(exc.value.body) or "sent nothing" in str(exc.value)


def test_a_full_upstream_is_a_fast_503_with_retry_after(appliance: RunningServer,
                                                        stub: Stub) -> None:
    async def run() -> list[Answer]:
        async with aiohttp.ClientSession() as http:
            slow = [asyncio.create_task(_post(http, appliance, "slow")) for _ in range(2)]
            await asyncio.sleep(0.3)  # both slots of the stub's lane are taken
            start = time.monotonic()
            third = await _post(http, appliance, "slow")
            assert time.monotonic() - start < 0.5, "a full upstream must be refused at once"
            return [third, *await asyncio.gather(*slow)]

    third, *slow = asyncio.run(run())
    assert third.status_code == 503 and int(third.headers["Retry-After"]) >= 1
    assert _clean(third, stub)["code"] == "server_overloaded"
    assert [r.status_code for r in slow] == [504, 504]
