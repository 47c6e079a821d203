"""The guard network: one small fine-tuned transformer (``models/guards/guardnet/``) that scores
prompt injection, harmful content with its Llama Guard 3 category, and (for the clinic output
rail) diagnoses or dose instructions addressed to the reader.

``GuardNetwork.score(text)`` reads the text as :mod:`appliance.guards.guardnet_text` cuts it
(views, windows of whole sentences, segments), runs the ONNX graph once per window (inputs
``input_ids``, ``attention_mask`` (1, T) and ``segments`` (1, S, T); output ``logits``
(1, S, L)) and keeps, per label, the highest sigmoid over segments, windows and views: an
injection in one sentence of a long document is scored on its own and with its document.
Windows are never batched: the int8 graph quantises activations per run, so a batch would
make a text's scores depend on its neighbours. ``labels.json`` gives the labels, their
thresholds (calibrated on a held-out split, see models/README.md) and the follow-up rule.

One session, run by the guard threads off the event loop, two at a time: onnxruntime runs
concurrent calls on one session, each with its own buffers, so a run's scores do not depend
on the other. With CPU turn-taking each run is side work the engine's next decode step waits
for; the output windows a step sets off are checked together on both cores (at 16 streams,
about five per step) instead of one after another. A text of several windows (a long
prompt, a document) is run two windows at a time too, by its guard thread and a helper
thread of the network's own: 256 tokens in 3 windows take 5.4 ms instead of 8.6 (p50, idle,
2 cores).

The input rail's texts are scored with ``remember=True``: the scores of the last
``REMEMBERED_TEXTS`` of them are kept (:mod:`appliance.guards.recent`), since system
prompts, tool results and documents come back on every request of an application or a
conversation. The output rail's windows are kept apart (``score_window``), for the last
``REMEMBERED_WINDOWS`` of them: a window is read with the part of its sentence already
released, so the first window of an answer and of each sentence is the window alone, and
answers open alike ("The ", "Sure, ", "1. "); 13% of the windows of 64 streamed answers
to the benchmark's short prompts were met before. A window met before is answered on the
event loop (``recall_window``), without a guard thread or a wait for the engine's turn.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.encoder.sentence import SideWork
from appliance.errors import ModelError
from appliance.guards.classifier import read_json, sigmoid
from appliance.guards.guardnet_text import Window, all_views, prepare, windows
from appliance.guards.recent import Recent

_LETTERS = re.compile(r"[^\W\d_]+")
CATEGORY_PREFIX = "S"
REMEMBERED_TEXTS = 512  # 17 floats each, keyed by a digest: a few hundred kB at most
REMEMBERED_WINDOWS = 4096  # about 2 MB


@dataclass(frozen=True)
class GuardScores:
    """Per label, the highest score over the views, windows and segments of one text."""

    labels: tuple[str, ...]
    values: npt.NDArray[np.float64]
    pieces: int  # views x windows run (0: not run, a follow-up turn)

    def __getitem__(self, label: str) -> float:
        return float(self.values[self.labels.index(label)])


@dataclass(frozen=True)
class Followups:
    """A turn of at most ``max_words`` words, all in ``words`` (or with no word at all),
    carries no content of its own ("continue", "ok thanks", "", an emoji)."""

    max_words: int
    words: frozenset[str]

    def match(self, text: str) -> bool:
        found = _LETTERS.findall(prepare(text).lower())
        return len(found) <= self.max_words and set(found) <= self.words


class GuardNetwork:
    """``model.onnx``, ``tokenizer.json`` and ``labels.json`` of one directory."""

    def __init__(self, directory: Path, *, threads: int = 1, id: str = "guardnet",
                 turns: SideWork | None = None) -> None:
        from tokenizers import Tokenizer

        config = read_json(directory / "labels.json")
        try:
            self.labels: tuple[str, ...] = tuple(config["labels"])
            self.thresholds: Mapping[str, float] = MappingProxyType(
                {k: float(v) for k, v in config["thresholds"].items()})
            self.window_tokens = int(config["window_tokens"])
            rule = config["followups"]
            self.followups = Followups(int(rule["max_words"]), frozenset(rule["words"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{directory}/labels.json: not a guard network ({exc})") from exc
        self.id = id
        self.untrained = frozenset(config.get("untrained", ()))
        self.category_names: Mapping[str, str] = MappingProxyType(
            dict(config.get("category_names", {})))
        try:
            self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise ModelError(f"cannot load tokenizer {directory}/tokenizer.json: {exc}") from exc
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        cls_id, sep_id = (self._tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
        if cls_id is None or sep_id is None:
            raise ModelError(f"{directory}/tokenizer.json has no [CLS] or [SEP] token")
        self._cls, self._sep = cls_id, sep_id
        self._session = _session(directory / "model.onnx", threads)
        # Runs every other window of a text of several, beside the thread scoring it (never
        # the guard threads' own executor: a text waiting on its windows would hold a
        # worker the windows need).
        self._helper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="guardnet")
        self._turns = turns
        self.remembered: Recent[GuardScores] = Recent(REMEMBERED_TEXTS)
        self.remembered_windows: Recent[GuardScores] = Recent(REMEMBERED_WINDOWS)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(c for c in self.labels if c.startswith(CATEGORY_PREFIX))

    def windows(self, text: str) -> list[Window]:
        return windows(self._tokenizer, text, self._cls, self._sep, self.window_tokens)

    def run(self, window: Window) -> npt.NDArray[np.float64]:
        """Sigmoid scores (S, L) of one window's segments."""
        ids = np.asarray([window.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "segments": window.segments[None, :, :]}
        turn = self._turns.side() if self._turns is not None else contextlib.nullcontext()
        with turn:
            logits = self._session.run(["logits"], feeds)[0]
        return sigmoid(np.asarray(logits[0], dtype=np.float64))

    def score(self, text: str, *, remember: bool = False) -> GuardScores:
        """The text's scores; ``remember``: kept for the next time the text is scored so
        (the same scores: they depend on the text alone)."""
        if remember:
            return self.remembered.get(text, self._score)
        return self._score(text)

    def score_window(self, text: str) -> GuardScores:
        """An output window's scores (with its context), kept for the next time."""
        return self.remembered_windows.get(text, self._score)

    def recall_window(self, text: str) -> GuardScores | None:
        """An output window's kept scores, or None: nothing is run (cheap enough for the
        event loop)."""
        return self.remembered_windows.peek(text)

    def close(self) -> None:
        self._helper.shutdown(wait=False, cancel_futures=True)

    def _score(self, text: str) -> GuardScores:
        pieces = [window for view in all_views(text) for window in self.windows(view)]
        helped = self._helper.submit(self._best, pieces[1::2]) if len(pieces) > 1 else None
        best = self._best(pieces[0::2])
        if helped is not None:
            best = np.maximum(best, helped.result())
        return GuardScores(self.labels, best, len(pieces))

    def _best(self, pieces: list[Window]) -> npt.NDArray[np.float64]:
        best = np.zeros(len(self.labels))
        for window in pieces:
            best = np.maximum(best, self.run(window).max(axis=0))
        return best

    def category(self, scores: GuardScores) -> str:
        """The S-category with the highest score relative to its threshold."""
        return max(self.categories, key=lambda c: scores[c] / self.thresholds.get(c, 0.5))

    def token_count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids) + 2


def _session(model: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load ONNX model {model}: {exc}") from exc
    names = {i.name for i in session.get_inputs()}
    if names != {"input_ids", "attention_mask", "segments"}:
        raise ModelError(f"{model}: not a guard network (inputs {sorted(names)})")
    return session
