"""The results file: one Markdown page (``results.md``) rendered from the results that are
written beside it as JSON (``results.json``)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

_METRICS = ("tokens_per_s", "ttft_p50", "ttft_p95", "itl_p50", "itl_p95", "e2e_p50")


def medians(bench: dict[str, Any], target: str) -> dict[int, dict[str, Any]]:
    """Per concurrency level: the median of each metric over the rounds, counts summed."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for run in bench.get("runs", []):
        if run["target"] == target:
            for level in run["levels"]:
                rows.setdefault(int(level["concurrency"]), []).append(level)
    out: dict[int, dict[str, Any]] = {}
    for c, levels in sorted(rows.items()):
        m: dict[str, Any] = {k: statistics.median(float(r[k]) for r in levels) for k in _METRICS}
        m["ok"] = sum(int(r["ok"]) for r in levels)
        m["requests"] = sum(int(r["requests"]) for r in levels)
        errors: dict[str, int] = {}
        for r in levels:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + int(v)
        m["errors"], m["rounds"] = errors, len(levels)
        out[c] = m
    return out


def _ms(x: float) -> str:
    return "–" if math.isnan(x) else f"{x * 1e3:.0f} ms" if x >= 0.01 else f"{x * 1e3:.1f} ms"


def _ratio(a: float, b: float) -> str:
    return "–" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"


def bench_tables(bench: dict[str, Any]) -> list[str]:
    per = {t: medians(bench, t) for t in ("appliance", "llama-server")}
    lines = ["| clients | server | tok/s | TTFT p50 | TTFT p95 | chunk gap p50 | chunk gap p95 "
             "| e2e p50 | ok / requests | errors | rounds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted({c for m in per.values() for c in m}):
        for target, m in per.items():
            if c in m:
                r = m[c]
                errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "–"
                lines.append(f"| {c} | {target} | {r['tokens_per_s']:.1f} | "
                             f"{_ms(r['ttft_p50'])} | {_ms(r['ttft_p95'])} | "
                             f"{_ms(r['itl_p50'])} | {_ms(r['itl_p95'])} | "
                             f"{r['e2e_p50']:.2f} s | {r['ok']} / {r['requests']} | {errs} | "
                             f"{r['rounds']} |")
    a, b = per["appliance"], per["llama-server"]
    lines += ["", "Appliance ÷ llama-server (tok/s: above 1 is better for the appliance; "
              "times: below 1):", "",
              "| clients | tok/s | TTFT p50 | TTFT p95 | chunk gap p95 |", "|---|---|---|---|---|"]
    for c in sorted(set(a) & set(b)):
        lines.append(f"| {c} | {_ratio(a[c]['tokens_per_s'], b[c]['tokens_per_s'])} | "
                     f"{_ratio(a[c]['ttft_p50'], b[c]['ttft_p50'])} | "
                     f"{_ratio(a[c]['ttft_p95'], b[c]['ttft_p95'])} | "
                     f"{_ratio(a[c]['itl_p95'], b[c]['itl_p95'])} |")
    return lines


def _machine(r: dict[str, Any]) -> list[str]:
    m, b = r.get("machine", {}), r.get("builds", {})
    gpus = "; ".join(f"{g.get('name')} (compute capability {g.get('compute_cap')}, "
                     f"{g.get('memory.total')}, driver {g.get('driver_version')})"
                     for g in m.get("gpus", [])) or "none used (dry run)"
    return [
        f"- GPU: {gpus}.",
        f"- CPU: {m.get('cores')} cores, {m.get('cpu')}; {m.get('system')}; load average "
        f"at the start {m.get('load')}; network: {m.get('network')}.",
        f"- Python: {b.get('python', '?')} (a venv over the machine's own packages).",
        f"- Wheel: `{b.get('wheel', '?')}`, `native/build.sh {b.get('backend', '?')}` with "
        f"`{b.get('wheel_flags', '?')}`" + (f"; cuBLAS from `{b['cublas_home']}`"
                                            if b.get("cublas_home") else "") + ".",
        f"- llama-server: {b.get('server_mode', '?')}; `{b.get('server_version', '?')}`.",
    ]


def _deps(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| package | pinned | found | from | imports |", "|---|---|---|---|---|"]
    for d in rows:
        found = d.get("found") or "**missing**"
        if d.get("found") and not d.get("as_pinned", True):
            found = f"{found} (differs)"
        imports = "yes" if d.get("imports") else f"**no**: {d.get('error', '')}"
        lines.append(f"| {d['name']} | {d['wanted']} | {found} | {d.get('source')} | "
                     f"{imports} |")
    return lines


def render(r: dict[str, Any]) -> str:
    dry = r.get("dry_run", False)
    title = ("GPU check: dry run on CPU (the CPU backend, no layer offloaded: not a GPU "
             "figure)" if dry else "GPU check")
    lines = [f"# {title}", "", f"`native/gpu-check.sh{' --dry-run' if dry else ''}`, "
             f"started {r.get('started')}, {r.get('total_s', 0):.0f} s in all; "
             f"{'**failed**: ' + r['error'] if r.get('error') else 'every step passed'}.",
             "", *_machine(r), ""]
    smoke = r.get("smoke")
    if smoke:
        lines += ["## End-to-end smoke", "",
                  f"Ready after {smoke.get('ready_s')} s, guards {smoke.get('guards')}; "
                  f"backend: `{smoke.get('backend')}`. Chat: {smoke.get('chat')!r}; streamed "
                  f"in {smoke.get('stream_chunks')} chunks: {smoke.get('stream')!r}; "
                  f"embeddings of dimension {smoke.get('embedding_dim')}; clean exit on "
                  f"SIGTERM.", ""]
    bench = r.get("bench")
    if bench and bench.get("runs"):
        cfg = bench["config"]
        lines += ["## Side by side", "",
                  f"The appliance (guards on) and llama-server (`-ngl {cfg['ngl']} -np "
                  f"{cfg['parallel']} -c {cfg['ctx'] * cfg['parallel']}`), the same model "
                  f"file, {cfg['threads']} threads, {cfg['max_tokens']} tokens per answer, "
                  f"prompt set `short`; {cfg['rounds']} interleaved rounds, medians. Chunk "
                  f"gaps as received by the client; tok/s from `usage`.", "",
                  *bench_tables(bench), ""]
        lines += [f"- Not run: {s}" for s in bench.get("skipped", [])]
    lines += ["## Steps", "", "| step | seconds | status | note |", "|---|---|---|---|",
              *(f"| {s['name']} | {s['seconds']:.1f} | {s['status']} | {s['note']} |"
                for s in r.get("steps", [])), ""]
    if r.get("deps"):
        lines += ["## Python packages", "", *_deps(r["deps"]), ""]
    if r.get("notes"):
        lines += ["## Notes", "", *(f"- {n}" for n in r["notes"]), ""]
    lines += ["The raw results: `results.json` beside this file.", ""]
    return "\n".join(lines)


def write(out: Path, results: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    page = out / "results.md"
    page.write_text(render(results))
    return page
