"""Guard classifiers: one generic ONNX sequence-classification runner, and linear heads on
the shared sentence embedding.

Every classifier lives in a directory and answers ``classify(text, embedding=None)`` with a
frozen :class:`ClassifierResult`; the score is the probability of the positive (unsafe)
class, the highest over all windows and de-obfuscation views of the text.

``SequenceClassifier`` (``model.onnx`` + ``tokenizer.json`` + ``labels.json`` or a Hugging
Face ``config.json``) runs any BERT-style ONNX export, a Llama Prompt Guard 2 export as it
comes included. Texts longer than ``max_length`` tokens are cut into overlapping windows,
scored in one batch.

``EmbeddingHead`` (``labels.json`` + ``head.npz``) is logistic regression on the request's
embedding (computed once by :class:`appliance.encoder.sentence.Encoder` and passed in), optionally
plus hashed character n-grams; it costs microseconds once the embedding exists. Its
``categories`` give per-hazard scores (Llama Guard 3 codes) for a content-safety head.

``Cascade`` lets a cheap classifier decide the clear cases and a stronger one the rest.

Threads: each classifier serialises calls with a lock; call them off the event loop.
"""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError
from appliance.guards._tokenize import char_ngrams, views
from appliance.resources import GUARDS_MANIFEST, verify_pinned

Vector = npt.NDArray[np.float32]
_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>")


class TextEncoder(Protocol):
    """What an :class:`EmbeddingHead` needs of :class:`appliance.encoder.sentence.Encoder`."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...

    def split(self, text: str) -> list[str]: ...  # [text], or windows of a long text


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



def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"classifier file missing: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _session(model: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load ONNX model {model}: {exc}") from exc


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    result: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return result


def _label(labels: Sequence[str], positive: Sequence[int], probs: npt.NDArray[np.float64],
           flagged: bool) -> str:
    if flagged:
        return labels[max(positive, key=lambda i: probs[i])]
    return next(labels[i] for i in range(len(labels)) if i not in positive)


# --- the generic ONNX runner -----------------------------------------------------------------

@dataclass(frozen=True)
class SequenceConfig:
    labels: tuple[str, ...]
    positive: tuple[int, ...]  # indices of the unsafe labels; their probabilities add up
    output: str = "logits"  # or "probabilities"
    output_name: str | None = None  # default: the first output
    max_length: int = 512  # the model's limit (and the padded length)
    window_length: int | None = None  # tokens per window; default max_length
    pad_to_max_length: bool = False
    pad_id: int | None = None  # default: from tokenizer.json
    window_stride: int = 64  # tokens shared by consecutive windows
    threshold: float = 0.5
    batch_size: int = 8  # windows per onnxruntime call


def read_sequence_config(directory: Path) -> SequenceConfig:
    """``labels.json`` if present, else a Hugging Face ``config.json`` (``id2label``)."""
    if (directory / "labels.json").is_file():
        raw = _read_json(directory / "labels.json")
        labels = tuple(str(x) for x in raw["labels"])
        positive = tuple(labels.index(x) for x in raw.get("positive_labels", labels[1:]))
        return SequenceConfig(
            labels=labels, positive=positive, output=raw.get("output", "logits"),
            output_name=raw.get("output_name"), max_length=int(raw.get("max_length", 512)),
            window_length=raw.get("window_length"),
            pad_to_max_length=bool(raw.get("pad_to_max_length", False)),
            pad_id=raw.get("pad_id"), window_stride=int(raw.get("window_stride", 64)),
            threshold=float(raw.get("threshold", 0.5)),
            batch_size=int(raw.get("batch_size", 8)))
    if (directory / "config.json").is_file():
        raw = _read_json(directory / "config.json")
        id2label = raw.get("id2label") or {"0": "BENIGN", "1": "MALICIOUS"}
        labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
        if labels == ("LABEL_0", "LABEL_1"):
            labels = ("BENIGN", "MALICIOUS")
        return SequenceConfig(labels=labels, positive=tuple(range(1, len(labels))),
                              max_length=min(512, int(raw.get("max_position_embeddings", 512))))
    raise ModelError(f"{directory}: no labels.json or config.json")


class SequenceClassifier:
    """An ONNX sequence classifier: token ids (+ attention mask) in, logits/probabilities out."""

    def __init__(self, directory: Path, *, id: str | None = None, threads: int = 1,
                 config: SequenceConfig | None = None) -> None:
        from tokenizers import Tokenizer

        self.id = id or directory.name
        self.config = config or read_sequence_config(directory)
        self.threshold = self.config.threshold
        try:
            self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ModelError(f"cannot load tokenizer {directory / 'tokenizer.json'}: {exc}"
                             ) from exc
        cfg = self.config
        window = min(cfg.window_length or cfg.max_length, cfg.max_length)
        self._tokenizer.enable_truncation(window, stride=min(cfg.window_stride, window // 2))
        self._tokenizer.no_padding()
        self._pad_id = cfg.pad_id if cfg.pad_id is not None else self._find_pad_id()
        self._session = _session(directory / "model.onnx", threads)
        inputs = {i.name: i.type for i in self._session.get_inputs()}
        unknown = set(inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if "input_ids" not in inputs or unknown:
            raise ModelError(f"{directory / 'model.onnx'}: expected inputs input_ids "
                             f"[, attention_mask, token_type_ids], got {sorted(inputs)}")
        self._inputs = {name: np.int32 if "int32" in kind else np.int64
                        for name, kind in inputs.items()}
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = cfg.output_name or outputs[0]
        if self._output not in outputs:
            raise ModelError(f"{directory / 'model.onnx'}: no output {self._output!r}")
        self._lock = threading.Lock()

    def _find_pad_id(self) -> int:
        padding = json.loads(self._tokenizer.to_str()).get("padding") or {}
        if "pad_id" in padding:
            return int(padding["pad_id"])
        for token in _PAD_TOKENS:
            found = self._tokenizer.token_to_id(token)
            if found is not None:
                return int(found)
        return 0

    def windows(self, text: str) -> list[list[int]]:
        """Token ids of each window of ``text`` (one unless it exceeds ``window_length``)."""
        encoding = self._tokenizer.encode(text)
        return [encoding.ids, *(o.ids for o in encoding.overflowing)]

    def _probabilities(self, windows: list[list[int]]) -> npt.NDArray[np.float64]:
        cfg = self.config
        out = []
        for start in range(0, len(windows), cfg.batch_size):
            chunk = windows[start:start + cfg.batch_size]
            width = cfg.max_length if cfg.pad_to_max_length else max(1, *map(len, chunk))
            ids = np.full((len(chunk), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for i, row in enumerate(chunk):
                ids[i, :len(row)] = row
                mask[i, :len(row)] = 1
            arrays = {"input_ids": ids, "attention_mask": mask,
                      "token_type_ids": np.zeros_like(ids)}
            feeds = {name: arrays[name].astype(dtype) for name, dtype in self._inputs.items()}
            raw = np.asarray(self._session.run([self._output], feeds)[0], dtype=np.float64)
            raw = raw.reshape(len(chunk), -1)
            if cfg.output == "probabilities":
                probs = raw
            elif raw.shape[1] == 1:  # one logit: sigmoid of the positive class
                p = _sigmoid(raw[:, 0])
                probs = np.stack([1.0 - p, p], axis=1)
            else:
                probs = _softmax(raw)
            out.append(probs)
        return np.concatenate(out)

    def classify(self, text: str, embedding: Vector | None = None) -> ClassifierResult:
        return self.classify_batch([text])[0]

    def classify_batch(self, texts: Sequence[str]) -> list[ClassifierResult]:
        """All windows of all texts go through the model together, ``batch_size`` at a time."""
        start = time.perf_counter()
        with self._lock:
            per_text = [self.windows(t) for t in texts]
            flat = [w for ws in per_text for w in ws]
            probs = self._probabilities(flat) if flat else np.zeros((0, len(self.config.labels)))
        ms = (time.perf_counter() - start) * 1000.0 / max(1, len(texts))
        results, offset = [], 0
        positive = list(self.config.positive)
        for ws in per_text:
            block = probs[offset:offset + len(ws)]
            offset += len(ws)
            unsafe = block[:, positive].sum(axis=1)
            best = int(unsafe.argmax())
            score = float(unsafe[best])
            flagged = score >= self.threshold
            results.append(ClassifierResult(
                model=self.id, label=_label(self.config.labels, positive, block[best], flagged),
                score=score, flagged=flagged, threshold=self.threshold, windows=len(ws),
                decided_by=self.id, ms=ms))
        return results


# --- linear heads on the shared embedding ------------------------------------------------------

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
        raw = _read_json(directory / "labels.json")
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
            scores = _sigmoid(self.logits(pieces, vectors))
        best = int(scores.argmax())
        score = float(scores[best])
        flagged = score >= self.threshold
        categories: tuple[CategoryScore, ...] = ()
        if self.categories:
            cat = _softmax(vectors[best].astype(np.float64) @ self._cat_coef.T.astype(np.float64)
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


# --- loading ---------------------------------------------------------------------------------

def load_classifier(directory: Path, *, encoder: TextEncoder | None = None, threads: int = 1,
                    id: str | None = None) -> Classifier:
    """A classifier from its directory; the type is ``labels.json``'s ``type``."""
    if not directory.is_dir():
        raise ModelError(f"classifier directory not found: {directory}")
    kind = "sequence-classification"
    if (directory / "labels.json").is_file():
        kind = str(_read_json(directory / "labels.json").get("type", kind))
    if kind == "sequence-classification":
        return SequenceClassifier(directory, id=id, threads=threads)
    if kind == "embedding-head":
        if encoder is None:
            raise ModelError(f"{directory}: an embedding head needs the shared encoder")
        return EmbeddingHead(directory, encoder, id=id)
    if kind == "cascade":
        raw = _read_json(directory / "labels.json")
        first = load_classifier((directory / raw["first"]).resolve(), encoder=encoder,
                                threads=threads)
        second = load_classifier((directory / raw["second"]).resolve(), encoder=encoder,
                                 threads=threads)
        return Cascade(first, second, low=float(raw["low"]), high=float(raw["high"]),
                       id=id or directory.name)
    raise ModelError(f"{directory}: unknown classifier type {kind!r}")


@dataclass(frozen=True)
class GuardModel:
    """One ``[[classifier]]`` entry of the guard manifest."""

    id: str
    directory: Path
    files: tuple[tuple[str, str], ...]  # (file name, sha256)
    role: str = ""  # "prompt-injection" or "content-safety"
    description: str = ""


def read_guard_manifest(manifest: Path = GUARDS_MANIFEST) -> tuple[GuardModel, ...]:
    try:
        raw = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"guard model manifest not found: {manifest}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelError(f"{manifest} is not valid TOML: {exc}") from exc
    try:
        return tuple(GuardModel(
            id=row["id"], directory=(manifest.parent / row["dir"]).resolve(),
            files=tuple(sorted(row["files"].items())), role=row.get("role", ""),
            description=row.get("description", "")) for row in raw.get("classifier", []))
    except (KeyError, AttributeError) as exc:
        raise ModelError(f"{manifest}: a [[classifier]] entry lacks {exc}") from exc


def load_guard_classifier(model_id: str, *, encoder: TextEncoder | None = None,
                          manifest: Path = GUARDS_MANIFEST, threads: int = 1) -> Classifier:
    """A classifier of the guard manifest, every file checked against its sha256 pin."""
    entries = {m.id: m for m in read_guard_manifest(manifest)}
    if model_id not in entries:
        raise ModelError(f"{manifest}: no classifier {model_id!r} (have {sorted(entries)})")
    entry = entries[model_id]
    fix = "restore it from git (`git checkout -- models/guards`) or rebuild it with " \
          "`python models/guards/build.py`"
    for name, sha256 in entry.files:
        verify_pinned(entry.directory / name, sha256, f"guard classifier {model_id!r}", fix)
    return load_classifier(entry.directory, encoder=encoder, threads=threads, id=model_id)
