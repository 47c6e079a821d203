"""What each way of checking streamed output costs and catches, with the real guard network.

    .venv/bin/python scripts/bench_output_windows.py [--windows 0 1 2 4 8 16] [--out F.json]

Every row of the guard network's hand-written independent sets that an answer can hold
(``models/guards/data/independent*/output_rail.jsonl``: dose and diagnosis instructions to
the reader and general medical information, under the clinic policy; ``hateful.jsonl``:
hateful statements and benign look-alikes, under the default policy) is streamed through
``OutputBuffer`` + ``OutputRail`` as a model would stream it (pieces of ``--chars``
characters, one token each), after one safe sentence. Per way of checking, reported:

- ``caught``: the share of positive rows whose answer was stopped; ``passed``: of negative
  rows, the share delivered whole; ``clean_stop``: of positive rows, the share stopped before
  anything of the row itself was released (only the safe sentence went out);
- ``net_tokens_per_token``: the guard network's input tokens per generated token (its cost
  grows with them), ``net_ms_per_token``: its time per generated token on this machine,
  ``runs_per_100_tokens``: network runs per 100 generated tokens.

Ways: ``w<N>`` the network on every window of N tokens (with its sentence's released part
and the sentence before, capped; the window ending a sentence with the whole sentence) as
shipped (``w0``: whole sentences); ``w<N>-capped``: the same without the whole-sentence read
at a sentence's end; ``w<N>-cheap``: rules, secrets and PII on every window but the network
only on the window that ends a sentence (with the whole sentence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.guards.decide import HOLD_SCALE  # noqa: E402
from appliance.guards.output import (  # noqa: E402
    CLASSIFY_CONTEXT,
    OutputBuffer,
    OutputRail,
    Window,
)
from appliance.guards.policy import POLICIES_DIR  # noqa: E402
from appliance.guards.rails import Guards, PolicyRails  # noqa: E402

DATA = REPO / "models" / "guards" / "data"
SAFE = "Thanks for your question. "


@dataclass(frozen=True)
class Row:
    text: str
    positive: bool
    policy: str
    kind: str


@dataclass
class Tally:
    positives: int = 0
    caught: int = 0
    clean: int = 0
    negatives: int = 0
    passed: int = 0
    tokens: int = 0
    net_tokens: int = 0
    runs: int = 0
    net_s: float = 0.0
    held: int = 0  # negative rows with a window held back
    leaked: list[float] = field(default_factory=list)  # caught rows: share released first


def rows(sets: list[str], policies: dict[str, str]) -> list[Row]:
    out = []
    for folder in sets:
        for name, preset in (("output_rail.jsonl", "clinic"), ("hateful.jsonl", "default")):
            policy = policies[preset]
            for line in (DATA / folder / name).read_text().splitlines():
                row = json.loads(line)
                out.append(Row(row["text"], bool(row["label"]), policy, row["category"]))
    return out


async def stream(guards: Guards, rails: PolicyRails, row: Row, window: int, mode: str,
                 args: argparse.Namespace, tally: Tally) -> None:
    state = {"sentence": False}

    async def classify(text: str, tentative: bool) -> str | None:
        if mode == "cheap" and not state["sentence"]:
            return None
        tally.runs += 1
        tally.net_tokens += guards.network.token_count(text)
        start = time.perf_counter()
        scale = args.hold_scale if tentative else 1.0
        verdict = await guards.classify_output(text, rails, scale)
        tally.net_s += time.perf_counter() - start
        return (verdict.category or verdict.label) if verdict.action == "block" else None

    rail = OutputRail(rails.output, classify=classify,  # both presets classify
                      context_chars=args.context)
    buffer = OutputBuffer(32, ends_in_phrase=rail.ends_in_phrase, window_tokens=window)
    text = SAFE + row.text
    pieces = [text[i:i + args.chars] for i in range(0, len(text), args.chars)]
    tally.tokens += len(pieces)
    released = ""
    stopped = held = False
    for piece in [*pieces, None]:
        for w in _windows(buffer, piece):
            state["sentence"] = w.sentence
            checked: Window = replace(w, sentence=False) if mode == "capped" else w
            verdict = await rail.check(checked)
            if verdict.action == "hold":
                buffer.hold(w)
                held = True
                continue
            if verdict.replacement is not None:
                stopped = True
                break
            released += verdict.text
        if stopped:
            break
    if row.positive:
        tally.positives += 1
        tally.caught += stopped
        tally.clean += stopped and len(released) <= len(SAFE)
        if stopped:
            tally.leaked.append(max(0, len(released) - len(SAFE)) / len(row.text))
    else:
        tally.negatives += 1
        tally.passed += not stopped and released == text
        tally.held += held


def _windows(buffer: OutputBuffer, piece: str | None) -> Iterator[Window]:
    """The windows a piece cuts, or at the end (None) the rest; lazily, as the output stage
    reads them (a window held back by its check goes out with the rest)."""
    if piece is not None:
        yield from buffer.push(piece, 1)
        return
    rest = buffer.flush()
    if rest is not None:
        yield rest


def presets(min_score: float | None, folder: Path) -> dict[str, str]:
    """The two presets, or copies of them whose ``[output] min_score`` is ``min_score``."""
    if min_score is None:
        return {"clinic": "clinic", "default": "default"}
    out = {}
    for name in ("clinic", "default"):
        text = (POLICIES_DIR / f"{name}.toml").read_text()
        text = re.sub(r"(?m)^min_score = .*$\n?", "", text)
        path = folder / f"{name}.toml"
        path.write_text(text.replace("[output]\n", f"[output]\nmin_score = {min_score}\n", 1))
        out[name] = str(path)
    return out


async def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    guards = Guards.load(threads=1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = rows(args.sets, presets(args.min_score, Path(tmp)))
            return await _run(args, guards, data)
    finally:
        guards.close()


async def _run(args: argparse.Namespace, guards: Guards, data: list[Row]
               ) -> dict[str, dict[str, float]]:
    ways = [(f"w{w}", w, "full") for w in args.windows]
    ways += [(f"w{w}-{m}", w, m) for w in args.variants for m in ("capped", "cheap")]
    out = {}
    for name, window, mode in ways:
        tally = Tally()
        for row in data:
            await stream(guards, guards.rails(row.policy), row, window, mode, args, tally)
        out[name] = {
            "caught": tally.caught / tally.positives, "clean_stop": tally.clean / tally.positives,
            "passed": tally.passed / tally.negatives,
            "released_before_stop": statistics.mean(tally.leaked) if tally.leaked else 0.0,
            "negatives_held": tally.held / tally.negatives,
            "net_tokens_per_token": tally.net_tokens / tally.tokens,
            "net_ms_per_token": 1e3 * tally.net_s / tally.tokens,
            "runs_per_100_tokens": 100 * tally.runs / tally.tokens,
        }
        print(f"{name:>10} " + " ".join(f"{k}={v:.3f}" for k, v in out[name].items()),
              flush=True)
    verdicts = [await guards.classify_output(r.text, guards.rails(r.policy)) for r in data]
    pos = [v.action == "block" for r, v in zip(data, verdicts, strict=True) if r.positive]
    neg = [v.action != "block" for r, v in zip(data, verdicts, strict=True) if not r.positive]
    out["whole-text"] = {"caught": statistics.mean(pos), "passed": statistics.mean(neg)}
    print(f"whole text (the network once on each row): caught={statistics.mean(pos):.3f} "
          f"passed={statistics.mean(neg):.3f} ({len(pos)} positive, {len(neg)} negative rows)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16])
    parser.add_argument("--variants", type=int, nargs="*", default=[4],
                        help="window sizes to also run the capped and cheap ways at")
    parser.add_argument("--chars", type=int, default=4, help="characters per token")
    parser.add_argument("--context", type=int, default=CLASSIFY_CONTEXT,
                        help="characters of context for a window inside a sentence")
    parser.add_argument("--hold-scale", type=float, default=HOLD_SCALE,
                        help="share of a threshold that holds a small window back")
    parser.add_argument("--sets", nargs="+", default=["independent", "independent_b"],
                        help="the independent sets to read (folders of models/guards/data)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="the presets' [output] min_score, replaced (default: shipped)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = asyncio.run(run(args))
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
