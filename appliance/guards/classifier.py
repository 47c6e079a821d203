"""Guard classifiers: what every classifier answers, the helpers the runners share, and the
cascade that composes two.

Every classifier lives in a directory and answers ``classify(text, embedding=None)`` with a
frozen :class:`ClassifierResult`; the score is the probability of the positive (unsafe)
class, the highest over all windows and de-obfuscation views of the text. The runner
:class:`~appliance.guards.sequence_classifier.SequenceClassifier` takes any BERT-style ONNX
export (a user-placed Llama Prompt Guard 2, say); :mod:`appliance.guards.loader` loads it
from its directory. ``Cascade`` lets a cheap classifier decide the clear cases and a stronger
one the rest. The rails themselves run the guard network (:mod:`appliance.guards.guardnet`);
these are for use from Python. :func:`read_json` and :func:`sigmoid` serve both.

Threads: each classifier serialises calls with a lock; call them off the event loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class CategoryScore:
    code: str  # "S9"
    name: str  # "Indiscriminate Weapons"
    score: float


@dataclass(frozen=True)
class ClassifierResult:
    model: str
    label: str  # a positive label when flagged, the negative label otherwise
    score: float  # probability of the positive class, max over windows and views
    flagged: bool  # score >= threshold
    threshold: float
    categories: tuple[CategoryScore, ...] = ()  # highest first
    windows: int = 1  # windows and views scored
    decided_by: str = ""  # the classifier that decided (differs from model in a cascade)
    ms: float = 0.0


class Classifier(Protocol):
    id: str
    threshold: float

    def classify(self, text: str, embedding: Vector | None = None) -> ClassifierResult: ...


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"classifier file missing: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    result: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return result


class Cascade:
    """``first`` decides when its score is outside ``[low, high)``; ``second`` otherwise."""

    def __init__(self, first: Classifier, second: Classifier, *, low: float, high: float,
                 id: str | None = None) -> None:
        self.id = id or f"{first.id}+{second.id}"
        self.first, self.second = first, second
        self.low, self.high = low, high
        self.threshold = second.threshold

    def classify(self, text: str, embedding: Vector | None = None) -> ClassifierResult:
        start = time.perf_counter()
        result = self.first.classify(text, embedding)
        if self.low <= result.score < self.high:
            result = self.second.classify(text, embedding)
        return ClassifierResult(
            model=self.id, label=result.label, score=result.score, flagged=result.flagged,
            threshold=result.threshold, categories=result.categories, windows=result.windows,
            decided_by=result.decided_by, ms=(time.perf_counter() - start) * 1000.0)
