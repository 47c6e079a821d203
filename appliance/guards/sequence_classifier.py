"""The generic ONNX sequence-classification runner.

``SequenceClassifier`` (``model.onnx`` + ``tokenizer.json`` + ``labels.json`` or a Hugging
Face ``config.json``) runs any BERT-style ONNX export, a Llama Prompt Guard 2 export as it
comes included. Texts longer than ``max_length`` tokens are cut into overlapping windows,
scored in one batch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import ModelError
from appliance.guards.classifier import ClassifierResult, Vector, read_json, sigmoid, softmax

_PAD_TOKENS = ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>")


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


def _label(labels: Sequence[str], positive: Sequence[int], probs: npt.NDArray[np.float64],
           flagged: bool) -> str:
    if flagged:
        return labels[max(positive, key=lambda i: probs[i])]
    return next(labels[i] for i in range(len(labels)) if i not in positive)


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
        raw = read_json(directory / "labels.json")
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
        raw = read_json(directory / "config.json")
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
                p = sigmoid(raw[:, 0])
                probs = np.stack([1.0 - p, p], axis=1)
            else:
                probs = softmax(raw)
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
