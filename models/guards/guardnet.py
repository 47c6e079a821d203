"""Reference inference for the guard network (``guardnet/``): what the runtime must do, in
onnxruntime + tokenizers + numpy only. The evaluation scripts call this module; the runtime
port in ``appliance/guards/`` must reproduce it (the training script uses the same
:func:`windows` so training and serving cut texts identically).

One text is scored like this:

1. **Views.** The text itself, and for an obfuscated text its de-obfuscated views
   (the runtime's ``views()``: base64/hex/... decoded, rot13, reversal, leetspeak undone)
   plus, when a
   word mixes Latin with Cyrillic/Greek look-alikes, the text with those folded to Latin.
2. **Windows.** Each view is tokenised with MiniLM's WordPiece tokenizer (no special tokens,
   no truncation) and cut into windows of at most ``window_tokens`` (128) tokens, [CLS] and
   [SEP] included, packing whole sentences (a sentence is a run ending in ``.``, ``!``, ``?``
   or a newline; a longer sentence is cut every 126 tokens).
3. **Segments.** Each window is one onnxruntime run with inputs ``input_ids`` and
   ``attention_mask`` (1, T) int64 and ``segments`` (1, S, T) float32: row 0 weights every
   token of the window equally (the window as a whole), and when the window holds more than one
   sentence, one more row per sentence weighting that sentence's tokens equally (rows sum
   to 1). The output ``logits`` (1, S, L) are one logit per label for each segment.
4. **Scores.** ``sigmoid(logits)``, the maximum over segments, windows and views, per label.
   So an injection in one sentence of a long document is scored on its own, and the document
   as a whole too, in the same run.
5. **Follow-up turns.** A user turn of at most ``followups.max_words`` words, every one of
   them in ``followups.words`` (``labels.json``: "continue", "ok", "go on", "thanks", ...;
   digits, punctuation and emoji are not words), or with no word at all (an empty message),
   is served without running the network: it carries no content of its own, and the model
   alone blocked some of them (see models/README.md).
6. **Decision.** A label fires when its score reaches its threshold in ``labels.json``
   (calibrated on the validation split, a false block weighted like a miss). The input rail
   uses ``injection`` and ``unsafe`` (category: the ``S*`` label with the highest
   score-to-threshold ratio); the output rail uses the hate and sexual-content categories
   (``S10``, ``S12``) and, in the clinic policy, ``directive`` (an instruction or diagnosis
   addressed to the reader).

One window per run: the int8 graph quantises activations per run, so batching windows would
make a text's score depend on what it was batched with.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from appliance.guards._tokenize import views  # the runtime's de-obfuscation, shared

SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n+|$)")
_LATIN = re.compile(r"[A-Za-z]")
_LOOKALIKE = re.compile("[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]")
_WORD = re.compile(r"\S+")
_LETTERS = re.compile(r"[^\W\d_]+")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
_HOMOGLYPH_PAIRS = (
    "аaвbсcеeгrкkмmнhоoпnрpтtуyхxіiјjѕsһhԁdԛqԝwӏlьbёe"
    "АAВBСCЕEНHІIЈJКKМMОOРPЅSТTХXУYҮYԚQԜWӀIЁE"
    "αaβbγyεeηnιiκkμuνvοoρpτtυuχxωwϲcϳj"
    "ΑAΒBΕEΖZΗHΙIΚKΜMΝNΟOΡPΤTΥYΧXϹCϺM"
)
_FOLD = str.maketrans({_HOMOGLYPH_PAIRS[i]: _HOMOGLYPH_PAIRS[i + 1]
                       for i in range(0, len(_HOMOGLYPH_PAIRS), 2)})

Ids = list[int]


@dataclass(frozen=True)
class Window:
    ids: Ids  # [CLS] ... [SEP]
    segments: npt.NDArray[np.float32]  # (S, T), each row sums to 1; row 0 the whole window


@dataclass(frozen=True)
class Scores:
    labels: tuple[str, ...]
    values: npt.NDArray[np.float64]  # per label, max over views, windows, segments
    pieces: int  # views x windows run

    def __getitem__(self, label: str) -> float:
        return float(self.values[self.labels.index(label)])


@dataclass(frozen=True)
class Verdict:
    blocked: bool
    fired: tuple[str, ...]  # labels at or over their threshold that the rail acts on
    category: str  # the S* category, when "unsafe" fired
    scores: Scores


def fold_lookalikes(text: str) -> str | None:
    """The text with Cyrillic/Greek look-alikes folded to Latin, when a word mixes scripts."""
    if not _LOOKALIKE.search(text):
        return None
    mixed = any(_LATIN.search(w) and _LOOKALIKE.search(w) for w in _WORD.findall(text))
    lookalike_only = not _LATIN.search(text) and \
        sum(c in _HOMOGLYPH_PAIRS for c in text) > 0.8 * sum(c.isalpha() for c in text)
    return text.translate(_FOLD) if mixed or lookalike_only else None


def prepare(text: str) -> str:
    """NFKC and invisible characters removed: what every view starts from."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def all_views(text: str) -> list[str]:
    text = prepare(text)
    out = [text]
    folded = fold_lookalikes(text)
    for v in [*(views(text)), *([folded] if folded else [])]:
        if v not in out:
            out.append(v)
    return out


def sentence_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in SENTENCE.finditer(text)
            if text[m.start():m.end()].strip()]


def windows(tokenizer: object, text: str, cls_id: int, sep_id: int,
            window_tokens: int = 128) -> list[Window]:
    """Cut one text into windows of whole sentences (see the module docstring)."""
    enc = tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
    ids, offsets = list(enc.ids), list(enc.offsets)
    room = window_tokens - 2
    if not ids:
        return [Window([cls_id, sep_id], np.full((1, 2), 0.5, dtype=np.float32))]
    # token ranges of the sentences
    spans = sentence_spans(text)
    sentences: list[tuple[int, int]] = []
    t = 0
    for _, end in spans:
        start = t
        while t < len(ids) and offsets[t][0] < end:
            t += 1
        if t > start:
            sentences.append((start, t))
    if t < len(ids):
        sentences.append((t, len(ids)))
    pieces: list[tuple[int, int]] = []  # sentences, long ones cut every `room` tokens
    for a, b in sentences:
        pieces.extend((s, min(s + room, b)) for s in range(a, b, room))
    out: list[Window] = []
    group: list[tuple[int, int]] = []

    def flush() -> None:
        if not group:
            return
        a, b = group[0][0], group[-1][1]
        n = b - a + 2
        rows = [np.full(n, 1.0 / n, dtype=np.float32)]
        if len(group) > 1:
            for s, e in group:
                row = np.zeros(n, dtype=np.float32)
                row[s - a + 1:e - a + 1] = 1.0 / (e - s)
                rows.append(row)
        out.append(Window([cls_id, *ids[a:b], sep_id], np.stack(rows)))
        group.clear()

    for s, e in pieces:
        if group and e - group[0][0] > room:
            flush()
        group.append((s, e))
    flush()
    return out


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


class GuardNet:
    """The guard network of one directory: ``model.onnx``, ``tokenizer.json``, ``labels.json``."""

    def __init__(self, directory: Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.config = json.loads((directory / "labels.json").read_text(encoding="utf-8"))
        self.labels: tuple[str, ...] = tuple(self.config["labels"])
        self.thresholds: dict[str, float] = dict(self.config["thresholds"])
        self.window_tokens = int(self.config["window_tokens"])
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._cls = self._tokenizer.token_to_id("[CLS]")
        self._sep = self._tokenizer.token_to_id("[SEP]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(directory / "model.onnx"), options,
                                             providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def windows(self, text: str) -> list[Window]:
        return windows(self._tokenizer, text, self._cls, self._sep, self.window_tokens)

    def run(self, window: Window) -> npt.NDArray[np.float64]:
        """Sigmoid scores (S, L) of one window's segments."""
        ids = np.asarray([window.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "segments": window.segments[None, :, :]}
        with self._lock:
            logits = self._session.run(["logits"], feeds)[0]
        return _sigmoid(np.asarray(logits[0], dtype=np.float64))

    def score(self, text: str, use_views: bool = True) -> Scores:
        best = np.zeros(len(self.labels))
        pieces = 0
        for view in (all_views(text) if use_views else [prepare(text)]):
            for window in self.windows(view):
                best = np.maximum(best, self.run(window).max(axis=0))
                pieces += 1
        return Scores(self.labels, best, pieces)

    def category(self, scores: Scores) -> str:
        cats = [c for c in self.labels if c.startswith("S")]
        return max(cats, key=lambda c: scores[c] / self.thresholds.get(c, 0.5))

    def is_followup(self, text: str) -> bool:
        """A short follow-up turn ("continue", "ok thanks", "", ...): never classified."""
        rule = self.config["followups"]
        words = _LETTERS.findall(prepare(text).lower())
        return len(words) <= int(rule["max_words"]) and set(words) <= set(rule["words"])

    def check(self, text: str, rail: str = "input", policy: str = "default") -> Verdict:
        """The decision of one rail (``input``/``output``) under a policy
        (``default``/``clinic``) as ``labels.json``'s ``rails`` table describes it."""
        if rail == "input" and self.is_followup(text):
            return Verdict(False, (), "", Scores(self.labels, np.zeros(len(self.labels)), 0))
        scores = self.score(text)
        acts = self.config["rails"][policy][rail]
        fired = tuple(label for label in acts if scores[label] >= self.thresholds[label])
        category = self.category(scores) if "unsafe" in fired else ""
        allowed = set(self.config["rails"][policy].get("allow_categories", ()))
        if category in allowed:
            fired = tuple(f for f in fired if f != "unsafe")
        return Verdict(bool(fired), fired, category, scores)
