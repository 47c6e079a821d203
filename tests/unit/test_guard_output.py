"""The streamed output rail: windows, holdback, and that nothing unchecked is released."""

from __future__ import annotations

import pytest

from appliance.guards.output import OutputBuffer, OutputRail
from appliance.guards.pipeline import OutputRules
from appliance.guards.policy import load_policy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_buffer_cuts_at_the_last_sentence_boundary() -> None:
    buf = OutputBuffer(max_tokens=100)
    assert buf.push("Hello there") == []
    out = buf.push(". How are you? I am")
    assert [w.text for w in out] == ["Hello there. How are you? "]
    assert out[0].sentence
    rest = buf.flush()
    assert rest is not None and (rest.text, rest.sentence) == ("I am", True)
    assert buf.flush() is None


def test_buffer_forces_a_window_at_whitespace_after_max_tokens() -> None:
    buf = OutputBuffer(max_tokens=3, keep_chars=10)
    assert buf.push("write to ", 1) == [] and buf.push("john.doe@", 1) == []
    out = buf.push("example", 1)
    assert [w.text for w in out] == ["write to "]  # the address is not split
    assert not out[0].sentence
    rest = buf.flush()
    assert rest is not None and rest.text == "john.doe@example"


def test_forced_window_keeps_the_tail_back() -> None:
    buf = OutputBuffer(max_tokens=1, keep_chars=20)
    assert buf.push("a b c d e f", 5) == []  # not longer than the kept tail yet
    (out,) = buf.push(" g h i j k l m n o p", 5)
    assert len(buf.flush().text) >= 20  # type: ignore[union-attr]
    assert out.text.endswith(" ")


def test_buffer_reports_how_long_text_was_held() -> None:
    clock = Clock()
    buf = OutputBuffer(max_tokens=100, clock=clock)
    buf.push("One")
    clock.now = 0.25
    (window,) = buf.push(" two. ")
    assert window.held_s == pytest.approx(0.25)


def _tokens(text: str) -> list[str]:
    """A scripted generation: the text in small pieces, as a model would stream it."""
    return [text[i:i + 3] for i in range(0, len(text), 3)]


async def _run(rail: OutputRail, text: str, max_tokens: int = 8) -> tuple[str, str | None]:
    """Feed a scripted generation through buffer + rail; (released text, replacement)."""
    buf = OutputBuffer(max_tokens)
    released = []
    for piece in _tokens(text):
        for window in buf.push(piece, 1):
            verdict = await rail.check(window)
            if verdict.replacement is not None:
                return "".join(released), verdict.replacement
            released.append(verdict.text)
    rest = buf.flush()
    if rest is not None:
        verdict = await rail.check(rest)
        if verdict.replacement is not None:
            return "".join(released), verdict.replacement
        released.append(verdict.text)
    return "".join(released), None


@pytest.mark.parametrize(("unsafe", "secret"), [
    ("You should take 400 mg of ibuprofen every 6 hours.", "400"),
    ("Based on this, your diagnosis is pneumonia.", "diagnosis"),
    ("I think you have diabetes, honestly.", "diabetes"),
])
@pytest.mark.parametrize("max_tokens", [4, 8, 100])
async def test_generation_turning_unsafe_mid_stream_leaks_nothing(
        unsafe: str, secret: str, max_tokens: int) -> None:
    policy = load_policy("clinic")
    rail = OutputRail(OutputRules(policy))
    safe = "Thanks for your question. Headaches have many causes. "
    released, replacement = await _run(rail, safe + unsafe + " Take care.", max_tokens)
    assert replacement == policy.output.rules[0].replacement
    assert released.startswith(safe)  # the safe part was delivered...
    assert secret not in released  # ...and nothing of the violation
    assert not any(r.pattern.search(released) for r in policy.output.rules)
    if max_tokens == 100:  # whole sentences: the unsafe one is withheld entirely
        assert released == safe


async def test_unsafe_last_window_at_end_of_stream_is_withheld() -> None:
    rail = OutputRail(OutputRules(load_policy("clinic")))
    released, replacement = await _run(rail, "Sure. you should take 2 tablets", max_tokens=100)
    assert replacement is not None and "tablets" not in released


async def test_phrase_split_across_forced_windows_is_caught() -> None:
    rail = OutputRail(OutputRules(load_policy("clinic")))
    # No sentence end, tiny windows: "you should take" and "50 mg" land in different windows.
    released, replacement = await _run(rail, "ok so you should take 50 mg now", max_tokens=2)
    assert replacement is not None
    assert "50 mg" not in released


async def test_pii_in_the_output_is_masked_not_blocked() -> None:
    rail = OutputRail(OutputRules(load_policy("default")))
    released, replacement = await _run(rail, "Write to jane.roe@example.org today. Bye.")
    assert replacement is None
    assert "jane.roe@example.org" not in released and "[EMAIL]" in released


async def test_secret_in_the_output_blocks() -> None:
    policy = load_policy("default")
    rail = OutputRail(OutputRules(policy))
    released, replacement = await _run(
        rail, "Here it is. The key is AKIAIOSFODNN7EXAMPLE for the bucket.")
    assert replacement == policy.output.blocked_message
    assert "AKIA" not in released


async def test_classifier_runs_at_sentence_boundaries_and_blocks() -> None:
    seen: list[str] = []

    async def classify(text: str) -> str | None:
        seen.append(text)
        return "S1" if "hurt" in text else None

    policy = load_policy("default")
    rail = OutputRail(OutputRules(policy), classify=classify)
    released, replacement = await _run(rail, "Fine. Here is how to hurt someone badly. End.",
                                       max_tokens=100)
    assert replacement == policy.refusal
    assert released == "Fine. "
    assert all(t.endswith(" ") for t in seen)  # only whole sentences were classified
