"""Unicode folding for the rule tier: one canonical text to match on, and the way back.

``normalize_text(text)`` removes invisible and format characters (zero-width spaces and
joiners, soft hyphens, bidi controls, variation selectors, Unicode tag characters, C0/C1
controls other than whitespace), applies Unicode NFKC (fullwidth and mathematical letters
become ASCII), folds look-alike Cyrillic, Greek, Armenian and small-capital letters to the
Latin letters they imitate, and collapses every run of whitespace to one space (ends
stripped). Case is kept: rules match case-insensitively.

Only the few non-ASCII (or control) segments of a text are transformed; ordinary ASCII
prose costs a regex scan and a split/join. ``source_map(text)`` maps a span of the folded
text back to the span of the original it came from (exact inside ASCII runs, widened to the
whole segment for a transformed one), so redaction can mask the text the user actually sent
instead of forwarding the folded form.

Folding is for matching only: genuine Russian or Greek text folds to Latin-looking noise,
which is harmless because nothing downstream reads the folded form but the rules.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

# Printable ASCII and ASCII whitespace; runs of anything else are transformed ("segments").
_PLAIN = "\t\n\x0b\x0c\r\x1c-\x1f\x20-\x7e"
_SPECIAL = re.compile(f"[^{_PLAIN}]+")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f]")
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5"
    "\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0"
    "\ufff9-\ufffb\U0001d173-\U0001d17a\U000e0000-\U000e007f\U000e0100-\U000e01ef]+")
_UNEVEN_SPACE = re.compile(r"\s(?:(?<=[^\S ])|(?=\s))\s*")  # whitespace but one " "

# Look-alikes NFKC leaves alone, folded to the Latin letter they imitate.
_HOMOGLYPH_PAIRS = (
    # Cyrillic
    "аaвbсcеeгrкkмmнhоoпnрpтtуyхxіiјjѕsһhԁdԛqԝwӏlьbёe"
    "АAВBСCЕEНHІIЈJКKМMОOРPЅSТTХXУYҮYԚQԜWӀIЁE"
    # Greek
    "αaβbγyεeηnιiκkμuνvοoρpτtυuχxωwϲcϳj"
    "ΑAΒBΕEΖZΗHΙIΚKΜMΝNΟOΡPΤTΥYΧXϹCϺM"
    # Armenian, Latin variants and small capitals
    "օoսuհhոnռnցgıiȷjɑaɡgɩiɪiʏyᴀaʙbᴄcᴅdᴇeɢgʜhᴊjᴋkʟlᴍmɴnᴏoᴘpʀrꜱsᴛtᴜuᴠvᴡwᴢz"
)
_HOMOGLYPHS = str.maketrans({
    **{_HOMOGLYPH_PAIRS[i]: _HOMOGLYPH_PAIRS[i + 1] for i in range(0, len(_HOMOGLYPH_PAIRS), 2)},
    "\u0130": "I",  # capital I with dot: the one letter whose lower() is two characters
    "\u2800": " ",  # braille blank
})


@dataclass(frozen=True)
class _Pieces:
    """One normalisation stage: output piece ``k`` starts at ``starts[k]`` and came from
    ``src_starts[k]:src_ends[k]`` of the stage's input, char for char when ``exact[k]``."""

    starts: tuple[int, ...]
    src_starts: tuple[int, ...]
    src_ends: tuple[int, ...]
    exact: tuple[bool, ...]

    def char(self, pos: int) -> tuple[int, int]:
        k = bisect_right(self.starts, pos) - 1
        if self.exact[k]:
            at = self.src_starts[k] + pos - self.starts[k]
            return at, at + 1
        return self.src_starts[k], self.src_ends[k]


class _PieceBuilder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.starts: list[int] = []
        self.src_starts: list[int] = []
        self.src_ends: list[int] = []
        self.exact: list[bool] = []
        self.length = 0

    def add(self, text: str, src_start: int, src_end: int, exact: bool) -> None:
        if not text:
            return
        self.parts.append(text)
        self.starts.append(self.length)
        self.src_starts.append(src_start)
        self.src_ends.append(src_end)
        self.exact.append(exact)
        self.length += len(text)

    def build(self) -> tuple[str, _Pieces]:
        return "".join(self.parts), _Pieces(tuple(self.starts), tuple(self.src_starts),
                                            tuple(self.src_ends), tuple(self.exact))


@dataclass(frozen=True)
class SourceMap:
    """Maps spans of a normalised text back to the original text."""

    source_length: int
    length: int  # of the normalised text
    _fold: _Pieces  # original -> folded
    _collapse: _Pieces  # folded -> normalised

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that normalised ``start:end`` came from (the
        smallest one containing it; widened over transformed segments)."""
        start, end = max(0, start), min(end, self.length)
        if start >= end:
            at = self.source_length if start >= self.length else self._char(start)[0]
            return at, at
        return self._char(start)[0], self._char(end - 1)[1]

    def _char(self, pos: int) -> tuple[int, int]:
        lo, hi = self._collapse.char(pos)
        return self._fold.char(lo)[0], self._fold.char(hi - 1)[1]


def _segments(text: str) -> Iterator[tuple[int, int]]:
    """Spans to transform: each run of special characters with the character before it (so a
    combining mark composes with its base letter). Runs are maximal, so spans never overlap."""
    if text.isascii() and _CONTROL.search(text) is None:
        return
    for m in _SPECIAL.finditer(text):
        yield max(0, m.start() - 1), m.end()


def _fold_segment(segment: str) -> str:
    segment = _INVISIBLE.sub("", segment)
    if segment.isascii():
        return segment
    return unicodedata.normalize("NFKC", segment).translate(_HOMOGLYPHS)


def fold(text: str) -> str:
    """``text`` with its special segments folded; whitespace untouched."""
    parts: list[str] = []
    pos = 0
    for start, end in _segments(text):
        parts += (text[pos:start], _fold_segment(text[start:end]))
        pos = end
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def normalize_text(text: str) -> str:
    """The canonical text to match on (see the module doc)."""
    return " ".join(fold(text).split())


def source_map(source: str) -> SourceMap:
    """The span map of ``normalize_text(source)`` back to ``source``, built piece by piece by
    the same functions."""
    folding = _PieceBuilder()
    pos = 0
    for start, end in _segments(source):
        folding.add(source[pos:start], pos, start, True)
        folding.add(_fold_segment(source[start:end]), start, end, False)
        pos = end
    folding.add(source[pos:], pos, len(source), True)
    folded, fold_pieces = folding.build()
    collapse = _PieceBuilder()  # pieces only around whitespace that is not one plain space
    pos = len(folded) - len(folded.lstrip())
    end = len(folded.rstrip())
    for m in _UNEVEN_SPACE.finditer(folded, pos, end):
        collapse.add(folded[pos:m.start()], pos, m.start(), True)
        collapse.add(" ", m.start(), m.end(), False)
        pos = m.end()
    collapse.add(folded[pos:end], pos, end, True)
    text, collapse_pieces = collapse.build()
    return SourceMap(len(source), len(text), fold_pieces, collapse_pieces)
