"""PII and secret detectors: true positives, near-miss negatives, overlaps, redaction, and the
property that redaction never leaves a detected span's text behind."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.guards.pii import (
    LABELS,
    PII_KINDS,
    Mask,
    PiiMatch,
    apply_masks,
    find_pii,
    redact,
)
from appliance.guards.pii_numbers import iban_ok, luhn_ok

APPL_KEY = "sk-appl-" + "Zx9_Qw-7" * 5 + "abc"  # the appliance's own 43-character keys

POSITIVES = [
    # (kind, text, the span's text)
    ("email", "write to john.doe+news@example.co.uk today", "john.doe+news@example.co.uk"),
    ("email", "<a_b@mail-server.example.org>", "a_b@mail-server.example.org"),
    ("phone", "call +44 20 7946 0958 now", "+44 20 7946 0958"),
    ("phone", "tel: +1 (415) 555-2671.", "+1 (415) 555-2671"),
    ("phone", "mobile +4915123456789", "+4915123456789"),
    ("phone", "US office (555) 123-4567", "(555) 123-4567"),
    ("phone", "or 555-123-4567 after 5", "555-123-4567"),
    ("phone", "dial 1-800-555-1234", "1-800-555-1234"),
    ("phone", "ring 415.555.2671", "415.555.2671"),
    ("phone", "London 020 7946 0958", "020 7946 0958"),
    ("phone", "Paris 06 12 34 56 78", "06 12 34 56 78"),
    ("phone", "Berlin 030/12345678", "030/12345678"),
    ("ssn", "SSN 123-45-6789", "123-45-6789"),
    ("ssn", "ssn: 078 05 1120", "078 05 1120"),
    ("card", "visa 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("card", "mc 5500-0000-0000-0004", "5500-0000-0000-0004"),
    ("card", "amex 3782 822463 10005", "3782 822463 10005"),
    ("card", "plain 4012888888881881.", "4012888888881881"),
    ("iban", "IBAN DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("iban", "fr1420041010050500013m02606", "fr1420041010050500013m02606"),
    ("iban", "NO93 8601 1117 947", "NO93 8601 1117 947"),
    ("ip", "server at 192.168.1.20:8080", "192.168.1.20"),
    ("ip", "from 8.8.8.8.", "8.8.8.8"),
    ("ip", "v6 2001:db8:85a3::8a2e:370:7334 ok", "2001:db8:85a3::8a2e:370:7334"),
    ("ip", "link-local fe80::1", "fe80::1"),
    ("ip", "loopback ::1", "::1"),
    ("ip", "mapped ::ffff:192.0.2.128", "::ffff:192.0.2.128"),
    ("ip", "full 2001:0db8:0000:0000:0000:ff00:0042:8329 .",
     "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ("dob", "I was born on 03/15/1985 in Ohio", "03/15/1985"),
    ("dob", "DOB: 1990-07-04", "1990-07-04"),
    ("dob", "date of birth 3 March 1985", "3 March 1985"),
    ("dob", "birthday: March 3rd, 1985", "March 3rd, 1985"),
    ("dob", "D.O.B. 31.12.1970", "31.12.1970"),
    ("secret", f"my key is {APPL_KEY}", APPL_KEY),
    ("secret", "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345",
     "sk-proj-abcdefghijklmnopqrstuvwxyz012345"),
    ("secret", "aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("secret", "token ghp_" + "a1B2" * 9, "ghp_" + "a1B2" * 9),
    ("secret", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
     "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
    ("secret", "-----BEGIN RSA PRIVATE KEY----- MIIEabc== -----END RSA PRIVATE KEY-----",
     "-----BEGIN RSA PRIVATE KEY----- MIIEabc== -----END RSA PRIVATE KEY-----"),
    ("secret", "pasted -----BEGIN OPENSSH PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----"),
    ("secret", "password=hunter22", "hunter22"),
    ("secret", 'db_password: "Tr0ub4dor&3"', "Tr0ub4dor&3"),
    ("secret", "api_key = 'abcd1234efgh5678'", "abcd1234efgh5678"),
    ("secret", "Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
]


@pytest.mark.parametrize(("kind", "text", "found"), POSITIVES)
def test_detects(kind: str, text: str, found: str) -> None:
    matches = find_pii(text)
    assert [(m.kind, m.text) for m in matches] == [(kind, found)]
    (match,) = matches
    assert text[match.start:match.end] == found


NEGATIVES = [
    # (text, why nothing in it is PII)
    ("In 2024 we sold 1,234,567 units and 911 of them broke", "years and short numbers"),
    ("The meeting is on 01.02.2024 12:30 in room 4", "a date and a time are not a phone"),
    ("order 12345678901 shipped", "a bare 11-digit run is not a phone"),
    ("bad SSN 000-12-3456 and 666-12-3456", "areas 000 and 666 are never issued"),
    ("bad SSN 912-34-5678", "9xx areas are never issued"),
    ("bad SSN 123-00-4567 and 123-45-0000", "group 00 and serial 0000 are invalid"),
    ("card 4111 1111 1111 1112", "fails Luhn"),
    ("card 1234 5678 9012 3452", "passes Luhn but no network starts with 1"),
    ("numbers 4111 1111-1111 1111", "mixed separators: not one card"),
    ("IBAN DE88 3704 0044 0532 0130 00", "wrong check digits"),
    ("IBAN ZZ89 3704 0044 0532 0130 00", "no such country"),
    ("upgrade to version 1.2.3.4 today", "a version number, introduced as one"),
    ("release 10.0.19041.1 and v1.2.3.4", "five parts; v-prefixed"),
    ("ip 999.1.1.1 and 1.2.3", "octet out of range; three parts"),
    ("slices x[1::2] and a::b, at 12:30:45", "a Python slice, a scope, a time"),
    ("mac 00:1a:2b:3c:4d:5e", "a MAC address is not IPv6"),
    ("born in 1985 in Ohio", "a year alone is not a date of birth"),
    ("the meeting on 03/15/1985 went well", "a date without a birth cue"),
    ("I was born in Ohio. We met on 03/15/1985", "the cue is in another sentence"),
    ("DOB: 13/13/1985", "no such month"),
    ("password: required", "a form label, not a password"),
    ("api_key=${OPENAI_API_KEY} and token: <your-token>", "references and placeholders"),
    ("password = os.environ[PW]", "code reading a secret is not one"),
    ("the sk-short key and ASKIA", "too short to be a key"),
    ("email me at john at example dot com", "no @"),
    ("user@localhost", "no top-level domain"),
]


@pytest.mark.parametrize(("text", "why"), NEGATIVES)
def test_ignores_near_misses(text: str, why: str) -> None:
    assert find_pii(text) == (), why


def test_kinds_selects_detectors() -> None:
    text = "a@example.com 123-45-6789"
    assert [m.kind for m in find_pii(text, kinds=["ssn"])] == ["ssn"]
    assert [m.kind for m in find_pii(text, kinds=("email",))] == ["email"]
    assert find_pii(text, kinds=[]) == ()
    with pytest.raises(ValueError, match="unknown PII kind"):
        find_pii(text, kinds=["passport"])


def test_record_patterns() -> None:
    text = "Patient MRN: 00123456, claim CLM-2024-000017, room 12"
    matches = find_pii(text, records=[r"\bMRN[:# ]*[0-9]{6,10}\b", r"\bCLM-[0-9]{4}-[0-9]{6}\b"])
    assert [(m.kind, m.text) for m in matches] == [
        ("record", "MRN: 00123456"), ("record", "CLM-2024-000017")]
    assert find_pii(text) == ()  # no patterns, no records
    assert find_pii(text, records=["x*"]) == ()  # empty matches are not records


def test_overlaps_resolve_to_the_longest_then_kind_order() -> None:
    # the card number is also the password's value: same span, "secret" ranks first
    (match,) = find_pii("password=4111111111111111")
    assert (match.kind, match.text) == ("secret", "4111111111111111")
    # the IBAN's digits "0532 0130 00" look like a phone number; the longer IBAN wins
    assert [m.kind for m in find_pii("DE89 3704 0044 0532 0130 00")] == ["iban"]
    # an SSN-shaped national phone number: same span, "ssn" ranks before "phone"
    assert [m.kind for m in find_pii("078-05-1120")] == ["ssn"]


@pytest.mark.parametrize(("text", "expected"), [
    ("mail a@example.com or call +44 20 7946 0958",
     "mail [EMAIL] or call [PHONE]"),
    ("ssn 123-45-6789, card 4111-1111-1111-1111, iban GB82WEST12345698765432",
     "ssn [SSN], card [CARD], iban [IBAN]"),
    ("host 10.0.0.1 born on 1990-07-04", "host [IP] born on [DOB]"),
    (f"key {APPL_KEY} password=hunter22", "key [SECRET] password=[SECRET]"),
    ("nothing here", "nothing here"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text, find_pii(text)) == expected


def test_redact_merges_overlaps_and_the_longest_label_wins() -> None:
    text = "0123456789"
    matches = [PiiMatch("phone", 0, 6, text[0:6]), PiiMatch("card", 2, 10, text[2:10]),
               PiiMatch("ssn", 4, 5, text[4:5])]
    assert redact(text, matches) == "[CARD]"
    assert redact(text, [PiiMatch("ip", 1, 3, "12"), PiiMatch("dob", 5, 7, "56")]) == \
        "0[IP]34[DOB]789"
    assert apply_masks("abcdef", [Mask(0, 2, "<1>"), Mask(2, 4, "<2>"), Mask(3, 3, "<e>")]) == \
        "<1><2>ef"


def test_every_kind_has_a_label() -> None:
    assert sorted(LABELS) == sorted(PII_KINDS)
    assert all(label == f"[{label[1:-1].upper()}]" for label in LABELS.values())


@pytest.mark.parametrize(("number", "ok"), [
    ("4111111111111111", True), ("79927398713", True), ("0", True),
    ("4111111111111112", False), ("79927398710", False),
])
def test_luhn(number: str, ok: bool) -> None:
    assert luhn_ok(number) is ok


@pytest.mark.parametrize(("iban", "ok"), [
    ("DE89370400440532013000", True), ("gb82 west 1234 5698 7654 32", True),
    ("DE89370400440532013001", False), ("DE8937040044", False), ("XX89370400440532013000", False),
])
def test_iban_check(iban: str, ok: bool) -> None:
    assert iban_ok(iban) is ok


# --- the redaction property ------------------------------------------------------------------

_PII = st.sampled_from([
    "jane.roe@example.com", "bob_99@mail.example.org", "+44 20 7946 0958", "(555) 123-4567",
    "123-45-6789", "4111 1111 1111 1111", "5500000000000004", "DE89 3704 0044 0532 0130 00",
    "10.20.30.40", "2001:db8::1", "DOB 1990-07-04", f"{APPL_KEY}", "AKIAIOSFODNN7EXAMPLE",
    "password=hunter22", "-----BEGIN PRIVATE KEY-----",
])
_FILLER = st.lists(st.sampled_from(["the", "report", "is", "ready", "see", "and", ",", ".",
                                    "thanks", "x", "42", "-", ":", "(", ")"]),
                   max_size=4).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_FILLER, _PII), min_size=1, max_size=5, unique_by=lambda t: t[1]),
       _FILLER, st.sampled_from([" ", "\n", "  ", ", "]))
def test_redact_never_leaves_a_detected_span(parts: list[tuple[str, str]], tail: str,
                                             sep: str) -> None:
    text = sep.join(f"{filler}{sep}{pii}" for filler, pii in parts) + sep + tail
    matches = find_pii(text)
    out = redact(text, matches)
    for match in matches:
        assert text[match.start:match.end] == match.text
        assert match.text not in out
    assert len(matches) >= 1  # every sample holds PII that the detectors know
    for _, pii in parts:
        core = pii.removeprefix("DOB ").removeprefix("password=")
        assert core not in out
