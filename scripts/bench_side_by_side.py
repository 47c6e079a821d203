"""`make bench`: the appliance side by side with llama.cpp's `llama-server` and
llama-cpp-python's own server, on this machine, with the same model file.

    .venv/bin/python scripts/bench_side_by_side.py            # the full run (~30 min)
    .venv/bin/python scripts/bench_side_by_side.py --quick --out /tmp/B.md   # a check

Runs, interleaved and repeated (A B C, A B C, ...), with the same threads, the same
context per sequence and the same number of parallel sequences:

  A  the appliance as shipped (`python -m appliance serve`, its defaults otherwise: guards on)
  G  the appliance with its guards off (`--guards false`): what the rails cost
  B  `llama-server` built from the llama.cpp source our llama-cpp-python version vendors
  C  `python -m llama_cpp.server` (one sequence; `interrupt_requests` off), in its own venv
  A' the appliance with prefix reuse off (`--prefix-reuse-min 0`), shared-system workload
  U  the appliance in front of B (`--upstream`, guards off: what the proxying itself adds),
     only when asked: `--peers BU` (`--skip-appliance` leaves A, A' and the ceiling out)

and `llama-batched-bench` (same build as B) as the engine's ceiling without HTTP. Each
server is started on a free loopback port, waited for, driven by `appliance bench`'s client
and always stopped (also on errors and Ctrl-C). Medians over the repetitions and the
ratios appliance/peer go into the --out document between the make-bench markers; the raw
results go to a JSON file in the cache directory.

Builds and the peer venv live in ~/.cache/appliance-bench/ (outside the repository) and
are reused while their flags match native/build.sh's cpu backend.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `appliance` from this checkout, whatever the venv says

from llama_build import (  # noqa: E402
    CACHE,
    ensure_built,
    native_build_params,
)

from appliance import config  # noqa: E402
from appliance.engine.models import ModelStore  # noqa: E402
from appliance.tools import bench  # noqa: E402

BEGIN, END = "<!-- make-bench:begin -->", "<!-- make-bench:end -->"
NAMES = {"A": "appliance", "G": "appliance, guards off", "A0": "appliance, prefix reuse off",
         "B": "llama-server", "C": "llama-cpp-python server",
         "U": "appliance → llama-server (guards off)"}
METRICS = ("tokens_per_s", "ttft_p50", "ttft_p95", "itl_p50", "itl_p95", "e2e_p50")
# Criteria given to the client: the defaults. The targets are judged separately.
CRITERIA = {"ttft_p95": 2.0, "itl_p95": 0.1, "error_rate": 0.01}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the llama.cpp build (B and the ceiling): scripts/llama_build.py -------------------
def ensure_llama_cpp(version: str, flags: list[str], jobs: int) -> Path:
    """The directory holding llama-server and llama-batched-bench, built once."""
    del version, flags  # (llama_build reads them from native/build.sh itself)
    return ensure_built(("llama-server", "llama-batched-bench"), jobs)


# --- llama-cpp-python's server (C) in its own venv ---------------------------------------
def ensure_peer_venv(wheelhouse: Path, version: str) -> Path:
    wheels = sorted(wheelhouse.glob(f"llama_cpp_python-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"bench: no llama-cpp-python {version} wheel in {wheelhouse} "
                         f"(run `make install` first, or give --wheelhouse)")
    wheel = wheels[-1]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    venv = CACHE / "venv-llama-cpp-server"
    python = venv / "bin" / "python"
    stamp = venv / "APPLIANCE_BENCH_WHEEL"
    if python.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return python
    log(f"creating {venv} with {wheel.name}[server]")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"{wheel}[server]"], check=True)
    stamp.write_text(digest)
    return python


# --- servers -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return 0


def _stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def running(name: str, argv: list[str], ready_path: str, port: int, logfile: Path,
            timeout: float = 300.0) -> Iterator[str]:
    """Start a server in its own process group, wait until ready, always stop it."""
    log(f"starting {name}: {' '.join(argv)}")
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while _get(base + ready_path) != 200:
                if proc.poll() is not None:
                    tail = logfile.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {timeout:.0f} s (see {logfile})")
                time.sleep(0.25)
            yield base
        finally:
            _stop(proc)


@dataclass(frozen=True)
class Setup:
    model: Path
    threads: int
    ctx: int
    parallel: int
    bins: Path | None
    peer_python: Path | None
    models_dir: Path
    logdir: Path


def server_argv(target: str, s: Setup, port: int, data_dir: Path,
                upstream: str = "") -> tuple[list[str], str]:
    if target == "U":  # as many slots as llama-server has; no local model
        cfg = data_dir / "upstream.toml"
        cfg.write_text(f'[[engines]]\nkind = "openai"\nurl = "{upstream}"\n'
                       f"max_concurrent = {s.parallel}\nread_timeout_s = 600\n")
        return [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1",
                "--port", str(port), "--data-dir", str(data_dir), "--config", str(cfg),
                "--guards", "false", "--queue-depth", "256"], "/ready"
    if target in ("A", "G", "A0"):
        argv = [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1",
                "--port", str(port), "--data-dir", str(data_dir),
                "--models-dir", str(s.models_dir), "--threads", str(s.threads),
                "--parallel", str(s.parallel), "--ctx-size", str(s.ctx)]
        extra = {"A0": ["--prefix-reuse-min", "0"], "G": ["--guards", "false"]}
        return argv + extra.get(target, []), "/ready"
    if target == "B":
        assert s.bins is not None
        return [str(s.bins / "llama-server"), "-m", str(s.model), "--host", "127.0.0.1",
                "--port", str(port), "-t", str(s.threads), "-c", str(s.ctx * s.parallel),
                "-np", str(s.parallel), "--no-webui"], "/health"
    assert s.peer_python is not None
    return [str(s.peer_python), "-m", "llama_cpp.server", "--model", str(s.model),
            "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(s.threads),
            "--n_threads_batch", str(s.threads), "--n_ctx", str(s.ctx),
            "--interrupt_requests", "False", "--model_alias", "default"], "/v1/models"


@contextlib.contextmanager
def serve_target(target: str, s: Setup, data: Path) -> Iterator[str]:
    """The base URL of ``target``'s server (U: llama-server, then the appliance in front)."""
    port = free_port()
    if target != "U":
        with running(NAMES[target], *server_argv(target, s, port, data), port,
                     s.logdir / f"{target}.log") as base:
            yield base
        return
    up_port = free_port()
    with running("llama-server (upstream of U)", *server_argv("B", s, up_port, data), up_port,
                 s.logdir / "U-upstream.log") as upstream, \
            running(NAMES[target], *server_argv(target, s, port, data, upstream), port,
                    s.logdir / "U.log") as base:
        yield base


# --- one interleaved run -----------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    rep: int
    target: str
    prompt_set: str
    levels: list[dict[str, Any]]


def drive(base: str, levels: list[int], requests: int | None, max_tokens: int,
          prompt_set: str, temperature: float) -> list[dict[str, Any]]:
    reports = asyncio.run(bench.run(base + "/v1", "default", levels, requests, max_tokens,
                                    prompt_set, None, CRITERIA, temperature=temperature))
    return [dataclasses.asdict(r) for r in reports]


def batched_bench(s: Setup, levels: list[int], max_tokens: int) -> dict[int, float]:
    """llama-batched-bench's decode rate (S_TG, tokens/s) per number of sequences."""
    assert s.bins is not None
    npl = [n for n in levels if n <= s.parallel] or [1]
    argv = [str(s.bins / "llama-batched-bench"), "-m", str(s.model), "-c",
            str(s.ctx * max(npl)), "-b", "512", "-ub", "512", "-npp", "32", "-ntg",
            str(max_tokens), "-npl", ",".join(map(str, npl)), "-t", str(s.threads)]
    log("running " + " ".join(argv))
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1800)
    return parse_batched_bench(out.stdout + out.stderr)


def parse_batched_bench(text: str) -> dict[int, float]:
    """{sequences: S_TG tokens/s} from llama-batched-bench's table."""
    rates = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0].isdigit():
            rates[int(cells[2])] = float(cells[7])
    return rates


# --- the report ----------------------------------------------------------------------------
def medians(runs: list[Run], target: str, prompt_set: str) -> dict[int, dict[str, Any]]:
    by_level: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        if run.target == target and run.prompt_set == prompt_set:
            for lvl in run.levels:
                by_level.setdefault(lvl["concurrency"], []).append(lvl)
    out = {}
    for c, rows in sorted(by_level.items()):
        m: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in METRICS}
        m["requests"] = sum(r["requests"] for r in rows)
        m["ok"] = sum(r["ok"] for r in rows)
        errors: dict[str, int] = {}
        for r in rows:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        m["errors"] = errors
        m["runs"] = len(rows)
        out[c] = m
    return out


def _ms(x: float) -> str:
    return "–" if x != x else f"{x * 1e3:.0f} ms"


def _ratio(a: float, b: float) -> str:
    return "–" if not b or a != a or b != b else f"{a / b:.2f}"


def _table(rows: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    out = ["| clients | server | tok/s | TTFT p50 | TTFT p95 | chunk gap p50 | chunk gap p95 "
           "| e2e p50 | "
           "ok / requests | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
    levels = sorted({c for per in rows.values() for c in per})
    for c in levels:
        for target, per in rows.items():
            if c not in per:
                continue
            m = per[c]
            errs = ", ".join(f"{k}: {v}" for k, v in sorted(m["errors"].items())) or "–"
            out.append(f"| {c} | {NAMES[target]} | {m['tokens_per_s']:.1f} | "
                       f"{_ms(m['ttft_p50'])} | {_ms(m['ttft_p95'])} | "
                       f"{m['itl_p50'] * 1e3:.1f} ms | {m['itl_p95'] * 1e3:.1f} ms | "
                       f"{m['e2e_p50']:.2f} s | {m['ok']} / {m['requests']} | {errs} |")
    return out


def _targets(short: dict[str, dict[int, dict[str, Any]]],
             shared: dict[str, dict[int, dict[str, Any]]],
             ceiling: dict[int, float]) -> list[str]:
    a, b = short.get("A", {}), short.get("B", {})
    rows = ["| target | measured | met |", "|---|---|---|"]

    def add(name: str, measured: str | None, met: bool | None) -> None:
        verdict = "not measured" if met is None else ("yes" if met else "**no**")
        rows.append(f"| {name} | {measured or '–'} | {verdict} |")

    if 16 in a and 16 in b:
        r = a[16]["tokens_per_s"] / b[16]["tokens_per_s"]
        add("16 streams: tok/s ≥ 1.10 × llama-server", f"{r:.2f} ×", r >= 1.10)
        r = a[16]["ttft_p95"] / b[16]["ttft_p95"]
        add("16 streams: TTFT p95 ≤ 0.8 × llama-server's", f"{r:.2f} ×", r <= 0.8)
    else:
        add("16 streams: tok/s ≥ 1.10 × llama-server", None, None)
        add("16 streams: TTFT p95 ≤ 0.8 × llama-server's", None, None)
    if 16 in a and ceiling.get(16):
        r = a[16]["tokens_per_s"] / ceiling[16]
        add("16 streams: tok/s ≥ 0.85 × batched-bench ceiling", f"{r:.2f} ×", r >= 0.85)
    else:
        add("16 streams: tok/s ≥ 0.85 × batched-bench ceiling", None, None)
    if 1 in a and 1 in b:
        r = a[1]["tokens_per_s"] / b[1]["tokens_per_s"]
        add("1 stream: tok/s ≥ 1.0 × llama-server", f"{r:.2f} ×", r >= 1.0)
        d = (a[1]["ttft_p50"] - b[1]["ttft_p50"]) * 1e3
        add("1 stream: TTFT p50 within 10 ms of llama-server's", f"{d:+.0f} ms", d <= 10)
    else:
        add("1 stream: tok/s ≥ 1.0 × llama-server", None, None)
        add("1 stream: TTFT p50 within 10 ms of llama-server's", None, None)
    if 64 in a:
        m = a[64]
        add("64 streams: no errors", f"{m['ok']} / {m['requests']} ok "
            f"{m['errors'] or ''}".strip(), m["ok"] == m["requests"])
    else:
        add("64 streams: no errors", None, None)
    on, off = shared.get("A", {}), shared.get("A0", {})
    common = sorted(set(on) & set(off))
    if common:
        ratios = {c: on[c]["ttft_p50"] / off[c]["ttft_p50"] for c in common}
        text = ", ".join(f"{c} clients: {r:.2f} ×" for c, r in ratios.items())
        add("shared-system: TTFT p50 ≤ 0.5 × without prefix reuse", text,
            all(r <= 0.5 for r in ratios.values()))
    else:
        add("shared-system: TTFT p50 ≤ 0.5 × without prefix reuse", None, None)
    return rows


def _stream_targets(short: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """The streaming targets: guards on (A) and off (G) against llama-server (B), on the
    gaps between content chunks as the client received them."""
    a, g, b = short.get("A", {}), short.get("G", {}), short.get("B", {})
    rows = ["| target | measured | met |", "|---|---|---|"]

    def ratio(name: str, x: dict[int, dict[str, Any]], n: int, key: str, bound: float,
              higher: bool) -> None:
        if n not in x or n not in b or not b[n][key]:
            rows.append(f"| {name} | – | not measured |")
            return
        r = x[n][key] / b[n][key]
        met = r >= bound if higher else r <= bound
        rows.append(f"| {name} | {r:.2f} × | {'yes' if met else '**no**'} |")

    ratio("guards on, 16 clients: tok/s ≥ 1.0 × llama-server", a, 16, "tokens_per_s", 1.0, True)
    ratio("guards on, 16 clients: TTFT p95 ≤ 1.0 × llama-server", a, 16, "ttft_p95", 1.0,
          False)
    ratio("guards on, 16 clients: chunk gap p95 ≤ 4 × llama-server", a, 16, "itl_p95", 4.0,
          False)
    if 1 in a and 1 in b:
        d = (a[1]["ttft_p50"] - b[1]["ttft_p50"]) * 1e3
        rows.append(f"| guards on, 1 client: TTFT p50 ≤ llama-server + 15 ms | {d:+.0f} ms | "
                    f"{'yes' if d <= 15 else '**no**'} |")
        gap = a[1]["itl_p95"] * 1e3
        rows.append(f"| guards on, 1 client: chunk gap p95 ≤ 60 ms | {gap:.0f} ms | "
                    f"{'yes' if gap <= 60 else '**no**'} |")
    ratio("guards off, 16 clients: TTFT p95 ≤ 1.0 × llama-server", g, 16, "ttft_p95", 1.0,
          False)
    ratio("guards off, 4 clients: tok/s ≥ 1.05 × llama-server", g, 4, "tokens_per_s", 1.05,
          True)
    ratio("guards off, 16 clients: tok/s ≥ 1.05 × llama-server", g, 16, "tokens_per_s", 1.05,
          True)
    return rows


def _proxy_rows(short: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """What putting the appliance (guards off) in front of llama-server adds, per level;
    targets: TTFT p50 at most 5 ms more, tok/s at least 0.97 x."""
    u, b = short.get("U", {}), short.get("B", {})
    rows = ["| clients | added TTFT p50 | TTFT p50 ≤ +5 ms | tok/s ratio | tok/s ≥ 0.97 × |",
            "|---|---|---|---|---|"]
    for n in sorted(set(u) & set(b)):
        added = (u[n]["ttft_p50"] - b[n]["ttft_p50"]) * 1e3
        ratio = u[n]["tokens_per_s"] / b[n]["tokens_per_s"] if b[n]["tokens_per_s"] else 0.0
        rows.append(f"| {n} | {added:+.1f} ms | {'yes' if added <= 5 else '**no**'} | "
                    f"{ratio:.3f} × | {'yes' if ratio >= 0.97 else '**no**'} |")
    return rows


def _machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}; "
            f"load average at the start {load}")


def render(args: argparse.Namespace, s: Setup, runs: list[Run], ceilings: list[dict[int, float]],
           versions: dict[str, str], started: str, machine: str, raw: Path) -> str:
    short = {t: medians(runs, t, "short") for t in ("A", "G", "B", "C", "U")}
    short = {t: m for t, m in short.items() if m}
    shared = {t: medians(runs, t, "shared-system") for t in ("A", "A0", "B")}
    shared = {t: m for t, m in shared.items() if m}
    ceiling: dict[int, float] = {}
    for n in sorted({n for c in ceilings for n in c}):
        ceiling[n] = statistics.median(c[n] for c in ceilings if n in c)
    reps = max((r.rep for r in runs), default=0) + 1
    cmd = "make bench" + (f' BENCH_ARGS="{" ".join(sys.argv[1:])}"' if sys.argv[1:] else "")
    lines = [
        BEGIN,
        "## Side by side (`make bench`)",
        "",
        f"Generated by `{cmd}` (`scripts/bench_side_by_side.py`), started {started} UTC"
        + (" — **quick mode: a check of the tooling, not a measurement**" if args.quick
           else "") + ".",
        "",
        f"- Machine: {machine}.",
        f"- Model: `{s.model.name}` (the same file for every server), {args.max_tokens} "
        f"output tokens per request (`ignore_eos`), temperature {args.temperature}, "
        f"{s.threads} threads, {s.ctx} tokens of "
        f"context per sequence, {s.parallel} parallel sequences (llama-server: "
        f"`-c {s.ctx * s.parallel} -np {s.parallel}`; llama-cpp-python's server has one "
        f"sequence of {s.ctx}).",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"- {reps} repetition(s), interleaved (each repetition starts every server afresh "
        f"in turn: {', '.join(dict.fromkeys(NAMES[r.target] for r in runs))}); medians of "
        f"the repetitions. Client: `appliance bench` in the same process as this script, on "
        f"the same cores. Raw results: `{raw}`.",
        "",
        "### Streamed generation, prompt set `short` (short unique prompts)",
        "",
        "Chunk gaps are the times between content chunks as the client received them (with "
        "the rail on, a chunk is a released window of several tokens); tok/s counts the "
        "completion tokens each answer's `usage` reports, over the level's wall time.",
        "",
        *_table(short),
        "",
        "Ratios appliance / peer (tok/s: higher is better for the appliance; TTFT: lower):",
        "",
        "| clients | tok/s ÷ llama-server | TTFT p50 ÷ llama-server | TTFT p95 ÷ llama-server "
        "| chunk gap p95 ÷ llama-server | guards off: tok/s ÷ llama-server | guards off: TTFT "
        "p95 ÷ llama-server | tok/s ÷ llama-cpp-python | tok/s ÷ ceiling |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    a, g, b, c = (short.get(t, {}) for t in ("A", "G", "B", "C"))

    def r(x: dict[int, dict[str, Any]], y: dict[int, dict[str, Any]], n: int, k: str) -> str:
        return _ratio(x[n][k], y[n][k]) if n in x and n in y else "–"

    for n in sorted(a):
        lines.append(f"| {n} | {r(a, b, n, 'tokens_per_s')} | {r(a, b, n, 'ttft_p50')} | "
                     f"{r(a, b, n, 'ttft_p95')} | {r(a, b, n, 'itl_p95')} | "
                     f"{r(g, b, n, 'tokens_per_s')} | {r(g, b, n, 'ttft_p95')} | "
                     f"{r(a, c, n, 'tokens_per_s')} | "
                     f"{_ratio(a[n]['tokens_per_s'], ceiling.get(n, 0.0))} |")
    lines += ["", "### Shared system prompt (`--prompt-set shared-system`, ~300-token system "
              "prompt)", "", *_table(shared), ""]
    if ceiling:
        lines += ["### Engine ceiling (`llama-batched-bench`, same build as llama-server)", "",
                  f"`-npp 32 -ntg {args.max_tokens} -b 512 -ub 512 -t {s.threads}`, decode "
                  "rate (S_TG) per number of sequences, median of the repetitions:", "",
                  "| sequences | decode tok/s |", "|---|---|",
                  *(f"| {n} | {r:.1f} |" for n, r in ceiling.items()), ""]
    if "U" in short:
        lines += ["### The appliance in front of llama-server (`--peers BU`)", "",
                  *_proxy_rows(short), ""]
    lines += ["### Targets: streaming with the rail on (chunk gaps as received)", "",
              *_stream_targets(short), "",
              "### Targets: throughput and prefix reuse", "", *_targets(short, shared, ceiling),
              "", END]
    return "\n".join(lines)


def write_between_markers(path: Path, block: str) -> None:
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# --- main ----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a check of the tooling: levels 1,4, 4 requests per level, 1 "
                        "repetition, no llama-cpp-python server")
    p.add_argument("--levels", default=None, help="concurrency levels (default 1,4,16,64)")
    p.add_argument("--shared-levels", default=None,
                   help="levels of the shared-system workload (default 1,4,16)")
    p.add_argument("--requests", type=int, default=None,
                   help="requests per level (default: appliance bench's, max(2c, 8))")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.7,
                   help="sampling temperature of every request (default 0.7)")
    p.add_argument("--repetitions", type=int, default=None, help="default 3")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--ctx", type=int, default=2048, help="context per sequence")
    p.add_argument("--parallel", type=int, default=16)
    p.add_argument("--peers", default=None,
                   help="which of B (llama-server), C (llama-cpp-python), U (the appliance "
                        "in front of llama-server) to run (default BC)")
    p.add_argument("--skip-appliance", action="store_true",
                   help="leave out the appliance's own engine (A, A') and the ceiling: "
                        "with --peers BU, only the proxy overhead")
    p.add_argument("--wheelhouse", type=Path, default=REPO / "native" / "wheelhouse" / "cpu")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="build jobs")
    args = p.parse_args(argv)
    q = args.quick
    args.levels = bench.parse_levels(args.levels or ("1,4" if q else "1,4,16,64"))
    args.shared_levels = bench.parse_levels(args.shared_levels or ("4" if q else "1,4,16"))
    args.requests = args.requests or (4 if q else None)
    args.repetitions = args.repetitions or (1 if q else 3)
    args.peers = (args.peers or ("B" if q else "BC")).upper()
    return args


def _plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    plan: list[tuple[str, list[str]]] = []
    if not args.skip_appliance:
        plan.append(("A", ["short", "shared-system"]))
    if "B" in args.peers:
        plan.append(("B", ["short"] if args.skip_appliance else ["short", "shared-system"]))
    if not args.skip_appliance:
        plan += [("G", ["short"]), ("A0", ["shared-system"])]
    if "C" in args.peers:
        plan.append(("C", ["short"]))
    if "U" in args.peers:
        plan.append(("U", ["short"]))
    return plan


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so every server started is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    CACHE.mkdir(parents=True, exist_ok=True)
    settings = config.load()
    store = ModelStore(settings.manifest, settings.models_dir)
    spec = store.resolve(settings.model)
    model = store.location(spec)
    version, flags = native_build_params()
    bins = ensure_llama_cpp(version, flags, args.jobs)
    peer_python = ensure_peer_venv(args.wheelhouse, version) if "C" in args.peers else None
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    machine = _machine()
    logdir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    s = Setup(model, args.threads, args.ctx, args.parallel, bins, peer_python,
              settings.models_dir, logdir)
    server_version = subprocess.run([str(bins / "llama-server"), "--version"],
                                    capture_output=True, text=True).stderr.strip()
    versions = {
        "appliance": f"{importlib.metadata.version('appliance')} (git "
                     f"{_git('rev-parse', '--short', 'HEAD')})",
        "llama-cpp-python": importlib.metadata.version("llama_cpp_python"),
        "llama-server": f"vendored llama.cpp of llama-cpp-python {version} "
                        f"({server_version.splitlines()[0] if server_version else '?'}), "
                        f"`{' '.join(flags)}`",
        "Python": platform.python_version(),
    }
    plan = _plan(args)
    runs: list[Run] = []
    ceilings: list[dict[int, float]] = []
    for rep in range(args.repetitions):
        for target, sets in plan:
            with tempfile.TemporaryDirectory(prefix="data-", dir=logdir) as data, \
                    serve_target(target, s, Path(data)) as base:
                for prompt_set in sets:
                    levels = args.levels if prompt_set == "short" else args.shared_levels
                    log(f"rep {rep + 1}/{args.repetitions}: {NAMES[target]}, {prompt_set}, "
                        f"levels {levels}")
                    runs.append(Run(rep, target, prompt_set,
                                    drive(base, levels, args.requests, args.max_tokens,
                                          prompt_set, args.temperature)))
        if not args.skip_appliance:
            ceilings.append(batched_bench(s, args.levels, args.max_tokens))
    raw = CACHE / f"results-{started.replace(' ', 'T').replace(':', '')}.json"
    raw.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                               "runs": [dataclasses.asdict(r) for r in runs],
                               "ceilings": ceilings}, indent=1))
    block = render(args, s, runs, ceilings, versions, started, machine, raw)
    write_between_markers(args.out, block)
    print(block)
    log(f"wrote {args.out}; server logs in {logdir}")
    return 0


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; every server started was stopped")
        sys.exit(130)
