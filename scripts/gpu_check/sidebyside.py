"""The GPU check's side-by-side, run by the check's venv: the appliance as shipped (guards
on) and llama-server, the same model file, both with every layer on the GPU and 16
parallel sequences, started afresh in turn for each round (A B, A B, ...), each driven at
every concurrency level by `appliance bench`'s client (streamed chat, the ``short`` prompt
set numbered per request, chunks timed as received, tokens from ``usage``).

    venv/bin/python -m gpu_check.sidebyside --appliance venv/bin/appliance \
        --llama-server build/bin/llama-server --model M.gguf --out raw.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance.tools import bench

CRITERIA = dict(bench.CRITERIA_DEFAULTS)
TARGETS = ("appliance", "llama-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


@contextlib.contextmanager
def serving(argv: list[str], ready: str, port: int, log: Path, timeout: float = 300
            ) -> Iterator[tuple[str, float]]:
    """Start a server in its own process group, wait for ``ready``, always stop it."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        t0 = time.monotonic()
        try:
            base = f"http://127.0.0.1:{port}"
            while _status(base + ready) != 200:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{argv[0]} exited with {proc.returncode}:\n{tail}")
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"{argv[0]} not ready after {timeout:.0f} s ({log})")
                time.sleep(0.2)
            yield base, time.monotonic() - t0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def server_argv(target: str, a: argparse.Namespace, port: int, data: Path
                ) -> tuple[list[str], str]:
    if target == "appliance":
        argv = [a.appliance, "serve", "--host", "127.0.0.1", "--port", str(port),
                "--data-dir", str(data), "--threads", str(a.threads), "--parallel",
                str(a.parallel), "--ctx-size", str(a.ctx), "--n-gpu-layers", str(a.ngl)]
        return argv + (["--models-dir", a.models_dir] if a.models_dir else []), "/ready"
    return [a.llama_server, "-m", a.model, "--host", "127.0.0.1", "--port", str(port),
            "-t", str(a.threads), "-c", str(a.ctx * a.parallel), "-np", str(a.parallel),
            "-ngl", str(a.ngl), "--no-webui"], "/health"


def one_run(target: str, rnd: int, a: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="data-") as data:
        argv, ready = server_argv(target, a, port, Path(data))
        log = Path(a.logdir) / f"{target}-round{rnd}.log"
        with serving(argv, ready, port, log) as (base, started):
            t0 = time.monotonic()
            reports = asyncio.run(bench.run(
                url=base + "/v1", model="default", levels=a.levels, requests=a.requests,
                max_tokens=a.max_tokens, prompt_set="short", api_key=None,
                criteria=CRITERIA, progress=False))
    return {"round": rnd, "target": target, "start_s": round(started, 2),
            "bench_s": round(time.monotonic() - t0, 2),
            "levels": [dataclasses.asdict(r) for r in reports]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--appliance", required=True)
    p.add_argument("--llama-server", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--models-dir", default="")
    p.add_argument("--ngl", type=int, default=99)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--parallel", type=int, default=16)
    p.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    p.add_argument("--levels", type=bench.parse_levels, default=[1, 16, 64])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--requests", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--deadline", type=float, default=0.0, help="epoch seconds; 0: none")
    p.add_argument("--logdir", required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    took: dict[str, float] = {}
    for rnd in range(1, a.rounds + 1):
        for target in TARGETS:
            guess = took.get(target, 60.0) * 1.2
            if a.deadline and time.time() + guess > a.deadline:
                skipped.append(f"{target}, round {rnd}: out of time")
                continue
            t0 = time.monotonic()
            runs.append(one_run(target, rnd, a))
            took[target] = time.monotonic() - t0
            print(f"side-by-side: {target}, round {rnd}: {took[target]:.0f} s", flush=True)
    config = {k: v for k, v in vars(a).items() if k not in ("out", "deadline")}
    a.out.write_text(json.dumps({"config": config, "runs": runs, "skipped": skipped},
                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
