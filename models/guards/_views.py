"""De-obfuscation views of a text, for the guard network's reference module.

A copy of ``views()`` from ``appliance/guards/_tokenize.py`` (the appliance's de-obfuscation,
kept byte-for-byte in behaviour so the runtime port can keep using its own): encoded blobs
(base64, base32, base85, Ascii85, hex, binary, Morse, URL and ``\\u`` escapes, Unicode tag
characters) decoded in place, and whole-text rot13, reversal and leetspeak undone when that
makes the text read more like English. Ordinary text has no views. Here ``numpy`` is not
needed.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import urllib.parse
from collections.abc import Callable

# Common English words: a text whose rot13 / reversal / de-leeted form has many more of them
# than itself was obfuscated.
_COMMON_WORDS = """
a about above after all also an and any are as ask at be before below but by can command
could data delete did do does down each email every everything file first following for
forget from full give have he her here him his how i if ignore in inside instruction
instructions into is it its just key keys know like list make me mode more must my new no
not now of on only or other our out over page pages password passwords previous private
prompt reveal rules said say says secret secrets see send she should show so some system
tell than that the their them then there these they this to up us use was we were what
when which who will with without would you your
"""
_COMMON = frozenset(_COMMON_WORDS.split())
_WORD = re.compile(r"[^\W\d_]+|\w*\d\w*")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                       "$": "s"})
_TAGS = re.compile("[\U000e0000-\U000e007f]+")
_INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff]")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})|\\x([0-9A-Fa-f]{2})")
_MORSE_BLOB = re.compile(r"(?:[.\-]{1,7}[ /]+){4,}[.\-]{1,7}")
_MORSE_CODES = (".- -... -.-. -.. . ..-. --. .... .. .--- -.- .-.. -- -. --- .--. --.- .-. ... "
                "- ..- ...- .-- -..- -.-- --.. ----- .---- ..--- ...-- ....- ..... -.... "
                "--... ---.. ----.")
_MORSE = dict(zip(_MORSE_CODES.split(), "abcdefghijklmnopqrstuvwxyz0123456789", strict=True))


def _b64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def _b32(s: str) -> bytes:
    return base64.b32decode(s + "=" * (-len(s) % 8))


def _binary(s: str) -> bytes:
    return bytes(int(x, 2) for x in s.split())


def _hex(s: str) -> bytes:
    return bytes.fromhex(s)


def _a85(s: str) -> bytes:
    return base64.a85decode(s, adobe=True)


def _morse(s: str) -> bytes:
    words = [w for w in re.split(r"\s*/\s*", s.strip()) if w]
    return " ".join("".join(_MORSE.get(c, "") for c in w.split()) for w in words).encode()


# (pattern of an encoded blob, decoder); the first group, if any, is what is decoded
_BLOBS: tuple[tuple[re.Pattern[str], Callable[[str], bytes]], ...] = (
    (re.compile(r"(?:[01]{8}\s?){4,}"), _binary),
    (re.compile(r"(?:[0-9a-fA-F]{2}){8,}"), _hex),
    (re.compile(r"<~(.+?)~>", re.S), _a85),
    (re.compile(r"[A-Z2-7]{16,}={0,6}"), _b32),
    (re.compile(r"[A-Za-z0-9+/]{16,}={0,2}"), _b64),
    (re.compile(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{20,}"), base64.b85decode),
    (_MORSE_BLOB, _morse),
)


_SAMPLE = 400


def _rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


def _reverse(text: str) -> str:
    return text[::-1]


def _unleet(text: str) -> str:
    return text.translate(_LEET)


def _english(text: str) -> float:
    words = _WORD.findall(text.lower())
    return sum(w in _COMMON for w in words) / len(words) if words else 0.0


def _readable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if len(text) < 4 or sum(c.isalpha() or c.isspace() for c in text) < 0.85 * len(text):
        return None
    return text


def _decode_blobs(text: str, pattern: re.Pattern[str], decode: Callable[[str], bytes]) -> str:
    def replace(match: re.Match[str]) -> str:
        blob = match.group(1) if pattern.groups else match.group(0)
        try:
            plain = _readable(decode(blob))
        except (binascii.Error, ValueError):
            plain = None
        return f" {plain} " if plain else match.group(0)

    return pattern.sub(replace, text)


def views(text: str) -> list[str]:
    """De-obfuscated variants of ``text`` (empty for ordinary text)."""
    out: list[str] = []

    def add(view: str) -> None:
        if view != text and view not in out:
            out.append(view)

    tags = "".join(chr(ord(c) - 0xE0000) for m in _TAGS.findall(text) for c in m
                   if 0xE0020 <= ord(c) <= 0xE007E)
    if tags:
        add(_TAGS.sub(" ", text) + " " + tags)
    if _INVISIBLE.search(text):
        add(_INVISIBLE.sub("", text))
    head, tail = text[:_SAMPLE], text[-_SAMPLE:]  # judging a sample keeps long texts cheap
    english = _english(head)
    for variant, sample in ((_rot13, head), (_reverse, tail), (_unleet, head)):
        if _english(variant(sample)) > english + 0.25:
            add(variant(text))
    if len(_PERCENT.findall(text)) >= 3:
        add(urllib.parse.unquote(text))
    if len(_ESCAPE.findall(text)) >= 3:
        add(_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text))
    for pattern, decode in _BLOBS:
        add(_decode_blobs(text, pattern, decode))
    return out
