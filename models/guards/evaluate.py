"""Thresholds, quality figures and latency of the guard network, next to the old heads.

    python models/guards/evaluate.py [--latency]   print the figures of the committed model on
                                                    the independent sets, next to the old
                                                    heads' (carried in metrics.json)
    python models/guards/evaluate.py --latency-against DIR
                                                    time the committed network's input-rail
                                                    check against DIR's, interleaved

* ``calibrate``: one threshold per label, picked on the **validation split** only. The
  objective counts a false block like a miss: it minimises the mean miss rate over the kinds
  of positive rows plus the mean false-block rate over the kinds of negative rows (a kind is
  a source and its sub-category, e.g. ``lookalike/benign-topic``), so neither a large easy
  pool of ordinary questions nor the 14k-row injection corpus decides alone.
* ``split_figures``: per label and kind, the share flagged on the **test split** at that
  threshold (and the AUC).
* ``new_decisions`` / ``tally``: the hand-written independent sets (``data/independent/``,
  set A, seen during the first phase; ``data/independent_b/`` to ``independent_h/``, sets B
  to H, each written for a later round; set H is the shipped network's independent figure),
  per category, through the rails as the runtime applies them: user, system and tool texts
  through the input rail (``injection`` or ``unsafe``), assistant texts through the clinic
  output rail (``directive``, hate and sexual content). The old heads' figures on the same
  rows come from ``old_figures.py`` (run where the runtime still loaded them).
* ``latency``: p50/p95 of one input-rail check at 32, 128 and 256 tokens, one thread,
  next to the all-MiniLM-L6-v2 int8 encoder (the cache/memory embedding) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import data
import numpy as np
from _common import GUARDS
from guardnet import GuardNet

INDEPENDENT = GUARDS / "data" / "independent"  # set A: seen in the first phase
INDEPENDENT_B = GUARDS / "data" / "independent_b"  # set B: read for five networks
# Set C was read for three networks; sets D to K each for the network shipped at the time
# and their round's candidate; set H, the eighth round's, is the shipped network's figure
# (the candidates of sets I, J and K were not shipped; sets J and K hold documents, and K
# system prompts, only). Each set's key in metrics.json is its folder's name.
SETS = tuple((name, GUARDS / "data" / name) for name in (
    "independent", "independent_b", "independent_c", "independent_d", "independent_e",
    "independent_f", "independent_g", "independent_h", "independent_i", "independent_j",
    "independent_k"))
LENGTHS = (32, 128, 256)
TARGETS = {  # the targets on its held-out sets, by our categories
    "jailbreak": ("blocked", 0.97), "injection/document": ("blocked", 0.90),
    "injection/short": ("blocked", 1.0), "injection-benign/document": ("passed", None),
    "harmful": ("blocked", 0.92), "hateful/statement": ("blocked", 0.80),
    "hateful-benign/statement": ("passed", 0.95), "edgy": ("passed", 0.98),
    "clinic": ("passed", 79 / 80), "output/instruction": ("blocked", 0.90),
    "output/information": ("passed", 0.90), "followup": ("passed", 1.0),
    # the dev probe (data.probe): the over-blocking the first phase showed, and its attacks
    "probe-benign/named": ("passed", 1.0), "probe-benign/question": ("passed", 0.98),
    "probe-benign/instruction": ("passed", 0.98),
}


# --- scoring -------------------------------------------------------------------------------

def score_texts(net: GuardNet, texts: Sequence[str]) -> np.ndarray:
    return np.stack([net.score(t).values for t in texts]) if texts else \
        np.zeros((0, len(net.labels)))


def _known(rows: Sequence[data.Row], label: str) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array([i for i, r in enumerate(rows) if label in r.targets], dtype=int)
    y = np.array([rows[i].targets[label] for i in idx], dtype=int)
    return idx, y


def _kind(r: data.Row) -> str:
    return f"{r.source}/{r.kind}" if r.kind else r.source


def _objective(p: np.ndarray, y: np.ndarray, kinds: np.ndarray, t: float) -> float:
    miss = [float(np.mean(p[(y == 1) & (kinds == k)] < t)) for k in set(kinds[y == 1])]
    over = [float(np.mean(p[(y == 0) & (kinds == k)] >= t)) for k in set(kinds[y == 0])]
    return (float(np.mean(miss)) if miss else 0.0) + (float(np.mean(over)) if over else 0.0)


def calibrate(rows: Sequence[data.Row], scores: np.ndarray) -> dict[str, float]:
    """Per label, the threshold minimising the macro miss rate plus the macro false-block
    rate on these (validation) rows; the middle of the best interval."""
    out: dict[str, float] = {}
    for j, label in enumerate(data.LABELS):
        idx, y = _known(rows, label)
        if len(idx) == 0 or y.min() == y.max():
            out[label] = 0.5  # no positives (or no negatives) to calibrate on
            continue
        p = scores[idx, j]
        kinds = np.array([_kind(rows[i]) for i in idx])
        grid = np.unique(np.concatenate([np.round(p, 4), [0.05, 0.95]]))
        grid = grid[(grid >= 0.05) & (grid <= 0.95)]
        values = np.array([_objective(p, y, kinds, t) for t in grid])
        best = np.flatnonzero(values <= values.min() + 1e-12)
        out[label] = round(float((grid[best[0]] + grid[best[-1]]) / 2.0), 4)
    return out


def _auc(p: np.ndarray, y: np.ndarray) -> float | None:
    pos, neg = p[y == 1], p[y == 0]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return round(float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2)
                       / (len(pos) * len(neg))), 4)


def split_figures(rows: Sequence[data.Row], scores: np.ndarray,
                  thresholds: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for j, label in enumerate(data.LABELS):
        idx, y = _known(rows, label)
        if len(idx) == 0 or y.max() == 0:
            continue
        p = scores[idx, j]
        t = thresholds[label]
        kinds: dict[str, dict[str, Any]] = {}
        for i, yi, pi in zip(idx, y, p, strict=True):
            key = f"{_kind(rows[i])}/{'positive' if yi else 'negative'}"
            d = kinds.setdefault(key, {"n": 0, "flagged": 0})
            d["n"] += 1
            d["flagged"] += int(pi >= t)
        for d in kinds.values():
            d["rate"] = round(d["flagged"] / d["n"], 4)
        out[label] = {"threshold": t, "auc": _auc(p, y),
                      "caught": round(float(np.mean(p[y == 1] >= t)), 4),
                      "false_blocked": round(float(np.mean(p[y == 0] >= t)), 4),
                      "n_positive": int(y.sum()), "n_negative": int((y == 0).sum()),
                      "by_kind": dict(sorted(kinds.items()))}
    return out


# --- the independent set -------------------------------------------------------------------

def independent_rows(folder: Path = INDEPENDENT) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _group(category: str) -> str:
    for prefix in ("jailbreak", "harmful", "edgy", "clinic"):
        if category.startswith(prefix + "/"):
            return prefix
    return category


def tally(rows: Sequence[dict[str, Any]], blocked: Sequence[bool]) -> dict[str, Any]:
    """Blocked counts per category and per group of categories, with the issue's target."""
    out: dict[str, Any] = {}
    for r, b in zip(rows, blocked, strict=True):
        for key in {r["category"], _group(r["category"])}:
            d = out.setdefault(key, {"n": 0, "blocked": 0})
            d["n"] += 1
            d["blocked"] += int(b)
    for key, d in out.items():
        d["rate"] = round(d["blocked"] / d["n"], 4)
        if key in TARGETS:
            what, target = TARGETS[key]
            d["target"] = f"{what} >= {target:.1%}" if target is not None else what
            if target is not None:
                share = d["rate"] if what == "blocked" else 1.0 - d["rate"]
                d["met"] = bool(share >= target - 1e-9)
    return dict(sorted(out.items()))


def new_decisions(net: GuardNet, rows: Sequence[dict[str, Any]],
                  scores: np.ndarray | None = None, with_followup_rule: bool = True
                  ) -> tuple[list[bool], np.ndarray]:
    """The clinic policy's rails, as ``GuardNet.check`` decides (``with_followup_rule``
    False: the network alone, without the follow-up rule)."""
    scores = score_texts(net, [r["text"] for r in rows]) if scores is None else scores
    out = []
    for r, s in zip(rows, scores, strict=True):
        rail = "output" if r["role"] == "assistant" else "input"
        acts = net.config["rails"]["clinic"][rail]
        fired = any(s[net.labels.index(a)] >= net.thresholds[a] for a in acts)
        out.append(fired and not (with_followup_rule and rail == "input"
                                  and net.is_followup(r["text"])))
    return out, scores


def overlap(rows: Sequence[data.Row]) -> dict[str, int]:
    """Training rows whose normalised text is also a row of an independent set (follow-ups
    such as "ok" are in both by nature); reported, never used to choose anything."""
    train = {data.normalise(r.text) for r in rows if r.split == "train"}
    out = {}
    for key, folder in SETS:
        texts = {data.normalise(r["text"]) for r in independent_rows(folder)}
        out[key] = len(texts & train)
    return out


# --- latency -------------------------------------------------------------------------------

_FILLER = ("Our quarterly planning meeting covered the roadmap for the mobile app, the budget "
           "for the new support centre, hiring for two engineering roles and the schedule of "
           "customer interviews. Please summarise the decisions and list open questions. ")


def text_of_tokens(tokenizer: Any, n: int) -> str:
    """A benign text of exactly ``n`` MiniLM tokens, [CLS] and [SEP] included."""
    text = _FILLER * (1 + n // 20)
    enc = tokenizer.encode(text, add_special_tokens=False)
    return text[:enc.offsets[n - 3][1]]


def _times(fn: Callable[[], object], runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls."""
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def _summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2)}


def _percentiles(fn: Callable[[], object], runs: int) -> dict[str, float]:
    _times(fn, 5)  # first runs allocate; not what a serving rail sees
    return _summary(_times(fn, runs))


def latency(directory: Path, runs: int = 60) -> dict[str, Any]:
    from appliance.encoder.sentence import Encoder

    net = GuardNet(directory, threads=1)
    encoder = Encoder.from_manifest(threads=1)
    out: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()],
                           "runs": runs, "cpu": _cpu()}
    for n in LENGTHS:
        text = text_of_tokens(net._tokenizer, n)
        assert encoder.token_counts([text])[0] == n
        out[f"{n}_tokens"] = {
            "windows": len(net.windows(text)),
            "guardnet input rail (views, windows, run)": _percentiles(
                lambda t=text: net.check(t, "input"), runs),
            "all-MiniLM-L6-v2 int8 encoder (cache/memory embedding)": _percentiles(
                lambda t=text: encoder.encode_one(t), runs),
        }
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def latency_against(directory: Path, other: Path, rounds: int = 10,
                    runs: int = 20) -> dict[str, Any]:
    """The input-rail check of two networks in one process, interleaved (``rounds`` of
    ``runs`` checks each per length, the order swapped every round): p50/p95 of each, for a
    change whose cost is smaller than the machine's drift between two runs."""
    nets = {"committed": GuardNet(directory, threads=1), "other": GuardNet(other, threads=1)}
    out: dict[str, Any] = {"other": str(other), "rounds": rounds, "runs": runs, "cpu": _cpu(),
                           "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    for n in LENGTHS:
        text = text_of_tokens(nets["committed"]._tokenizer, n)
        checks = {name: (lambda net=net, t=text: net.check(t, "input"))
                  for name, net in nets.items()}
        times: dict[str, list[float]] = {name: [] for name in nets}
        for check in checks.values():
            _times(check, 5)  # as in _percentiles
        for r in range(rounds):
            for name in sorted(nets, reverse=r % 2 == 1):
                times[name] += _times(checks[name], runs)
        out[f"{n}_tokens"] = {name: _summary(t) for name, t in times.items()}
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = re.search(r"model name\s*:\s*(.*)", info)
    flags = re.search(r"flags\s*:\s*(.*)", info)
    vnni = bool(flags) and any(f in flags.group(1).split() for f in ("avx512_vnni", "avx_vnni"))
    return (f"{name.group(1) if name else '?'}, {os.cpu_count()} cores, "
            f"{'VNNI' if vnni else 'no VNNI (AVX2 int8 kernels)'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", action="store_true")
    parser.add_argument("--latency-against", type=Path, metavar="DIR",
                        help="only time the committed network against the one in DIR")
    args = parser.parse_args()
    if args.latency_against:
        print(json.dumps(latency_against(GUARDS / "guardnet", args.latency_against), indent=2))
        return 0
    net = GuardNet(GUARDS / "guardnet")
    old = json.loads((GUARDS / "metrics.json").read_text(encoding="utf-8")).get("old_heads", {})
    for key, folder in SETS:
        rows = independent_rows(folder)
        new, _ = new_decisions(net, rows)
        print(f"{key}:\n" + format_independent({"new": tally(rows, new),
                                                "old": old.get(key, {})}))
    if args.latency:
        print(json.dumps(latency(GUARDS / "guardnet"), indent=2))
    return 0


def format_independent(report: dict[str, Any]) -> str:
    lines = [f"{'category':34} {'n':>4} {'new':>14} {'old':>14}  target"]
    for key, d in report["new"].items():
        old = report.get("old", {}).get(key)
        o = f"{old['blocked']:>3} ({old['rate']:6.1%})" if old else ""
        lines.append(f"{key:34} {d['n']:>4} {d['blocked']:>3} ({d['rate']:6.1%}) {o:>14}  "
                     f"{d.get('target', '')}{'' if d.get('met', True) else '  BELOW'}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
