"""Bounded work per request and per connection, against a real server with keys: caps on
/v1/guard and /v1/embeddings, both admitted like generation; slow, stalled and too many
connections."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from appliance.admission.keys import KeyStore, Scope
from appliance.store.db import Database
from tests.conftest import RunningServer, make_settings, start_server


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    settings = make_settings(tmp_path_factory.mktemp("bounded"), parallel=2, ctx_size=8192,
                             max_connections=6, idle_timeout_s=1.5, body_timeout_s=1.5,
                             stream_stall_timeout_s=1.5, guard_max_tokens=300,
                             embeddings_max_tokens=300)
    with Database(settings.database) as db:
        keys = KeyStore(db)
        secrets = {
            "ops": keys.create_sync("ops", scopes=[Scope.ADMIN]).secret,
            # 60 tokens a minute, 60 at once: two 26-token guard calls, not three
            "small": keys.create_sync("small", tpm=60, burst_tokens=60).secret}
    server = start_server(settings)
    yield server, secrets
    server.close()


def _post(server: RunningServer, path: str, key: str, body: dict[str, Any]
          ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.base_url + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _words(n: int) -> str:
    return " ".join(["clinic"] * n)


def test_guard_and_embedding_calls_are_capped_and_charged(
        bounded: tuple[RunningServer, dict[str, str]]) -> None:
    server, keys = bounded
    status, body = _post(server, "/v1/guard", keys["ops"], {"input": [_words(200)] * 2})
    assert status == 400 and "guard_max_tokens" in body["error"]["message"]
    assert body["error"]["param"] == "input"
    status, body = _post(server, "/v1/embeddings", keys["ops"],
                         {"model": "default", "input": [_words(200)] * 2})
    assert status == 400 and "embeddings_max_tokens" in body["error"]["message"]
    # within the caps they are served, and the key's token bucket pays for them
    for _ in range(2):
        status, body = _post(server, "/v1/guard", keys["small"], {"input": _words(24)})
        assert status == 200 and body["allowed"], body
    status, body = _post(server, "/v1/guard", keys["small"], {"input": _words(24)})
    assert status == 429 and body["error"]["type"] == "rate_limit_exceeded"


def _raw(server: RunningServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.settings.port), timeout=10)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Until the server closes, or one whole response (head and Content-Length body)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
        head, sep, body = out.partition(b"\r\n\r\n")
        length = [line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")]
        if sep and length and len(body) >= int(length[0]):
            break
    return out


def test_a_client_that_never_finishes_its_headers_is_dropped(
        bounded: tuple[RunningServer, dict[str, str]]) -> None:
    server, _ = bounded
    with _raw(server) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
        start = time.monotonic()
        assert _read_all(s) == b""  # closed without an answer
        assert time.monotonic() - start < 10


def test_a_body_that_never_arrives_gets_408(
        bounded: tuple[RunningServer, dict[str, str]]) -> None:
    server, keys = bounded
    with _raw(server) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nAuthorization: Bearer " + keys["ops"].encode() +
                  b"\r\nContent-Length: 400\r\n\r\n{\"model\": \"default\"")
        answer = _read_all(s).decode()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 408")
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_connections_beyond_the_cap_get_a_fast_503(
        bounded: tuple[RunningServer, dict[str, str]]) -> None:
    server, _ = bounded
    idle = [_raw(server) for _ in range(6)]
    try:
        time.sleep(0.2)
        with _raw(server) as extra:
            answer = _read_all(extra).decode()
        head, _, body = answer.partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 503") and "Retry-After: 1" in head
        assert json.loads(body)["error"]["type"] == "server_overloaded"
    finally:
        for s in idle:
            s.close()
    time.sleep(2.0)  # the idle ones are gone (closed by us, or by the idle timeout)
    with urllib.request.urlopen(server.base_url + "/health", timeout=10) as r:
        assert r.status == 200


MAX_TOKENS = 7000  # within the 8192-token context of a sequence


def test_a_stream_nobody_reads_is_cancelled_and_its_slot_freed(
        bounded: tuple[RunningServer, dict[str, str]]) -> None:
    server, keys = bounded
    # More bytes than the kernel's socket buffers and the transport's can absorb (then no
    # write would ever wait, and the answer would simply finish): each token carries its 20
    # alternatives (about 1.3 kB), so 7000 tokens are about 9 MB, against at most 4 MB of
    # send buffer (net.ipv4.tcp_wmem's maximum) and aiohttp's 64 kB. Without them the
    # output rail's windows made the whole answer about 0.2 MB, which fitted.
    body = json.dumps({"model": "default", "stream": True, "max_tokens": MAX_TOKENS,
                       "ignore_eos": True, "temperature": 0.8, "logprobs": True,
                       "top_logprobs": 20,
                       "messages": [{"role": "user", "content": "Tell me a long story."}]})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a reader that reads nothing
    s.connect(("127.0.0.1", server.settings.port))
    generated = server.engine.stats.generated_tokens
    try:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + keys["ops"].encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\n\r\n" + body.encode())
        seen = _wait_for(lambda: server.engine.stats.running == 1, 60)
        assert seen, "the generation never started"
        assert _wait_for(lambda: server.engine.stats.running == 0, 240)
        with urllib.request.urlopen(server.base_url + "/health", timeout=10) as r:
            assert json.loads(r.read())["running"] == 0
        # cancelled, not finished: fewer than the tokens it asked for
        assert server.engine.stats.generated_tokens - generated < MAX_TOKENS
    finally:
        s.close()


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False
