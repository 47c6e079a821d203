"""``appliance guard eval``: run a labelled JSONL set through the rails and report.

Rows are ``{"text": ..., "label": ...}``: the labels ``benign``, ``safe`` and ``allow`` mean
"must pass", any other label means "must be caught", and the label names the category
reported. Rows of the independent sets (``models/guards/data/independent*/``) are read too:
``{"text", "label": 0 | 1, "category", "role"}``, 1 meaning "must be caught"; a row whose
``role`` is ``assistant`` goes through the output rail, any other through the input rail
(``system`` as a system prompt: the policy's ``system_action`` applies).

Reported per category: how many rows, the catch rate (caught = blocked, or answered by a
topic rail) or, for a must-pass category, the false-block rate (anything but a plain allow:
blocked, topic or flagged); ROC AUC of the rail's score (the highest guard score of a row)
against the must-pass rows of the same rail; the guards that caught its rows (or, for rows
they did not stop, only flagged or redacted them: named with that action). Then the
thresholds the policy uses (the network's calibrated ones, or the policy's overrides), the
latency p50/p95 of the whole rail and the mean time per guard.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
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
    label: str  # the category reported
    caught: bool  # True: must be caught; False: must pass
    role: str = "user"


@dataclass(frozen=True)
class LabelReport:
    label: str
    rows: int
    rate: float  # catch rate, or false-block rate for a must-pass category
    auc: float | None  # against the must-pass rows of its rail; None for those
    must_catch: bool = True
    by: tuple[tuple[str, int], ...] = ()  # guard (category) -> rows it caught (or marked)


@dataclass(frozen=True)
class EvalReport:
    policy: str
    labels: tuple[LabelReport, ...]
    ms_p50: float
    ms_p95: float
    guard_ms: tuple[tuple[str, float], ...]  # mean ms per guard
    thresholds: tuple[tuple[str, float, str], ...] = ()  # label, threshold, where from


def _row(obj: object, where: str) -> Row:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise ConfigError(f"{where}: a row needs string fields 'text' and 'label'")
    label, role = obj.get("label"), obj.get("role", "user")
    if not isinstance(role, str):
        raise ConfigError(f"{where}: 'role' must be a string")
    if isinstance(label, str):
        return Row(obj["text"], label, label not in BENIGN, role)
    if label in (0, 1) and not isinstance(label, bool) and isinstance(obj.get("category"), str):
        return Row(obj["text"], obj["category"], label == 1, role)
    raise ConfigError(f"{where}: a row needs string fields 'text' and 'label' (or a 0/1 "
                      f"'label' with a 'category')")


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
        rows.append(_row(obj, f"{path}:{n}"))
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
    """The highest guard score (a rule hit counts 1.0; the network's pass itself none)."""
    return max((v.score for v in report.verdicts if v.guard not in ("guardnet", "embedding")),
               default=0.0)


def _caught(report: TextReport) -> bool:
    return not report.allowed or report.topic is not None


def _rail(row: Row) -> str:
    return row.role if row.role in ("assistant", "system") else "user"


def _blockers(reports: Sequence[TextReport]) -> tuple[tuple[str, int], ...]:
    """What stopped each row (a block, else the topic rail), else what only flagged or
    redacted it (named with that action): the three most frequent."""
    seen: Counter[str] = Counter()
    for r in reports:
        blocker = next((v for v in r.verdicts if v.action == "block"), None)
        if blocker is not None:
            seen[f"{blocker.guard}({blocker.category or blocker.label})"] += 1
        elif r.topic is not None:
            seen["topic"] += 1
        elif (marked := next((v for v in r.verdicts if v.action in ("flag", "redact")),
                             None)) is not None:
            seen[f"{marked.guard}({marked.category or marked.label}) {marked.action}"] += 1
    return tuple(seen.most_common(3))


def _label_report(label: str, rows: Sequence[Row], reports: Sequence[TextReport],
                  negatives: dict[str, list[float]]) -> LabelReport:
    if not rows[0].caught:
        rate = sum(1 for r in reports if r.action != "allow" or r.topic is not None)
        return LabelReport(label, len(rows), rate / len(rows), None, False,
                           _blockers(reports))
    scores = [_score(r) for r in reports]
    return LabelReport(label, len(rows), sum(map(_caught, reports)) / len(rows),
                       auc(scores, negatives[_rail(rows[0])]), True, _blockers(reports))


async def evaluate(guards: Guards, rails: PolicyRails, rows: Sequence[Row]) -> EvalReport:
    reports = [await guards.check_text(row.text, _rail(row), rails) for row in rows]
    grouped: dict[tuple[str, bool], list[int]] = defaultdict(list)
    negatives: dict[str, list[float]] = defaultdict(list)
    for i, row in enumerate(rows):
        grouped[(row.label, row.caught)].append(i)
        if not row.caught:
            negatives[_rail(row)].append(_score(reports[i]))
    labels = [_label_report(label, [rows[i] for i in idx], [reports[i] for i in idx],
                            negatives)
              for (label, _), idx in sorted(grouped.items())]
    per_guard: dict[str, list[float]] = defaultdict(list)
    for r in reports:
        for v in r.verdicts:
            per_guard[v.guard].append(v.ms)
    ms = sorted(r.ms for r in reports)
    return EvalReport(
        rails.policy.name, tuple(labels), statistics.median(ms),
        ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        tuple((g, statistics.fmean(v)) for g, v in sorted(per_guard.items())),
        thresholds_used(guards, rails))


def thresholds_used(guards: Guards, rails: PolicyRails) -> tuple[tuple[str, float, str], ...]:
    """The thresholds the policy's rails fire at, and whether the policy overrides them."""
    policy, values = rails.policy, guards.network.thresholds
    out: list[tuple[str, float, str]] = []
    for label, settings in (("injection", policy.injection), ("unsafe", policy.safety),
                            ("directive", policy.directive)):
        if settings.enabled:
            threshold = settings.threshold
            out.append((label, values[label] if threshold is None else threshold,
                        "labels.json" if threshold is None else "policy"))
    if policy.output.classify and policy.safety.enabled:
        out.extend((c, values[c], "labels.json (output)") for c in policy.output.categories
                   if c in values)
    return tuple((label, float(t), where) for label, t, where in out)


def format_report(report: EvalReport) -> str:
    lines = [f"policy {report.policy}",
             f"{'label':34} {'rows':>5} {'rate':>16} {'auc':>6}  caught by"]
    for lab in report.labels:
        kind = "caught" if lab.must_catch else "false-flag"
        auc_text = f"{lab.auc:.3f}" if lab.auc is not None else "-"
        by = ", ".join(f"{g} {n}" for g, n in lab.by)
        lines.append(f"{lab.label:34} {lab.rows:>5} {kind:>10} {lab.rate:>5.1%} {auc_text:>6}"
                     f"  {by}")
    lines.append("thresholds: " + ", ".join(f"{label} {t:.4f} ({where})"
                                            for label, t, where in report.thresholds))
    lines.append(f"latency: p50 {report.ms_p50:.1f} ms, p95 {report.ms_p95:.1f} ms")
    lines.append("mean per guard: " + ", ".join(f"{g} {m:.2f} ms" for g, m in report.guard_ms))
    return "\n".join(lines)
