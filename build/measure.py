"""Cold start to /ready and resident memory after the first request, for the one-file and
one-folder executables and the development install (figures for docs/BENCHMARKS.md).

    python build/measure.py [--runs 5] [--variants onefile,onedir,dev] [--json OUT]

Each run: a fresh data directory, start `serve`, poll /ready every 20 ms, one chat
completion (8 tokens), RSS of the whole process tree (the one-file bootloader and the
Python process it starts), SIGTERM, and the exit code must be 0. Start-up figures are with
a warm page cache (the file was read by the previous run); the first run is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "onefile": [str(REPO / "dist" / "appliance-onefile" / "appliance")],
    "onedir": [str(REPO / "dist" / "appliance-onedir" / "appliance")],
    "dev": [sys.executable, "-m", "appliance"],
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_rss(pid: int) -> int:
    """Sum of VmRSS (bytes) of pid and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines()
                          if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def run_once(cmd: list[str], threads: int) -> dict[str, float]:
    port = _port()
    with tempfile.TemporaryDirectory() as data:
        models_dir = os.environ.get("MEASURE_MODELS_DIR")
        args = [*cmd, "serve", "--port", str(port), "--data-dir", data, "--threads",
                str(threads), "--log-level", "warning"]
        if models_dir and cmd[0] == sys.executable:
            args += ["--models-dir", models_dir]
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, cwd=REPO if cmd[0] == sys.executable else data,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        ready = None
        while ready is None:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - t0
            except (urllib.error.URLError, OSError):
                time.sleep(0.02)
        body = json.dumps({"model": "default", "max_tokens": 8, "seed": 1,
                           "messages": [{"role": "user", "content": "Say hello."}]}).encode()
        req = urllib.request.Request(base + "/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
        rss = _tree_rss(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        if code != 0:
            raise RuntimeError(f"{cmd} exited {code} after SIGTERM")
        return {"ready_s": ready, "rss_mib": rss / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--variants", default="onefile,onedir,dev")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = {}
    for name in args.variants.split(","):
        cmd = VARIANTS[name]
        runs = [run_once(cmd, args.threads) for _ in range(args.runs)]
        ready = [r["ready_s"] for r in runs]
        results[name] = {
            "ready_median_s": round(statistics.median(ready), 2),
            "ready_first_s": round(ready[0], 2),
            "ready_all_s": [round(x, 2) for x in ready],
            "rss_median_mib": round(statistics.median(r["rss_mib"] for r in runs)),
        }
        print(f"{name:8} ready median {results[name]['ready_median_s']:.2f}s "
              f"(first {ready[0]:.2f}s, all {results[name]['ready_all_s']}), "
              f"RSS after first request {results[name]['rss_median_mib']} MiB", flush=True)
    for name in ("onefile", "onedir"):
        path = REPO / "dist" / f"appliance-{name}"
        if name in results:
            size = sum(f.stat().st_size for f in path.rglob("*")
                       if f.is_file() and not f.is_symlink()
                       and f.relative_to(path).parts[0] != "models")
            results[name]["size_mib"] = round(size / 2**20, 1)
            print(f"{name:8} size without models {size / 2**20:.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
