"""Guard latency: the input rail at 32/128/256-token prompts, the output rail per window, and
the MiniLM-L6 int8 encoder (the old rail's dominant cost) in the same run.

    .venv/bin/python scripts/bench_guards.py [--runs 60] [--out docs/BENCHMARKS.md]

Runs the input rail the server runs (rules stage, then the classifier stage: the guard
network's pass and, under the clinic policy, the topic rail's embedding alongside) on prompts
of a given token length with the default and clinic presets; the output rail's check of one
window as the server makes it (the window with the end of its sentence and the sentence
before: about 40-60 tokens); and one all-MiniLM-L6-v2 int8 encoding of each prompt (what the
old rail paid before its heads, and what the cache and memory pay when they embed). Writes a
table between ``<!-- guard-bench:begin -->`` and ``<!-- guard-bench:end -->`` in the output
file, with the load average before and after. Measure on an idle machine: both models compete
with everything else for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance.guards.rails import Guards, PolicyRails  # noqa: E402

BEGIN, END = "<!-- guard-bench:begin -->", "<!-- guard-bench:end -->"
SENTENCE = ("the clinic asked about the new booking system for morning appointments and how "
            "patients could change their visit online before the weekend")
WINDOW = ("Thanks for your question. Most patients can change their appointment online, "
          "from the booking page, up to a day before the visit. ")


def prompt(guards: Guards, tokens: int) -> str:
    words = SENTENCE.split(" ")
    text = " ".join(words[i % len(words)] for i in range(tokens - 2))
    assert guards.network.token_count(text) == tokens
    return text


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(fn: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    for _ in range(3):
        await fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


async def measure(guards: Guards, runs: int) -> list[str]:
    rows = []
    for policy in ("default", "clinic"):
        rails = guards.rails(policy)
        for tokens in (32, 128, 256):
            text = prompt(guards, tokens)

            async def rail(t: str = text, r: PolicyRails = rails) -> object:
                check = await guards.check_input([t], 0, r)
                assert check.allowed
                return check

            async def encoder(t: str = text) -> object:
                return await asyncio.to_thread(guards.encoder.encode_one, t)

            new, old = await timed(rail, runs), await timed(encoder, runs)
            rows.append(f"| {policy} input | {tokens} | {len(guards.network.windows(text))} | "
                        f"{statistics.median(new):.1f} | {pct(new, 0.95):.1f} | "
                        f"{statistics.median(old):.1f} | {pct(old, 0.95):.1f} | "
                        f"{statistics.median(new) / statistics.median(old):.2f} |")
            print(rows[-1], flush=True)
        async def check_window(r: PolicyRails = rails) -> object:
            return await guards.classify_output(WINDOW, r)

        window = await timed(check_window, runs)
        old = await timed(lambda: asyncio.to_thread(guards.encoder.encode_one, WINDOW), runs)
        rows.append(f"| {policy} output window | {guards.network.token_count(WINDOW)} | 1 | "
                    f"{statistics.median(window):.1f} | {pct(window, 0.95):.1f} | "
                    f"{statistics.median(old):.1f} | {pct(old, 0.95):.1f} | "
                    f"{statistics.median(window) / statistics.median(old):.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    guards = Guards.load()
    before = os.getloadavg()
    try:
        rows = asyncio.run(measure(guards, args.runs))
    finally:
        guards.close()
    after = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    block = "\n".join([
        BEGIN,
        f"Command: `.venv/bin/python scripts/bench_guards.py --runs {args.runs}` on "
        f"{os.cpu_count()} cores ({cpu}), {time.strftime('%Y-%m-%d')}, load average "
        f"{before[0]:.1f} before and {after[0]:.1f} after. Input: the whole input rail (rules "
        "+ the guard network's pass, + the topic rail's embedding under clinic) per prompt; "
        "output: the network's check of one streamed window with its context; next to one "
        "all-MiniLM-L6-v2 int8 encoding of the same text in the same run (the old rail's "
        "dominant cost, and what the cache and memory pay when consulted). ms.",
        "",
        "| rail | tokens | windows | p50 | p95 | MiniLM-L6 p50 | MiniLM-L6 p95 | "
        "ratio (p50) |",
        "|---|---|---|---|---|---|---|---|",
        *rows, END])
    text = args.out.read_text() if args.out.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Guard latency (`scripts/bench_guards.py`)\n\n" + \
            block + "\n"
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
