"""PII and secret detectors: regexes plus the checks that make them precise.

``find_pii(text, kinds=None, records=())`` answers frozen :class:`PiiMatch` spans, sorted and
non-overlapping (of overlapping candidates the longest wins, ties by the order of
:data:`PII_KINDS`). ``redact(text, matches)`` replaces each span by its label (``[EMAIL]``,
``[PHONE]``, ...); ``apply_masks`` does the same for arbitrary labelled spans.

What each kind finds (and deliberately does not):

- ``email``: ``local@domain.tld`` (local part up to 64 characters).
- ``phone``: international ``+CC ...`` with 8-15 digits; US ``(555) 123-4567`` /
  ``555-123-4567`` / ``555.123.4567`` / ``1-800-555-1234`` (a separator before the last four
  digits is required, and a digit group right before it means a longer number);
  national numbers with a trunk ``0`` and one consistent separator (``020 7946 0958``,
  ``06 12 34 56 78``, ``030/1234567``), 9-12 digits. Not: years, short numbers, bare digit
  runs, dates (``01.02.2024`` has too few digits; mixed separators do not chain).
- ``ssn``, ``card`` (Luhn), ``iban`` (mod-97): see :mod:`appliance.guards.pii_numbers`.
- ``ip``: IPv4 dotted quads with octets 0-255, *unless* introduced by a version word
  (``version 1.2.3.4``, ``release``, ``build``, ``firmware``...; ``v1.2.3.4`` is not a quad at
  all); IPv6 in full or compressed form, validated, with at least three groups or a 3+ digit
  group (so ``fe80::1`` and ``::1`` count, Python slices like ``x[1::2]`` do not).
- ``dob``: a full date (ISO, ``d/m/y``, ``m/d/y``, ``3 March 1985``, ``March 3, 1985``) with
  ``born``, ``DOB``, ``D.O.B.``, ``date of birth``, ``birthdate`` or ``birthday`` at most 40
  characters before it, in the same clause. A bare year is not a date of birth.
- ``record``: any of the caller's ``records`` regexes (an MRN, a claim number ...).
- ``secret``: API keys, tokens, private keys and credential assignments; see
  :mod:`appliance.guards.leaks`.

Digits are ASCII ``[0-9]``; run the detectors on normalised text
(:func:`appliance.guards.normalize.normalize`) so fullwidth digits and zero-width
separators do not hide anything. Every detector has a cheap gate (enough digits, an ``@``, a
cue word) and its pattern starts with a plain character or class, so a 1,200-character
prompt without PII costs tens of microseconds.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

from appliance.guards._scan import Candidates, ScanText
from appliance.guards.leaks import secret_spans
from appliance.guards.pii_numbers import card_spans, iban_spans, ssn_spans

PiiKind = Literal["secret", "record", "card", "iban", "ssn", "email", "ip", "phone", "dob"]
PII_KINDS: tuple[PiiKind, ...] = get_args(PiiKind)  # also the tie-break order of overlaps
LABELS = MappingProxyType({
    "email": "[EMAIL]", "phone": "[PHONE]", "ssn": "[SSN]", "card": "[CARD]", "iban": "[IBAN]",
    "ip": "[IP]", "dob": "[DOB]", "record": "[RECORD]", "secret": "[SECRET]",
})


@dataclass(frozen=True)
class PiiMatch:
    kind: PiiKind
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Mask:
    """A span to replace by ``label``."""

    start: int
    end: int
    label: str


# Most patterns start with a plain character class or literal and only then look behind, so
# that re can skip to the few positions where a match could start instead of trying each one.

# --- e-mail and phone numbers ------------------------------------------------------------------

_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![\w-])")
_PHONE_INTL = re.compile(r"\+(?<![\w+].)[1-9](?:[ .()-]{0,2}[0-9]){7,14}(?![0-9])")
_PHONE_US = re.compile(
    r"[(0-9](?<![\w+.-].)(?<![0-9][ .][0-9])"  # "(" or the first digit, not inside a number
    r"(?:(?<=1)[ .-](?:\([0-9]{3}\)|[0-9]{3})|(?<=\()[0-9]{3}\)|(?<=[0-9])[0-9]{2})"
    r"[ .-]?[0-9]{3}[ .-][0-9]{4}(?![0-9]|[.-][0-9])")
_PHONE_NATIONAL = re.compile(
    r"0(?<![\w+.,/-]0)(?<![0-9][ ./-]0)[1-9][0-9]{0,4}(?P<sep>[ ./-])[0-9]{2,8}"
    r"(?:(?P=sep)[0-9]{2,4}){0,3}(?![0-9]|[./-][0-9])")


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _email(t: ScanText) -> Candidates:
    text = t.text
    at = text.find("@")
    while at >= 0:  # from each "@": the local part back, then the domain forward
        start = at
        while start > 0 and at - start <= 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        before = text[start - 1] if start else " "
        domain = _DOMAIN.match(text, at + 1)
        if (domain and 0 < at - start <= 64 and not before.isalnum() and before != "_"
                and before not in _LOCAL_CHARS):
            yield start, domain.end()
        at = text.find("@", at + 1)


def _phone(t: ScanText) -> Candidates:
    if t.digits < 8:
        return
    for m in _PHONE_INTL.finditer(t.text):
        yield m.span()
    for m in _PHONE_US.finditer(t.text):
        yield m.span()
    for m in _PHONE_NATIONAL.finditer(t.text):
        if 9 <= _digits(m.group()) <= 12:
            yield m.span()


# --- IP addresses ------------------------------------------------------------------------------

_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}"
                   r"(?![\w]|\.[0-9])")
_VERSION_CUE = re.compile(r"(?:\b(?:version|ver|release|build|rev|revision|firmware|update|"
                          r"upgrade|patch)\b\.?\s*(?:to\s+|no\.?\s*|number\s+)?[:#]?\s*)$",
                          re.IGNORECASE)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
                   r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:.])")
_IPV6_HINT = re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _ipv4_ok(s: str) -> bool:
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)


def _ipv6_groups(s: str) -> list[str] | None:
    """The explicit groups of a valid IPv6 address (an IPv4 tail counts as two), else None."""
    if "." in s:
        head, _, v4 = s.rpartition(":")
        if not _ipv4_ok(v4):
            return None
        s = head + ":0:0"
    if "::" in s:
        if s.count("::") > 1:
            return None
        left, right = s.split("::")
        groups = (left.split(":") if left else []) + (right.split(":") if right else [])
        if len(groups) > 7:
            return None
    else:
        groups = s.split(":")
        if len(groups) != 8:
            return None
    if all(1 <= len(g) <= 4 and set(g) <= _HEXDIGITS for g in groups):
        return groups
    return None


def _ip(t: ScanText) -> Candidates:
    text = t.text
    if t.digits >= 4:
        for m in _IPV4.finditer(text):
            if _ipv4_ok(m.group()) and not _VERSION_CUE.search(text, max(0, m.start() - 24),
                                                               m.start()):
                yield m.span()
    if _IPV6_HINT.search(text) is None:
        return
    for m in _IPV6.finditer(text):
        groups = _ipv6_groups(m.group())
        if groups is not None and (len(groups) >= 3 or m.group() == "::1"
                                   or any(len(g) >= 3 for g in groups)):
            yield m.span()


# --- dates of birth ----------------------------------------------------------------------------

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_YEAR = r"(?:1[89][0-9]{2}|20[0-9]{2})"
_DATE = re.compile(
    rf"(?<![0-9])(?:(?P<iy>{_YEAR})[-/.](?P<im>[0-9]{{1,2}})[-/.](?P<id>[0-9]{{1,2}})"
    rf"|(?P<a>[0-9]{{1,2}})[-/.](?P<b>[0-9]{{1,2}})[-/.](?P<y>{_YEAR}|[0-9]{{2}})"
    rf"|(?P<dd>[0-9]{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<dm>{_MONTH})\.?,?\s+{_YEAR}"
    rf"|(?P<mm>{_MONTH})\.?\s+(?P<md>[0-9]{{1,2}})(?:st|nd|rd|th)?,?\s+{_YEAR})(?![0-9])",
    re.IGNORECASE)
_DOB_WORDS = ("born", "dob", "d.o.b", "birth")
_DOB_CUE = re.compile(r"\b(?:born|dob|d\.o\.b\.?|date\s+of\s+birth|birth\s*date|birthday)(?!\w)",
                      re.IGNORECASE)
_CLAUSE_END = re.compile(r"[;!?\n]|\.\s")
_DOB_REACH = 40  # characters from the cue to the date


def _day_month(day: str, month: str) -> bool:
    return 1 <= int(day) <= 31 and 1 <= int(month) <= 12


def _date_ok(m: re.Match[str]) -> bool:
    g = m.groupdict()
    if g["iy"]:
        return _day_month(g["id"], g["im"])
    if g["a"]:
        return _day_month(g["a"], g["b"]) or _day_month(g["b"], g["a"])
    day = g["dd"] or g["md"]
    return 1 <= int(day) <= 31 and (g["dm"] or g["mm"])[:3].lower() in _MONTHS


def _dob(t: ScanText) -> Candidates:
    if t.digits < 4 or not any(w in t.low for w in _DOB_WORDS):
        return
    text = t.text
    for cue in _DOB_CUE.finditer(text):
        end = min(len(text), cue.end() + _DOB_REACH + 40)  # room for the longest date
        for m in _DATE.finditer(text, cue.end(), end):
            if m.start() - cue.end() > _DOB_REACH or (m.end() == end < len(text)):
                break
            if _CLAUSE_END.search(text, cue.end(), m.start()):
                break  # the date must be in the cue's own clause
            if _date_ok(m):
                yield m.span()


# --- the API -----------------------------------------------------------------------------------

_DETECTORS: MappingProxyType[str, Callable[[ScanText], Candidates]] = MappingProxyType({
    "email": _email, "phone": _phone, "ssn": ssn_spans, "card": card_spans, "iban": iban_spans,
    "ip": _ip, "dob": _dob, "secret": secret_spans,
})


def _records(text: str, records: Sequence[str | re.Pattern[str]]) -> Candidates:
    for pattern in records:
        for m in re.finditer(pattern, text):
            if m.end() > m.start():
                yield m.span()


def check_kinds(kinds: Iterable[str]) -> tuple[PiiKind, ...]:
    """``kinds`` as PII kinds, in :data:`PII_KINDS` order; ValueError for an unknown one."""
    wanted = set(kinds)
    unknown = wanted.difference(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {sorted(unknown)}; known: {list(PII_KINDS)}")
    return tuple(k for k in PII_KINDS if k in wanted)


def find_pii(text: str, kinds: Iterable[str] | None = None, *,
             records: Sequence[str | re.Pattern[str]] = ()) -> tuple[PiiMatch, ...]:
    """PII and secrets in ``text``: sorted, non-overlapping (the longest candidate wins, ties
    by :data:`PII_KINDS` order). ``kinds``: which to look for (default all); ``records``:
    regexes of record numbers, reported as kind ``record``."""
    selected = PII_KINDS if kinds is None else check_kinds(kinds)
    scan = ScanText.of(text)
    candidates: list[tuple[int, int, int, PiiKind]] = []  # (-length, rank, start, kind)
    for rank, kind in enumerate(selected):
        spans = _records(text, records) if kind == "record" else _DETECTORS[kind](scan)
        candidates.extend((start - end, rank, start, kind) for start, end in spans)
    starts: list[int] = []  # of the spans taken so far, which never overlap: sorted
    found: list[PiiMatch] = []
    for neg_length, _, start, kind in sorted(candidates):
        end = start - neg_length
        k = bisect_right(starts, start)
        if (k > 0 and found[k - 1].end > start) or (k < len(starts) and starts[k] < end):
            continue
        starts.insert(k, start)
        found.insert(k, PiiMatch(kind, start, end, text[start:end]))
    return tuple(found)


def apply_masks(text: str, masks: Iterable[Mask]) -> str:
    """``text`` with each span replaced by its label. Overlapping spans merge into one masked
    region labelled by the longest of them (on a tie the earlier, then the first given)."""
    ordered = sorted((m for m in masks if m.end > m.start),
                     key=lambda m: (m.start, m.start - m.end))
    out: list[str] = []
    pos = 0
    i = 0
    while i < len(ordered):
        best = ordered[i]
        start, end = best.start, best.end
        i += 1
        while i < len(ordered) and ordered[i].start < end:
            if ordered[i].end - ordered[i].start > best.end - best.start:
                best = ordered[i]
            end = max(end, ordered[i].end)
            i += 1
        out.append(text[pos:start])
        out.append(best.label)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact(text: str, matches: Iterable[PiiMatch]) -> str:
    """``text`` with every match replaced by its kind's label (``[EMAIL]``, ``[CARD]`` ...);
    overlapping matches merge and the longest one's label wins."""
    ranked = sorted(matches, key=lambda m: PII_KINDS.index(m.kind))
    return apply_masks(text, (Mask(m.start, m.end, LABELS[m.kind]) for m in ranked))
