"""How streamed text reaches a reader under the output rail: chunk gaps and time to first
token as the official ``openai`` client receives them, for one or more checkouts of the
appliance (guards on, the default policy) and output-window sizes, interleaved.

    .venv/bin/python scripts/bench_release.py --target new=. --target new-w8=.:8 \\
        --target main=/tmp/main-checkout --rounds 3 --clients 1 4 --out /tmp/release.json

A target is ``NAME=CHECKOUT[:WINDOW]``: ``appliance serve`` is started from that checkout's
directory with this venv's Python (so it imports that checkout's ``appliance``), and with
``WINDOW`` the default policy with ``[output] window_tokens = WINDOW`` (a checkout that
knows the setting). Each round starts every target once, in order, and drives each client
level: every client streams ``--requests`` chat completions one after another (a short
unique prompt each, ``--max-tokens`` tokens, temperature 0.7). Reported per target and level,
medians over rounds: TTFT p50/p95, the gap between content chunks p50/p95, content chunks
per answer, completion tok/s (from ``usage``) and the load average during the level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import openai

REPO = Path(__file__).resolve().parent.parent
TOPICS = ("tides", "bread yeast", "owls", "copper wire", "glaciers", "tea", "bees",
          "volcanoes", "paper", "bicycles", "clouds", "salt", "rainbows", "cheese",
          "compasses", "moss", "sundials", "whales", "soap", "kites")


@dataclass(frozen=True)
class Target:
    name: str
    checkout: Path
    window: int | None


@dataclass
class Level:
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    tokens: int = 0
    wall: float = 0.0
    load: float = 0.0


def _target(text: str) -> Target:
    name, _, where = text.partition("=")
    path, _, window = where.partition(":")
    return Target(name, Path(path).resolve(), int(window) if window else None)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(target: Target, parallel: int, threads: int, models_dir: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        port = _port()
        argv = [sys.executable, "-m", "appliance", "serve", "--port", str(port),
                "--data-dir", tmp, "--models-dir", models_dir, "--parallel", str(parallel),
                "--threads", str(threads), "--guards", "true", "--cache-enabled", "false"]
        if target.window is not None:
            policy = Path(tmp) / "window.toml"
            base = (target.checkout / "appliance/guards/policies/default.toml").read_text()
            policy.write_text(re.sub(r"(?m)^window_tokens = [0-9]+",
                                     f"window_tokens = {target.window}", base))
            argv += ["--guard-policy", str(policy)]
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(argv, cwd=target.checkout, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{target.name}: server did not start: "
                                     f"{(Path(tmp) / 'server.log').read_text()[-2000:]}")
                with contextlib.suppress(OSError), \
                        urllib.request.urlopen(url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        break
                time.sleep(0.5)
            yield url + "/v1"
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
            log.close()


async def _one(client: openai.AsyncOpenAI, prompt: str, max_tokens: int, out: Level) -> None:
    t0 = time.perf_counter()
    last: float | None = None
    chunks = 0
    stream = await client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": prompt}], stream=True,
        max_tokens=max_tokens, temperature=0.7, stream_options={"include_usage": True})
    async for chunk in stream:
        if chunk.usage is not None:
            out.tokens += chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            if last is None:
                out.ttft.append(now - t0)
            else:
                out.gaps.append(now - last)
            last = now
            chunks += 1
    out.chunks.append(chunks)


async def _level(url: str, clients: int, requests: int, max_tokens: int, first: int) -> Level:
    out = Level()
    counter = iter(range(first, first + 10**5))

    async def worker(c: int) -> None:
        async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0,
                                      timeout=300) as client:
            for _ in range(requests):
                i = next(counter)
                prompt = (f"Tell me a fun fact about {TOPICS[i % len(TOPICS)]} "
                          f"(question {c * 1000 + i}).")
                await _one(client, prompt, max_tokens, out)

    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(clients)))
    out.wall = time.perf_counter() - start
    out.load = (load0 + os.getloadavg()[0]) / 2
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(level: Level) -> dict[str, float]:
    return {"ttft_p50_ms": _pct(level.ttft, 0.5) * 1e3, "ttft_p95_ms": _pct(level.ttft, 0.95) * 1e3,
            "gap_p50_ms": _pct(level.gaps, 0.5) * 1e3, "gap_p95_ms": _pct(level.gaps, 0.95) * 1e3,
            "chunks": statistics.mean(level.chunks) if level.chunks else 0.0,
            "tok_s": level.tokens / level.wall if level.wall else 0.0, "load": level.load}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", type=_target, required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=8, help="per client per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="the engine's")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from appliance import config

    models_dir = str(config.load(env={}).models_dir)
    runs: dict[str, dict[int, list[dict[str, float]]]] = {}
    for r in range(args.rounds):
        for target in args.target:
            with _server(target, args.parallel, args.threads, models_dir) as url:
                asyncio.run(_level(url, 1, 2, args.max_tokens, 900_000))
                for clients in args.clients:
                    level = asyncio.run(_level(url, clients, args.requests, args.max_tokens,
                                               (r * 100 + clients) * 1000))
                    row = _summary(level)
                    runs.setdefault(target.name, {}).setdefault(clients, []).append(row)
                    print(f"round {r} {target.name} c={clients}: "
                          + " ".join(f"{k}={v:.1f}" for k, v in row.items()), flush=True)
    medians = {name: {c: {k: statistics.median(row[k] for row in rows) for k in rows[0]}
                      for c, rows in levels.items()} for name, levels in runs.items()}
    print("\nmedians over rounds")
    for name, levels in medians.items():
        for c, row in levels.items():
            print(f"{name:>12} c={c:<2} " + " ".join(f"{k}={v:.1f}" for k, v in row.items()))
    if args.out is not None:
        args.out.write_text(json.dumps({"runs": runs, "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
