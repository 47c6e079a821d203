"""A burst of streams plus clients that read nothing, against a real keyed appliance.

    .venv/bin/python scripts/burst_slow_readers.py [--streams 300] [--slow 50]

Starts `appliance serve` through the CLI on loopback with one API key, `--parallel 4
--queue-depth 16` (and the given stall timeout), then at once: STREAMS streamed chat
requests from a normal client and SLOW clients that send a streamed request and never read
their socket. Reports the status of every request, whether every 429/503 carried
Retry-After, when the slots were all free again (from /health), and whether a normal
client is served afterwards. Loopback only; bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
APPLIANCE = [sys.executable, "-m", "appliance"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/health", timeout=10) as r:
        return dict(json.loads(r.read()))


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not become ready")


def _body(i: int, max_tokens: int) -> dict[str, Any]:
    return {"model": "default", "stream": True, "max_tokens": max_tokens,
            "temperature": 0.7, "messages": [
                {"role": "user", "content": f"Write a few sentences about the sea ({i})."}]}


async def _stream(session: aiohttp.ClientSession, url: str, key: str, i: int,
                  max_tokens: int) -> tuple[str, bool]:
    """(status, whether a refusal carried Retry-After)"""
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with session.post(url + "/v1/chat/completions", json=_body(i, max_tokens),
                                headers=headers) as resp:
            await resp.read()
            retry = "Retry-After" in resp.headers
            return str(resp.status), retry or resp.status not in (429, 503)
    except aiohttp.ClientError as exc:
        return type(exc).__name__, True


def _slow_reader(port: int, key: str, i: int, max_tokens: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    body = json.dumps(_body(100_000 + i, max_tokens)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + key.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
    return s


async def _run(url: str, port: int, key: str, args: argparse.Namespace) -> dict[str, Any]:
    slow = [_slow_reader(port, key, i, args.slow_tokens) for i in range(args.slow)]
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=args.deadline)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        results = await asyncio.gather(*(_stream(session, url, key, i, args.max_tokens)
                                         for i in range(args.streams)))
    burst_s = time.monotonic() - started
    freed_at = None
    while time.monotonic() - started < args.deadline:
        h = _health(url)
        if h["running"] == 0 and h["queued"] == 0:
            freed_at = time.monotonic() - started
            break
        await asyncio.sleep(0.5)
    for s in slow:
        s.close()
    async with aiohttp.ClientSession() as session:
        after, _ = await _stream(session, url, key, 999_999, 16)
    statuses = collections.Counter(status for status, _ in results)
    return {"streams": args.streams, "slow_readers": args.slow, "statuses": dict(statuses),
            "refusals_without_retry_after": sum(1 for _, ok in results if not ok),
            "burst_s": round(burst_s, 1),
            "slots_free_after_s": None if freed_at is None else round(freed_at, 1),
            "normal_client_after": after}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=300)
    p.add_argument("--slow", type=int, default=50)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--slow-tokens", type=int, default=1500)
    p.add_argument("--stall-timeout", type=float, default=10.0)
    p.add_argument("--deadline", type=float, default=900.0)
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="burst-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    created = subprocess.run([*APPLIANCE, "keys", "create", "--name", "burst", "--data-dir",
                              str(data)], capture_output=True, text=True, check=True, env=env)
    key = created.stdout.strip().splitlines()[-1]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (data / "serve.log").open("wb")
    proc = subprocess.Popen([*APPLIANCE, "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(data), "--parallel", "4", "--queue-depth", "16",
                             "--ctx-size", "2048", "--stream-stall-timeout-s",
                             str(args.stall_timeout)], stdout=log, stderr=subprocess.STDOUT,
                            env=env, cwd=REPO)
    try:
        _wait_ready(url, proc)
        report = asyncio.run(_run(url, port, key, args))
    finally:
        proc.terminate()
        proc.wait(60)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
