"""How the guard network reads a text: its views, and its windows of whole sentences.

The same cuts as the network's reference module (``models/guards/guardnet.py``), which
training used too; a test holds the two to the same scores.

- **Views**: the text after NFKC with invisible characters removed; its de-obfuscation views
  (:func:`appliance.guards._tokenize.views`: encoded blobs decoded, rot13, reversal and
  leetspeak undone); and, when a word mixes Latin letters with Cyrillic or Greek look-alikes
  (or a text is nearly all look-alikes), the text with those folded to Latin.
- **Windows**: the WordPiece tokens (no special tokens) cut at sentence ends
  (``[^.!?\\n]*(?:[.!?]+|\\n+|$)``), a sentence longer than the window cut every ``room``
  tokens, whole sentences packed into windows of at most ``window_tokens`` tokens with
  [CLS] and [SEP]. Each window carries its *segments*: row 0 weighs every token equally (the
  window as a whole), and with two or more sentences one more row per sentence weighs that
  sentence's tokens, so one run scores the window and each of its sentences.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from appliance.guards._tokenize import views

SENTENCE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n+|$)")
_LATIN = re.compile(r"[A-Za-z]")
_LOOKALIKE = re.compile("[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f]")
_WORD = re.compile(r"\S+")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")
_HOMOGLYPH_PAIRS = (
    "аaвbсcеeгrкkмmнhоoпnрpтtуyхxіiјjѕsһhԁdԛqԝwӏlьbёe"
    "АAВBСCЕEНHІIЈJКKМMОOРPЅSТTХXУYҮYԚQԜWӀIЁE"
    "αaβbγyεeηnιiκkμuνvοoρpτtυuχxωwϲcϳj"
    "ΑAΒBΕEΖZΗHΙIΚKΜMΝNΟOΡPΤTΥYΧXϹCϺM"
)
_FOLD = str.maketrans({_HOMOGLYPH_PAIRS[i]: _HOMOGLYPH_PAIRS[i + 1]
                       for i in range(0, len(_HOMOGLYPH_PAIRS), 2)})


@dataclass(frozen=True)
class Window:
    ids: tuple[int, ...]  # [CLS] ... [SEP]
    segments: npt.NDArray[np.float32]  # (S, T), each row sums to 1; row 0 the whole window


def prepare(text: str) -> str:
    """NFKC and invisible characters removed: what every view starts from."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def fold_lookalikes(text: str) -> str | None:
    """The text with Cyrillic/Greek look-alikes folded to Latin, when a word mixes scripts."""
    if not _LOOKALIKE.search(text):
        return None
    mixed = any(_LATIN.search(w) and _LOOKALIKE.search(w) for w in _WORD.findall(text))
    lookalike_only = not _LATIN.search(text) and \
        sum(c in _HOMOGLYPH_PAIRS for c in text) > 0.8 * sum(c.isalpha() for c in text)
    return text.translate(_FOLD) if mixed or lookalike_only else None


def all_views(text: str) -> list[str]:
    """The prepared text first, then its de-obfuscated and folded views (none usually)."""
    text = prepare(text)
    out = [text]
    folded = fold_lookalikes(text)
    for view in [*views(text), *([folded] if folded else [])]:
        if view not in out:
            out.append(view)
    return out


def _sentences(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token ranges of the text's sentences (tokens after the last sentence end: one more)."""
    spans = [m.end() for m in SENTENCE.finditer(text) if text[m.start():m.end()].strip()]
    out: list[tuple[int, int]] = []
    t = 0
    for end in spans:
        start = t
        while t < len(offsets) and offsets[t][0] < end:
            t += 1
        if t > start:
            out.append((start, t))
    if t < len(offsets):
        out.append((t, len(offsets)))
    return out


def _window(ids: list[int], group: list[tuple[int, int]], cls_id: int, sep_id: int) -> Window:
    a, b = group[0][0], group[-1][1]
    n = b - a + 2
    rows = [np.full(n, 1.0 / n, dtype=np.float32)]
    if len(group) > 1:
        for s, e in group:
            row = np.zeros(n, dtype=np.float32)
            row[s - a + 1:e - a + 1] = 1.0 / (e - s)
            rows.append(row)
    return Window((cls_id, *ids[a:b], sep_id), np.stack(rows))


def windows(tokenizer: Tokenizer, text: str, cls_id: int, sep_id: int,
            window_tokens: int = 128) -> list[Window]:
    """One text cut into windows of whole sentences (see the module docstring)."""
    enc = tokenizer.encode(text, add_special_tokens=False)
    ids, offsets = list(enc.ids), list(enc.offsets)
    if not ids:
        return [Window((cls_id, sep_id), np.full((1, 2), 0.5, dtype=np.float32))]
    room = window_tokens - 2
    pieces = [(s, min(s + room, b)) for a, b in _sentences(text, offsets)
              for s in range(a, b, room)]
    out: list[Window] = []
    group: list[tuple[int, int]] = []
    for s, e in pieces:
        if group and e - group[0][0] > room:
            out.append(_window(ids, group, cls_id, sep_id))
            group = []
        group.append((s, e))
    out.append(_window(ids, group, cls_id, sep_id))
    return out
