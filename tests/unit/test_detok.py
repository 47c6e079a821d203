"""Incremental UTF-8 decoding and stop strings across chunk boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.engine.detok import StopMatcher, Utf8Stream


def test_multibyte_character_split_across_pieces_is_held_back() -> None:
    data = "é日😀".encode()
    stream = Utf8Stream()
    out = [stream.push(data[i : i + 1]) for i in range(len(data))]
    assert "".join(out) == "é日😀"
    # No piece ever carried half a character.
    assert all("\ufffd" not in piece for piece in out)
    assert out[0] == ""  # the first byte of 'é' alone is not released


def test_invalid_bytes_become_replacement_not_an_error() -> None:
    stream = Utf8Stream()
    assert stream.push(b"a\xffb") == "a\ufffdb"
    assert stream.push(b"\xe6\x97") == ""
    assert stream.flush() == "\ufffd"


@given(st.text(max_size=40), st.lists(st.integers(1, 5), max_size=40))
def test_any_split_of_valid_utf8_roundtrips(text: str, cuts: list[int]) -> None:
    data = text.encode()
    stream, out, i = Utf8Stream(), [], 0
    for c in cuts:
        out.append(stream.push(data[i : i + c]))
        i += c
    out.append(stream.push(data[i:]))
    out.append(stream.flush())
    assert "".join(out) == text


@pytest.mark.parametrize(
    ("pieces", "stops", "released", "stopped"),
    [
        (["Hello", " wor", "ld"], ("world",), "Hello ", True),
        (["Hel", "lo\n\nUs", "er:"], ("\n\nUser:",), "Hello", True),
        (["abc", "def"], ("xyz",), "abcdef", False),
        (["ab", "c"], ("bcd",), "abc", False),  # 'bc' held, then released at flush
        (["STOP"], ("STOP",), "", True),
        (["a<", "|", "end", "|>b"], ("<|end|>", "zzz"), "a", True),
    ],
)
def test_stop_strings_are_found_across_chunks_and_never_released(
    pieces: list[str], stops: tuple[str, ...], released: str, stopped: bool
) -> None:
    m = StopMatcher(stops)
    out, hit = [], False
    for p in pieces:
        r = m.push(p)
        out.append(r.text)
        if r.stopped:
            hit = True
            break
    if not hit:
        out.append(m.flush())
    assert "".join(out) == released
    assert hit is stopped


def test_text_that_might_start_a_stop_is_held_until_disambiguated() -> None:
    m = StopMatcher(("###",))
    assert m.push("a#").text == "a"
    assert m.push("#").text == ""
    assert m.push("b").text == "##b"
