"""The redactor of logs and request ids: PII kinds, policy record patterns, plain ids."""

from __future__ import annotations

import re
import uuid

import pytest

from appliance.observability.redaction import MAX_REQUEST_ID, Scrubber

PII_IDS = ["jane.roe@example.org", "415-555-0132", "4539148803436467", "4539-1488-0343-6467",
           "536-22-8741", "DE89370400440532013000", "203.0.113.77", "born-1984-03-15",
           "MRN48213377", "AKIA4HX2KQ7ZP3MWN5RT"]


@pytest.fixture(scope="module")
def scrub() -> Scrubber:
    return Scrubber.for_policies(["default", "clinic"])


@pytest.mark.parametrize("offered", ["trace-me-123", "req_01HZX3.retry-2", "a" * 64,
                                     str(uuid.UUID(int=7)), "0c7d1a2b3e4f"])
def test_a_short_plain_id_is_kept(scrub: Scrubber, offered: str) -> None:
    assert scrub.request_id(offered) == offered


@pytest.mark.parametrize("offered", [None, "", "a" * (MAX_REQUEST_ID + 1), "two words",
                                     "id\r\nX-Injected: 1", "caf\u00e9", "<script>", *PII_IDS])
def test_anything_else_is_replaced_by_an_id_of_our_own(scrub: Scrubber,
                                                       offered: str | None) -> None:
    got = scrub.request_id(offered)
    assert got != offered and re.fullmatch(r"[0-9a-f]{32}", got)


def test_record_numbers_need_the_policy_patterns() -> None:
    assert Scrubber().request_id("MRN48213377") == "MRN48213377"  # no patterns known
    assert Scrubber().text("chart MRN 48213377") == "chart MRN 48213377"
    clinic = Scrubber.for_policies(["clinic"])
    assert clinic.text("chart MRN 48213377, born on 1984-03-15") == \
        "chart [RECORD], born on [DOB]"


def test_text_is_normalised_then_every_kind_masked(scrub: Scrubber) -> None:
    text = ("mail jane\u200b.roe@example.org, card \uff14\uff15\uff13\uff19 1488 0343 6467, "
            "IBAN DE89 3704 0044 0532 0130 00, from 203.0.113.77, key AKIA4HX2KQ7ZP3MWN5RT")
    assert scrub.text(text) == "mail [EMAIL], card [CARD], IBAN [IBAN], from [IP], key [SECRET]"
