"""PII detectors for numbers with a checksum or a fixed structure: SSNs, payment cards, IBANs.

- ``ssn``: ``AAA-GG-SSSS`` (or spaces), area not 000/666/9xx, group not 00, serial not 0000.
- ``card``: 13-19 digits, leading 2-6 (the networks' ranges), Luhn-valid, either plain or in
  groups of 4+ digits (the last may be shorter) joined by one kind of separator (space or
  dash); inside a longer run of digit groups the card is found among the other numbers.
- ``iban``: a known country code, two check digits, 11-30 more letters/digits (optionally
  grouped by four), the ISO 13616 mod-97 check equal to 1.

Each detector skips texts with too few digits to hold its number.
"""

from __future__ import annotations

import re

from appliance.guards._scan import Candidates, ScanText

_SSN = re.compile(r"([0-9](?<![0-9-][0-9])[0-9]{2})([- ])([0-9]{2})\2([0-9]{4})"
                  r"(?![0-9]|-[0-9])")
_CARD = re.compile(r"[0-9](?<![0-9][0-9])(?:[ -]?[0-9]){12,}(?![0-9])")
_IBAN = re.compile(  # matched from the first check digit; the country code is looked behind
    r"[0-9](?<=[A-Za-z]{2}[0-9])(?<![A-Za-z0-9][A-Za-z]{2}[0-9])[0-9]"
    r"(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?(?![A-Za-z0-9])")
_IBAN_COUNTRIES = frozenset(re.findall("[A-Z]{2}", """
AD AE AL AT AZ BA BE BG BH BI BR BY CH CR CY CZ DE DJ DK DO EE EG ES FI FK FO FR GB GE GI GL
GR GT HR HU IE IL IQ IS IT JO KW KZ LB LC LI LT LU LV LY MC MD ME MK MN MR MT MU NI NL NO OM
PK PL PS PT QA RO RS RU SA SC SD SE SI SK SM SO ST SV TL TN TR UA VA VG XK YE
"""))


def ssn_spans(t: ScanText) -> Candidates:
    if t.digits < 9:
        return
    for m in _SSN.finditer(t.text):
        area, _, group, serial = m.groups()
        if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
            yield m.span()


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_number(groups: list[str], seps: list[str]) -> bool:
    """Whether digit groups (joined by ``seps``) read as one card number: 13-19 digits from a
    network's range (2-6), one kind of separator, groups of 4+ but the last, Luhn-valid."""
    digits = "".join(groups)
    return (13 <= len(digits) <= 19 and "2" <= digits[0] <= "6" and len(set(seps)) <= 1
            and all(len(g) >= 4 for g in groups[:-1]) and luhn_ok(digits))


def card_spans(t: ScanText) -> Candidates:
    if t.digits < 13:
        return
    for m in _CARD.finditer(t.text):
        parts = re.split(r"([ -])", m.group())
        groups, seps = parts[::2], parts[1::2]
        offsets = [m.start()]
        for part in parts:
            offsets.append(offsets[-1] + len(part))
        i = 0
        while i < len(groups):  # a run of digit groups may hold a card among other numbers
            for j in range(min(len(groups), i + 19), i, -1):  # at most 19 digits
                if _card_number(groups[i:j], seps[i:j - 1]):
                    yield offsets[2 * i], offsets[2 * j - 1]
                    i = j - 1
                    break
            i += 1


def iban_ok(candidate: str) -> bool:
    """ISO 13616: a known country, 15-34 characters, mod-97 of the rearranged number is 1."""
    iban = candidate.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or iban[:2] not in _IBAN_COUNTRIES or not iban.isalnum():
        return False
    number = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(number) % 97 == 1


def iban_spans(t: ScanText) -> Candidates:
    if t.digits < 2:
        return
    for m in _IBAN.finditer(t.text):
        start = m.start() - 2
        group = t.text[start:m.end()]
        if iban_ok(group):
            yield start, m.end()
            continue
        cut = group.rfind(" ")  # "DE89 3704 ... 00 and" may have swallowed a short word
        if cut > 0 and iban_ok(group[:cut]):
            yield start, start + cut
