"""The output rail on the model's own answers: how often it stops an ordinary answer.

    .venv/bin/python scripts/bench_output_samples.py [--sets independent_b] [--seeds 4]
        [--min-score 0 0.5] [--out F.json]

1. The appliance, guards off, started through its CLI, answers every benign prompt
   (``label`` 0) of the sets' ``clinic.jsonl`` and ``edgy_benign.jsonl``, streamed, at
   temperature 1.0 with ``--seeds`` seeds each; each answer's token pieces are kept as the
   stream delivered them.
2. Each answer is replayed through the output stage's ``OutputBuffer`` + ``OutputRail``
   (the guard network on every window, with its context) under the default and clinic
   presets, once per ``--min-score`` (the presets' ``[output] min_score`` replaced).

Reported per preset and min_score: answers stopped, and the text of each stop. Nothing here
says whether a stopped answer deserved it: read them (the model is small; some answers
are rude).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_output_windows import _windows, presets  # noqa: E402
from bench_side_by_side import free_port, running  # noqa: E402

from appliance import config  # noqa: E402
from appliance.guards.output import OutputBuffer  # noqa: E402
from appliance.guards.rails import Guards  # noqa: E402

DATA = REPO / "models" / "guards" / "data"


def prompts(sets: list[str]) -> list[str]:
    out = []
    for folder in sets:
        for name in ("clinic.jsonl", "edgy_benign.jsonl"):
            for line in (DATA / folder / name).read_text().splitlines():
                row = json.loads(line)
                if not row["label"]:
                    out.append(row["text"])
    return out


def generate(args: argparse.Namespace, questions: list[str]) -> list[dict[str, Any]]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        argv = [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1", "--port",
                str(port), "--data-dir", data, "--guards", "false", "--parallel", "8",
                "--queue-depth", "256", "--cache-enabled", "false"]
        with running("appliance, guards off", argv, "/ready", port,
                     Path(data) / "server.log") as base, \
                openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0,
                              timeout=600) as client:
            def one(job: tuple[str, int]) -> dict[str, Any]:
                question, seed = job
                pieces = []
                for chunk in client.chat.completions.create(
                        model="default", messages=[{"role": "user", "content": question}],
                        temperature=1.0, seed=seed, max_tokens=args.max_tokens, stream=True):
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
                return {"question": question, "seed": seed, "pieces": pieces}

            jobs = [(q, s) for q in questions for s in range(args.seeds)]
            with ThreadPoolExecutor(8) as pool:
                return list(pool.map(one, jobs))


async def stopped(guards: Guards, policy: str, pieces: list[str], holdback: int
                  ) -> str | None:
    """The label that stops this answer in the output stage, or None: it goes out whole."""
    rails = guards.rails(policy)
    rail = guards.output_rail(rails)
    buffer = OutputBuffer(holdback, ends_in_phrase=rail.ends_in_phrase,
                          window_tokens=rails.policy.output.window_tokens)
    for piece in [*pieces, None]:
        for window in _windows(buffer, piece):
            verdict = await rail.check(window)
            if verdict.action == "hold":
                buffer.hold(window)
            elif verdict.replacement is not None:
                return verdict.rule or "blocked"
    return None


async def replay(args: argparse.Namespace, answers: list[dict[str, Any]]) -> dict[str, Any]:
    guards = Guards.load(threads=1)
    holdback = config.load(env={}).guard_holdback_tokens  # the server's default
    out: dict[str, Any] = {}
    try:
        for min_score in args.min_score:
            with tempfile.TemporaryDirectory() as tmp:
                paths = presets(min_score, Path(tmp))
                for preset, path in paths.items():
                    stops = []
                    for a in answers:
                        label = await stopped(guards, path, a["pieces"], holdback)
                        if label is not None:
                            stops.append({"label": label, "question": a["question"],
                                          "seed": a["seed"], "answer": "".join(a["pieces"])})
                    key = f"{preset}, min_score {min_score}"
                    out[key] = {"answers": len(answers), "stopped": len(stops), "stops": stops}
                    print(f"{key}: {len(stops)} of {len(answers)} answers stopped "
                          f"({100 * len(stops) / len(answers):.1f}%)", flush=True)
    finally:
        guards.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["independent_b"])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--min-score", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--answers", type=Path, help="reuse (or keep) the answers here")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.answers is not None and args.answers.is_file():
        answers = json.loads(args.answers.read_text())
    else:
        answers = generate(args, prompts(args.sets))
        if args.answers is not None:
            args.answers.write_text(json.dumps(answers))
    out = asyncio.run(replay(args, answers))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
