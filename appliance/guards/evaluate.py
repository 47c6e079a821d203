"""``appliance guard eval``: run a labelled JSONL set through the input rail and report.

Rows are ``{"text": ..., "label": ...}``; the labels ``benign``, ``safe`` and ``allow`` mean
"must pass", any other label means "must be caught". Reported per label: how many rows, the
catch rate (caught = blocked, or answered by a topic rail) or, for benign labels, the
false-flag rate (anything but a plain allow: blocked, topic or flagged); ROC AUC of the
pipeline's score (the highest guard score of a row) against the benign rows; latency p50/p95
of the whole rail and the mean per guard.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.errors import ConfigError
from appliance.guards.rails import Guards, PolicyRails, TextReport

BENIGN = frozenset({"benign", "safe", "allow"})


@dataclass(frozen=True)
class Row:
    text: str
    label: str


@dataclass(frozen=True)
class LabelReport:
    label: str
    rows: int
    rate: float  # catch rate, or false-flag rate for a benign label
    auc: float | None  # against the benign rows; None for benign labels or without them


@dataclass(frozen=True)
class EvalReport:
    policy: str
    labels: tuple[LabelReport, ...]
    ms_p50: float
    ms_p95: float
    guard_ms: tuple[tuple[str, float], ...]  # mean ms per guard


def read_rows(path: Path) -> list[Row]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not JSON: {exc}") from exc
        if (not isinstance(obj, dict) or not isinstance(obj.get("text"), str)
                or not isinstance(obj.get("label"), str)):
            raise ConfigError(f"{path}:{n}: a row needs string fields 'text' and 'label'")
        rows.append(Row(obj["text"], obj["label"]))
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """ROC AUC by ranks (ties count half); None without both classes."""
    if not positive or not negative:
        return None
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def _score(report: TextReport) -> float:
    return max((v.score for v in report.verdicts if v.guard != "embedding"), default=0.0)


def _caught(report: TextReport) -> bool:
    return not report.allowed or report.topic is not None


async def evaluate(guards: Guards, rails: PolicyRails, rows: Sequence[Row]) -> EvalReport:
    reports = [await guards.check_text(row.text, "user", rails) for row in rows]
    by_label: dict[str, list[TextReport]] = defaultdict(list)
    for row, report in zip(rows, reports, strict=True):
        by_label[row.label].append(report)
    benign_scores = [_score(r) for label, rs in by_label.items() if label in BENIGN
                     for r in rs]
    labels = []
    for label in sorted(by_label):
        rs = by_label[label]
        if label in BENIGN:
            rate = sum(1 for r in rs if r.action != "allow" or r.topic is not None) / len(rs)
            labels.append(LabelReport(label, len(rs), rate, None))
        else:
            labels.append(LabelReport(label, len(rs), sum(map(_caught, rs)) / len(rs),
                                      auc([_score(r) for r in rs], benign_scores)))
    per_guard: dict[str, list[float]] = defaultdict(list)
    for r in reports:
        for v in r.verdicts:
            per_guard[v.guard].append(v.ms)
    ms = sorted(r.ms for r in reports)
    return EvalReport(
        rails.policy.name, tuple(labels), statistics.median(ms),
        ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        tuple((g, statistics.fmean(v)) for g, v in sorted(per_guard.items())))


def format_report(report: EvalReport) -> str:
    lines = [f"policy {report.policy}",
             f"{'label':24} {'rows':>5} {'rate':>16} {'auc':>6}"]
    for lab in report.labels:
        kind = "false-flag" if lab.label in BENIGN else "caught"
        auc_text = f"{lab.auc:.3f}" if lab.auc is not None else "-"
        lines.append(f"{lab.label:24} {lab.rows:>5} {kind:>10} {lab.rate:>5.1%} {auc_text:>6}")
    lines.append(f"latency: p50 {report.ms_p50:.1f} ms, p95 {report.ms_p95:.1f} ms")
    lines.append("mean per guard: " + ", ".join(f"{g} {m:.2f} ms" for g, m in report.guard_ms))
    return "\n".join(lines)
