"""Incremental UTF-8 decoding and stop strings across chunk boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.engine.detok import LogprobTrail, StopMatcher, Utf8Stream
from appliance.engine.types import TokenLogprob


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


def test_a_cut_drops_an_unfinished_character() -> None:
    stream = Utf8Stream()
    assert stream.push("日".encode() + "本".encode()[:1]) == "日"
    assert stream.cut() == ""
    assert stream.push(b"x") == "x"  # nothing of the dropped bytes is left


def _entry(piece: str) -> TokenLogprob:
    return TokenLogprob(0, piece.encode(), -1.0)


def test_logprobs_go_out_once_their_tokens_text_is_released() -> None:
    trail = LogprobTrail()
    for piece in ("The", " rain", "bow", " is"):
        trail.add(_entry(piece))
    assert [e.piece for e in trail.release("The ")] == [b"The"]  # " rain" is not all out
    assert trail.release("") == ()
    assert [e.piece for e in trail.release("rainbow")] == [b" rain", b"bow"]
    assert [e.piece for e in trail.rest()] == [b" is"]
    assert trail.rest() == ()


def test_logprobs_wait_for_a_whole_character_and_drop_after_a_stop() -> None:
    trail = LogprobTrail()
    half = "語".encode()
    trail.add(TokenLogprob(1, half[:2], -0.5))
    assert trail.release("") == ()  # nothing of it is released yet
    trail.add(TokenLogprob(2, half[2:] + b"!", -0.5))
    trail.add(_entry("STOP"))
    assert [e.token for e in trail.release("語!")] == [1, 2]  # the stop string's token: never


def test_a_discarded_text_drops_every_token_it_touches() -> None:
    trail = LogprobTrail()
    for piece in ("Mail", " ja", "ne@x", ".org", " now"):
        trail.add(_entry(piece))
    assert [e.piece for e in trail.release("Mail j")] == [b"Mail"]
    trail.discard("ane@x.org")  # redacted: " ja" began before it, ".org" ends in it
    assert [e.piece for e in trail.release(" now")] == [b" now"]
