"""Guard latency: the whole input rail and each tier, at 32/128/256-token prompts.

    .venv/bin/python scripts/bench_guards.py [--runs 100] [--out docs/BENCHMARKS.md]

Runs the input rail the server runs (rules stage, then the classifier stage with the
embedding and both heads in parallel, then the topic rail) on prompts of a given token
length, with the default and clinic presets, and writes a table between
``<!-- guard-bench:begin -->`` and ``<!-- guard-bench:end -->`` in the output file.
Measure on an idle machine: the encoder competes with everything else for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from appliance.guards.rails import Guards  # noqa: E402

BEGIN, END = "<!-- guard-bench:begin -->", "<!-- guard-bench:end -->"
SENTENCE = ("the clinic asked about the new booking system for morning appointments and how "
            "patients could change their visit online before the weekend")


def prompt(guards: Guards, tokens: int) -> str:
    words = SENTENCE.split(" ")
    text = " ".join(words[i % len(words)] for i in range(tokens - 2))
    assert len(guards.encoder._tokenizer.encode(text).ids) == tokens
    return text


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(guards: Guards, policy: str, tokens: int, runs: int) -> dict[str, float]:
    rails = guards.rails(policy)
    text = prompt(guards, tokens)
    for _ in range(3):
        await guards.check_input([text], 0, rails)
    total: list[float] = []
    tiers: dict[str, list[float]] = {}
    for _ in range(runs):
        start = time.perf_counter()
        check = await guards.check_input([text], 0, rails)
        total.append((time.perf_counter() - start) * 1000.0)
        assert check.allowed
        for v in check.verdicts:
            tiers.setdefault(v.guard, []).append(v.ms)
    return {"p50": statistics.median(total), "p95": pct(total, 0.95),
            **{k: statistics.median(v) for k, v in tiers.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args()
    guards = Guards.load()
    rows = []
    try:
        for policy in ("default", "clinic"):
            for tokens in (32, 128, 256):
                m = asyncio.run(measure(guards, policy, tokens, args.runs))
                rows.append(f"| {policy} | {tokens} | {m['p50']:.1f} | {m['p95']:.1f} | "
                            f"{m.get('rules', 0):.2f} | {m.get('embedding', 0):.1f} | "
                            f"{m.get('prompt-injection', 0):.2f} | "
                            f"{m.get('content-safety', 0):.2f} |")
                print(rows[-1], flush=True)
    finally:
        guards.close()
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    block = "\n".join([
        BEGIN,
        f"Command: `.venv/bin/python scripts/bench_guards.py --runs {args.runs}` on "
        f"{os.cpu_count()} cores ({cpu}), {time.strftime('%Y-%m-%d')}. Whole input rail "
        "(rules stage + classifier stage + topics) per prompt, ms; tier columns are medians "
        "of each guard's own time (the two heads run in parallel on the shared embedding).",
        "",
        "| policy | prompt tokens | p50 | p95 | rules | embedding | injection head | "
        "safety head |",
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
