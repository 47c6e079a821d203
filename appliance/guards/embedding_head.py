"""Linear guard heads on the shared sentence embedding.

``EmbeddingHead`` (``labels.json`` + ``head.npz``) is logistic regression on the request's
embedding (computed once by :class:`appliance.encoder.sentence.Encoder` and passed in),
optionally plus hashed character n-grams; it costs microseconds once the embedding exists.
Its ``categories`` give per-hazard scores (Llama Guard 3 codes) for a content-safety head.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError
from appliance.guards._tokenize import char_ngrams, views
from appliance.guards.classifier import (
    CategoryScore,
    ClassifierResult,
    Vector,
    read_json,
    sigmoid,
    softmax,
)


class TextEncoder(Protocol):
    """What an :class:`EmbeddingHead` needs of :class:`appliance.encoder.sentence.Encoder`."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...

    def split(self, text: str) -> list[str]: ...  # [text], or windows of a long text


def head_pieces(encoder: TextEncoder, text: str, use_views: bool = True) -> list[str]:
    """What a head scores: the text itself first (its embedding is the shared one), then, for a
    text longer than the encoder's window, its short windows; the same for each view."""
    pieces: list[str] = []
    for piece in [text, *(views(text) if use_views else ())]:
        pieces.append(piece)
        windows = encoder.split(piece)
        if len(windows) > 1:
            pieces.extend(windows)
    return pieces


class EmbeddingHead:
    """Logistic regression on the sentence embedding (+ hashed character n-grams).

    ``labels.json``: ``{"type": "embedding-head", "labels": [neg, pos], "threshold", "dim",
    "char_ngrams": {"n_features", "sizes"} | null, "views": bool, "categories": {code: name}}``;
    ``head.npz``: ``coef`` (dim,), ``intercept`` (), optional ``char_index``/``char_coef``
    (sparse weights of the n-grams) and ``category_coef`` (k, dim)/``category_intercept`` (k,).
    A category's score is the head's score times the softmax of the category logits.
    """

    def __init__(self, directory: Path, encoder: TextEncoder, *, id: str | None = None) -> None:
        raw = read_json(directory / "labels.json")
        self.id = id or directory.name
        self.labels = tuple(str(x) for x in raw["labels"])
        self.threshold = float(raw["threshold"])
        self.use_views = bool(raw.get("views", True))
        self._encoder = encoder
        try:
            with np.load(directory / "head.npz") as npz:
                weights = {k: np.asarray(npz[k]) for k in npz.files}
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {directory / 'head.npz'}: {exc}") from exc
        self._coef = weights["coef"].astype(np.float32)
        self._intercept = float(weights["intercept"].reshape(-1)[0])
        dim = raw.get("dim")
        if self._coef.ndim != 1 or (dim is not None and self._coef.shape[0] != int(dim)):
            raise ModelError(f"{directory}: head.npz coef has shape {self._coef.shape}")
        chars = raw.get("char_ngrams")
        self._char_sizes: tuple[int, ...] = ()
        self._char_weights = np.zeros(0, dtype=np.float32)
        if chars:
            self._char_sizes = tuple(int(n) for n in chars["sizes"])
            self._char_weights = np.zeros(int(chars["n_features"]), dtype=np.float32)
            self._char_weights[weights["char_index"].astype(np.int64)] = weights["char_coef"]
        names: Mapping[str, str] = raw.get("categories") or {}
        self.categories = tuple(names.items())
        if self.categories:
            self._cat_coef = weights["category_coef"].astype(np.float32)
            self._cat_intercept = weights["category_intercept"].astype(np.float32)
            if self._cat_coef.shape != (len(self.categories), self._coef.shape[0]):
                raise ModelError(f"{directory}: category_coef does not match its categories")
        self._lock = threading.Lock()

    def logits(self, texts: Sequence[str], embeddings: Vector) -> npt.NDArray[np.float64]:
        """Decision values for texts and their embeddings (one row each)."""
        z = embeddings.astype(np.float64) @ self._coef.astype(np.float64) + self._intercept
        if self._char_sizes:
            for i, text in enumerate(texts):
                index, values = char_ngrams(text, len(self._char_weights), self._char_sizes)
                z[i] += float(self._char_weights[index] @ values)
        return z

    def classify(self, text: str, embedding: Vector | None = None) -> ClassifierResult:
        """``embedding``: the shared embedding of ``text`` when the caller has it already."""
        start = time.perf_counter()
        with self._lock:
            pieces = head_pieces(self._encoder, text, self.use_views)
            if embedding is not None:
                rest = self._encoder.encode(pieces[1:]) if len(pieces) > 1 else None
                first = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
                vectors = first if rest is None else np.vstack([first, rest])
            else:
                vectors = self._encoder.encode(pieces)
            scores = sigmoid(self.logits(pieces, vectors))
        best = int(scores.argmax())
        score = float(scores[best])
        flagged = score >= self.threshold
        categories: tuple[CategoryScore, ...] = ()
        if self.categories:
            cat = softmax(vectors[best].astype(np.float64) @ self._cat_coef.T.astype(np.float64)
                           + self._cat_intercept)
            categories = tuple(sorted(
                (CategoryScore(code, name, score * float(p))
                 for (code, name), p in zip(self.categories, cat, strict=True)),
                key=lambda c: -c.score))
        return ClassifierResult(
            model=self.id, label=self.labels[1] if flagged else self.labels[0], score=score,
            flagged=flagged, threshold=self.threshold, categories=categories,
            windows=len(pieces), decided_by=self.id,
            ms=(time.perf_counter() - start) * 1000.0)
