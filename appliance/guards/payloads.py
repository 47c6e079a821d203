"""Hidden payloads: text a prompt carries encoded, decoded so that the rules scan it too.

``find_payloads(source, text, words)`` answers the payloads of ``source`` (the original text;
``text``: its folded form, ``words``: that form's words), each decoded and folded
(:func:`appliance.guards.fold.normalize_text`), with its encoding and the span of its
*encoded* form in ``source`` (what a redaction masks):

- base64 / base64url spans of 16+ characters and hex spans of 16+ digits (plain, space- or
  colon-separated pairs, ``\\x`` escapes) that decode to mostly printable UTF-8;
- rot13, where the rot13 reading has far more common English words than the text itself;
- text smuggled in Unicode tag characters or in variation selectors.

Payloads inside payloads are decoded too, up to three encodings deep (base64 of hex of
base64), and at most 16 payloads per text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import compress

from appliance.guards.fold import normalize_text, source_map

_TAG_RUN = re.compile("[\U000e0020-\U000e007e]{2,}")
_SELECTOR_RUN = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")

# ~200 common English words, including the vocabulary of prompt injections. A span whose
# rot13 reading is made of them, while the span itself is not, was rot13-encoded.
_COMMON_WORDS = """
a about above act after again against all also always am an and answer any are as ask at
away back be because been before being below between both but by call can cannot change
come command commands content could data day delete did disregard do does done down each
email even every everything file find first following for forget from full get give go
good has have he help her here him his how i if ignore in information inside instead
instruction instructions into is it its just keep key know last like list look make many
may me message mode more most must my never new no not nothing now of off old on once only
open or other our out over own password people please policy previous print prior private
prompt put read really reveal right rules said same say says secret secrets see send
should show since so some something start still such system take talk tell than thank that
the their them then there these they thing think this those through time to told too
under until up us use user very want was way we well were what when where which while who
why will with without word words work would write year yes you your
"""
_COMMON = frozenset(_COMMON_WORDS.split())
_ROT_COMMON = frozenset(codecs.encode(w, "rot13") for w in _COMMON) - _COMMON
_NOT_LETTER = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalpha()})
_WORD = re.compile(r"[a-z]+")

_MIN_BLOB = 16  # characters of base64 / hex digits
_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX_WORD = re.compile(r"(?<![0-9A-Za-z])(?:(?:[0-9A-Fa-f]{2}){8,}|(?:[0-9A-Fa-f]{2}:){7,}"
                       r"[0-9A-Fa-f]{2})(?![0-9A-Za-z])|(?:\\x[0-9A-Fa-f]{2}){8,}")
_HEX_SPACED = re.compile(  # starts with a plain character class, so re can skip ahead fast
    r"[0-9A-Fa-f](?<![0-9A-Za-z][0-9A-Fa-f])[0-9A-Fa-f](?: [0-9A-Fa-f]{2}){7,}(?![0-9A-Za-z])")
_HEX_SPACED_HINT = re.compile(r"[2-7][0-9A-Fa-f] [2-7][0-9A-Fa-f] [2-7][0-9A-Fa-f]")
_HEX_JUNK = re.compile(r"\\x|[ :]")
_B64URL = str.maketrans("-_", "+/")

_MAX_DEPTH = 2  # payloads inside payloads inside payloads, no deeper
_MAX_PAYLOADS = 16  # per text, so a text made of blobs cannot make us decode forever


@dataclass(frozen=True)
class Payload:
    """A hidden payload: ``text`` decoded (and normalised) from ``encoding``, found at
    ``start:end`` of the original text."""

    encoding: str  # "base64", "hex", "rot13", "tags", "selectors"
    start: int
    end: int
    text: str


_Found = tuple[str, int, int, str]  # (encoding, start, end, decoded text)


def _readable(data: bytes) -> str | None:
    """``data`` as text if it is UTF-8 that reads as text (mostly printable, half letters)."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if len(text) < 4:
        return None
    printable = sum(c.isprintable() or c in "\t\n\r" for c in text)
    wordy = sum(c.isalpha() or c == " " for c in text)
    if printable < 0.95 * len(text) or wordy < 0.5 * len(text):
        return None
    return text


def _b64decode(blob: str) -> bytes:
    core = blob.rstrip("=").translate(_B64URL)
    if len(core) % 4 == 1:
        core = core[:-1]
    return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)


def _hexdecode(blob: str) -> bytes:
    return bytes.fromhex(_HEX_JUNK.sub("", blob))


_DECODERS: tuple[tuple[str, re.Pattern[str], Callable[[str], bytes]], ...] = (
    ("hex", _HEX_WORD, _hexdecode),
    ("base64", _B64, _b64decode),
)


def _decode(encoding: str, decode: Callable[[str], bytes], m: re.Match[str],
            offset: int) -> Iterator[_Found]:
    try:
        plain = _readable(decode(m.group()))
    except (binascii.Error, ValueError):
        return
    if plain is not None:
        yield encoding, offset + m.start(), offset + m.end(), normalize_text(plain)


def _blobs(text: str, words: list[str]) -> Iterator[_Found]:
    """Encoded blobs of a normalised text (``words``: its words) that read as text."""
    offset = 0
    for word in compress(words, map(_MIN_BLOB.__le__, map(len, words))):  # blobs are long words
        offset = text.find(word, offset)  # no shorter word can contain it: this is the word
        for encoding, pattern, decode in _DECODERS:
            for m in pattern.finditer(word):
                yield from _decode(encoding, decode, m, offset)
        offset += len(word)
    if _HEX_SPACED_HINT.search(text):  # hex of text is mostly pairs 20-7f
        for m in _HEX_SPACED.finditer(text):
            yield from _decode("hex", _hexdecode, m, 0)


def _rot13_span(text: str) -> tuple[int, int] | None:
    """The span of ``text`` whose rot13 reading is English when the text itself is not:
    from the first to the last word of the runs (not broken by a plain common word) that
    have at least three rot13-common words, half or more of their words."""
    lowered = text.lower()
    if len(_ROT_COMMON.intersection(lowered.translate(_NOT_LETTER).split())) < 2:
        return None  # the cheap answer for ordinary text
    found: tuple[int, int] | None = None
    run_start = run_end = -1
    rot = other = 0
    for m in _WORD.finditer(lowered):
        word = m.group()
        if word in _ROT_COMMON:
            if run_start < 0:
                run_start = m.start()
            run_end = m.end()
            rot += 1
            continue
        if word in _COMMON:  # a plain English word ends the run
            if rot >= 3 and rot >= other:
                found = (run_start if found is None else found[0], run_end)
            run_start, rot, other = -1, 0, 0
        elif run_start >= 0:
            other += 1
    if rot >= 3 and rot >= other:
        found = (run_start if found is None else found[0], run_end)
    return found


def _hidden(source: str) -> Iterator[Payload]:
    """Payloads smuggled in invisible characters, found on the original text."""
    if source.isascii():
        return
    for m in _TAG_RUN.finditer(source):
        text = normalize_text("".join(chr(ord(c) - 0xE0000) for c in m.group()))
        if text:
            yield Payload("tags", m.start(), m.end(), text)
    for m in _SELECTOR_RUN.finditer(source):
        data = bytes(ord(c) - 0xFE00 if ord(c) < 0xFF00 else ord(c) - 0xE0100 + 16
                     for c in m.group())
        plain = _readable(data)
        if plain is not None:
            yield Payload("selectors", m.start(), m.end(), normalize_text(plain))


def _payloads(text: str, words: list[str]) -> Iterator[_Found]:
    """Encoded payloads of a normalised text, with their spans in it."""
    yield from _blobs(text, words)
    span = _rot13_span(text)
    if span is not None:
        start, end = span
        yield "rot13", start, end, codecs.encode(text[start:end], "rot13")


def find_payloads(source: str, text: str, words: list[str]) -> tuple[Payload, ...]:
    """The hidden payloads of ``source``, whose folded form is ``text`` with ``words`` (see
    the module doc); none repeats ``text`` or another payload."""
    payloads = list(_hidden(source))
    found = list(_payloads(text, words))
    if found:
        spans = source_map(source)
        payloads += (Payload(enc, *spans.span(s, e), plain) for enc, s, e, plain in found)
    queue = [(payload, 0) for payload in payloads]
    kept: list[Payload] = []
    seen = {text, ""}
    for payload, depth in queue:  # grows while we walk it: payloads inside payloads
        if len(kept) == _MAX_PAYLOADS:
            break
        if payload.text in seen:
            continue
        seen.add(payload.text)
        kept.append(payload)
        if depth < _MAX_DEPTH:
            queue += ((Payload(enc, payload.start, payload.end, plain), depth + 1)
                      for enc, _, _, plain in _payloads(payload.text, payload.text.split()))
    return tuple(kept)
