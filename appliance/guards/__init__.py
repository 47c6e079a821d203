"""Guards: the classifiers of the input and output rails (rules and the pipeline join later)."""

from appliance.guards.classifier import (
    CategoryScore,
    Classifier,
    ClassifierResult,
    EmbeddingHead,
    SequenceClassifier,
    load_classifier,
    load_guard_classifier,
)

__all__ = [
    "CategoryScore",
    "Classifier",
    "ClassifierResult",
    "EmbeddingHead",
    "SequenceClassifier",
    "load_classifier",
    "load_guard_classifier",
]
