"""The streamed output rail: windows, holdback, and that nothing unchecked is released."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.guards.output import CLASSIFY_CONTEXT, OutputBuffer, OutputRail, Window
from appliance.guards.pipeline import OutputRules
from appliance.guards.policy import load_policy

WINDOWS = [0, 1, 2, 4, 8]  # output windows in tokens (0: whole sentences)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _never(text: str) -> bool:
    return False


def test_buffer_cuts_at_the_last_sentence_boundary() -> None:
    buf = OutputBuffer(max_tokens=100, ends_in_phrase=_never, early_first=False)
    assert buf.push("Hello there") == []
    out = buf.push(". How are you? I am")
    assert [w.text for w in out] == ["Hello there. How are you? "]
    assert out[0].sentence
    rest = buf.flush()
    assert rest is not None and (rest.text, rest.sentence) == ("I am", True)
    assert buf.flush() is None


def test_first_window_is_released_after_the_first_whole_word() -> None:
    buf = OutputBuffer(max_tokens=100, ends_in_phrase=_never)
    assert buf.push("Hel") == [] and buf.push("lo") == []  # a word still growing is held
    (first,) = buf.push(" the")
    assert (first.text, first.sentence) == ("Hello ", False)
    assert buf.push("re, how") == []  # later windows wait for a sentence end...
    (second,) = buf.push(" are you? Fine")
    assert second.text == "there, how are you? " and second.sentence


def test_buffer_forces_a_window_at_a_safe_word_after_max_tokens() -> None:
    buf = OutputBuffer(max_tokens=3, ends_in_phrase=_never, early_first=False)
    assert buf.push("write to ", 1) == [] and buf.push("john.doe@", 1) == []
    out = buf.push("example", 1)
    assert [w.text for w in out] == ["write to "]  # the address is not split
    assert not out[0].sentence
    rest = buf.flush()
    assert rest is not None and rest.text == "john.doe@example"


@pytest.mark.parametrize("number", ["4111 1111 1111 1111", "+1 555 123 4567",
                                    "DE89 3704 0044 0532 0130 00"])
def test_a_number_in_words_is_never_split_between_windows(number: str) -> None:
    buf = OutputBuffer(max_tokens=1, ends_in_phrase=_never)
    windows = [w.text for piece in _tokens(f"Your number is {number} and that is all")
               for w in buf.push(piece, 1)]
    # Every digit group is in the window holding the whole number, never split across two.
    holding = [w for w in windows if any(c.isdigit() for c in w)]
    assert len(holding) == 1 and number in holding[0], windows


def test_a_rule_phrase_that_has_begun_is_held_until_it_resolves() -> None:
    rules = OutputRules(load_policy("clinic"))
    buf = OutputBuffer(max_tokens=1, ends_in_phrase=rules.ends_in_phrase)
    released = ""
    for piece in ["Maybe ", "you ", "should ", "take ", "400 "]:
        released += "".join(w.text for w in buf.push(piece, 1))
    assert released == "Maybe "  # "you should take 400" may become a dosing instruction
    released += "".join(w.text for w in buf.push("years ", 1))
    # "years" is no dose unit: the phrase can no longer become one, so it all goes.
    assert released == "Maybe you should take 400 years "


def test_a_run_with_no_safe_boundary_is_still_bounded() -> None:
    buf = OutputBuffer(max_tokens=1, ends_in_phrase=_never, keep_chars=20)
    digits = " ".join(str(i) for i in range(100, 160))  # every word has digits
    windows = [w for piece in _tokens(digits) for w in buf.push(piece, 1)]
    assert windows and all(len(w.text) <= 4 * 20 + 10 for w in windows)
    rest = buf.flush()
    assert rest is not None and len(rest.text) >= 20


def test_buffer_reports_how_long_text_was_held() -> None:
    clock = Clock()
    buf = OutputBuffer(max_tokens=100, ends_in_phrase=_never, clock=clock, early_first=False)
    buf.push("One")
    clock.now = 0.25
    (window,) = buf.push(" two. ")
    assert window.held_s == pytest.approx(0.25)


def _tokens(text: str) -> list[str]:
    """A scripted generation: the text in small pieces, as a model would stream it."""
    return [text[i:i + 3] for i in range(0, len(text), 3)]


async def _run(rail: OutputRail, text: str, max_tokens: int = 8,
               window_tokens: int = 0) -> tuple[str, str | None]:
    """Feed a scripted generation through buffer + rail, as the output stage does (a held
    window goes back to the buffer); (released text, replacement)."""
    buf = OutputBuffer(max_tokens, ends_in_phrase=rail.ends_in_phrase,
                       window_tokens=window_tokens)
    released = []

    def windows(piece: str | None) -> Iterator[Window]:
        if piece is not None:
            yield from buf.push(piece, 1)
        elif (rest := buf.flush()) is not None:
            yield rest

    for piece in [*_tokens(text), None]:
        for window in windows(piece):
            verdict = await rail.check(window)
            if verdict.action == "hold":
                assert window.tentative
                buf.hold(window)
                continue
            if verdict.replacement is not None:
                return "".join(released), verdict.replacement
            released.append(verdict.text)
    assert buf.flush() is None
    return "".join(released), None


@pytest.mark.parametrize(("unsafe", "secret"), [
    ("You should take 400 mg of ibuprofen every 6 hours.", "400"),
    ("Based on this, your diagnosis is pneumonia.", "diagnosis"),
    ("I think you have diabetes, honestly.", "diabetes"),
])
@pytest.mark.parametrize("max_tokens", [4, 8, 100])
@pytest.mark.parametrize("window_tokens", WINDOWS)
async def test_generation_turning_unsafe_mid_stream_leaks_nothing(
        unsafe: str, secret: str, max_tokens: int, window_tokens: int) -> None:
    policy = load_policy("clinic")
    rail = OutputRail(OutputRules(policy))
    safe = "Thanks for your question. Headaches have many causes. "
    released, replacement = await _run(rail, safe + unsafe + " Take care.", max_tokens,
                                       window_tokens)
    assert replacement == policy.output.rules[0].replacement
    assert released.startswith(safe)  # the safe part was delivered...
    assert secret not in released  # ...and nothing of the violation
    assert not any(r.pattern.search(released) for r in policy.output.rules)
    if max_tokens == 100 and window_tokens == 0:  # whole sentences: all of it withheld
        assert released == safe


@pytest.mark.parametrize("window_tokens", WINDOWS)
async def test_unsafe_last_window_at_end_of_stream_is_withheld(window_tokens: int) -> None:
    rail = OutputRail(OutputRules(load_policy("clinic")))
    released, replacement = await _run(rail, "Sure. you should take 2 tablets", 100,
                                       window_tokens)
    assert replacement is not None and "tablets" not in released


@pytest.mark.parametrize(("max_tokens", "window_tokens"), [(2, 0), (32, 1), (32, 2)])
async def test_phrase_split_across_forced_windows_is_caught(max_tokens: int,
                                                            window_tokens: int) -> None:
    rail = OutputRail(OutputRules(load_policy("clinic")))
    # No sentence end, tiny windows: "you should take" and "50 mg" land in different windows.
    released, replacement = await _run(rail, "ok so you should take 50 mg now", max_tokens,
                                       window_tokens)
    assert replacement is not None
    assert "50 mg" not in released


@pytest.mark.parametrize("window_tokens", WINDOWS)
async def test_pii_in_the_output_is_masked_not_blocked(window_tokens: int) -> None:
    rail = OutputRail(OutputRules(load_policy("default")))
    released, replacement = await _run(rail, "Write to jane.roe@example.org today. Bye.",
                                       window_tokens=window_tokens)
    assert replacement is None
    assert "jane.roe@example.org" not in released and "[EMAIL]" in released


@pytest.mark.parametrize("window_tokens", WINDOWS)
async def test_secret_in_the_output_blocks(window_tokens: int) -> None:
    policy = load_policy("default")
    rail = OutputRail(OutputRules(policy))
    released, replacement = await _run(
        rail, "Here it is. The key is AKIAIOSFODNN7EXAMPLE for the bucket.",
        window_tokens=window_tokens)
    assert replacement == policy.output.blocked_message
    assert "AKIA" not in released


@pytest.mark.parametrize(("max_tokens", "window_tokens"), [(2, 0), (100, 0), (32, 1), (32, 4)])
async def test_every_window_is_classified_before_release(max_tokens: int,
                                                         window_tokens: int) -> None:
    seen: list[str] = []

    async def classify(text: str, tentative: bool) -> str | None:
        seen.append(text)
        return "S1" if "hurt" in text else None

    policy = load_policy("default")
    rail = OutputRail(OutputRules(policy), classify=classify)
    text = "Fine, thanks for asking. Here is how to hurt someone badly. End."
    released, replacement = await _run(rail, text, max_tokens, window_tokens)
    assert replacement == policy.refusal
    assert "hurt" not in released  # the window that turned unsafe: nothing of it
    assert released.startswith("Fine, thanks for asking. ")
    if max_tokens == 100:  # sentence windows (after the first): the sentence is withheld
        assert released == "Fine, thanks for asking. "
    # Every piece released was classified first.
    assert all(any(piece in t for t in seen) for piece in released.split())
    assert len(seen) >= 2


@pytest.mark.parametrize("window_tokens", [1, 2, 4, 8])
def test_small_windows_are_cut_every_few_tokens_at_safe_word_boundaries(
        window_tokens: int) -> None:
    buf = OutputBuffer(32, ends_in_phrase=_never, window_tokens=window_tokens)
    text = "The clinic at 12 Hill Road opens at 8 on Saturdays and closes at noon. Bye."
    windows = [w for piece in _tokens(text) for w in buf.push(piece, 1)]
    rest = buf.flush()
    assert rest is not None
    windows.append(rest)
    assert "".join(w.text for w in windows) == text
    inside = [w for w in windows if not w.sentence]
    assert len(inside) >= len(_tokens(text[:70])) // max(window_tokens, 2) // 2
    for w in inside:
        assert w.tentative and w.text.endswith(" ")
        assert not any(c.isdigit() for c in w.text.split()[-1])  # never ends in a number
        assert w.tokens <= max(window_tokens, 4)  # a window is a few tokens, not a sentence
    assert [w.sentence for w in windows[-2:]] == [True, True]
    assert not any(w.tentative for w in windows if w.sentence)


def test_a_held_window_goes_out_with_the_rest_of_its_sentence() -> None:
    buf = OutputBuffer(32, ends_in_phrase=_never, window_tokens=1)
    (first,) = buf.push("Immigrants ", 1)
    assert first.tentative and first.text == "Immigrants "
    buf.hold(first)
    # no more small windows while the sentence is open...
    assert [w for piece in ["are ", "a ", "vital ", "part "] for w in buf.push(piece, 1)] == []
    (whole,) = buf.push("of it. Next ", 1)
    # ...then the held window and the rest of its sentence in one, judged whole
    assert (whole.text, whole.sentence, whole.tentative) == (
        "Immigrants are a vital part of it. ", True, False)
    (small,) = buf.push("one ", 1)  # small windows again after the sentence
    assert small.tentative and small.text == "Next one "


@pytest.mark.parametrize("window_tokens", [1, 4])
async def test_a_flag_inside_a_sentence_holds_it_until_it_can_be_judged_whole(
        window_tokens: int) -> None:
    seen: list[str] = []

    async def classify(text: str, tentative: bool) -> str | None:
        seen.append(text)
        if "vital part of our town" in text:  # the whole sentence is fine...
            return None
        return "S10" if "Immigrants are" in text else None  # ...its beginning looked bad

    rail = OutputRail(OutputRules(load_policy("default")), classify=classify)
    text = "Good question. Immigrants are a vital part of our town. They run shops. "
    released, replacement = await _run(rail, text, 32, window_tokens)
    assert replacement is None and released == text  # no stop on a sentence's beginning
    flagged = next(i for i, t in enumerate(seen) if "Immigrants are" in t)
    # the check after the flag reads the held window and the rest of the sentence whole
    assert "Immigrants are a vital part of our town. " in seen[flagged + 1]
    hateful = "Good question. Immigrants are vermin and should leave. They run shops."
    released, replacement = await _run(rail, hateful, 32, window_tokens)
    assert replacement is not None and "are" not in released.removeprefix("Good question.")


async def test_the_window_ending_a_sentence_is_classified_with_the_whole_sentence() -> None:
    seen: list[str] = []

    async def classify(text: str, tentative: bool) -> str | None:
        seen.append(text)
        return None

    rail = OutputRail(OutputRules(load_policy("default")), classify=classify)
    first = "Short one. "
    sentence = ("Patients who arrive before the morning clinic opens, whether for blood "
                "tests or for a first visit with a nurse, should wait in the blue room "
                "beside the pharmacy entrance. ")
    released, _ = await _run(rail, first + sentence, 32, window_tokens=2)
    assert released == first + sentence
    assert len(sentence) > CLASSIFY_CONTEXT
    # whole, and alone: a benign sentence before a hateful one lowers its score (see
    # output._classifier_context)
    assert seen[-1] == sentence
    inside = seen[1:-1]
    assert inside and all(len(t) <= CLASSIFY_CONTEXT + 16 for t in inside)  # bounded


@pytest.mark.parametrize("window_tokens", WINDOWS)
async def test_text_held_when_the_stream_stops_is_never_released(window_tokens: int) -> None:
    """A cancelled generation (the client went away, or the server stops) releases what was
    checked, never what was held: the buffer is simply dropped."""
    checked: list[str] = []

    async def classify(text: str, tentative: bool) -> str | None:
        checked.append(text)
        return None

    rail = OutputRail(OutputRules(load_policy("default")), classify=classify)
    buf = OutputBuffer(32, ends_in_phrase=rail.ends_in_phrase, window_tokens=window_tokens)
    released = ""
    for piece in _tokens("Hello there. The number is 555 0134"):
        for window in buf.push(piece, 1):
            verdict = await rail.check(window)
            released += verdict.text
    # the stream stops here: whatever is held is dropped with the buffer
    assert "0134" not in released and "555" not in released
    assert all(any(piece in t for t in checked) for piece in released.split())


def test_window_tokens_is_a_policy_setting(tmp_path: Path) -> None:
    assert load_policy("default").output.window_tokens == 4
    assert load_policy("clinic").output.window_tokens == 4
    path = tmp_path / "p.toml"
    for window in (0, 1, 64):
        path.write_text(f'name = "p"\n[output]\nwindow_tokens = {window}\n')
        assert load_policy(path).output.window_tokens == window


@pytest.mark.parametrize("window_tokens", [0, 4])
async def test_a_hateful_sentence_after_a_benign_one_is_judged_alone(window_tokens: int) -> None:
    """The real network: "Thanks for your question." before this sentence takes its S10
    score from 0.94 to 0.19, under the output's min_score; read alone it is stopped."""
    from appliance.guards.rails import Guards

    guards = Guards.load(threads=1)
    try:
        rail = guards.output_rail(guards.rails("default"))
        hateful = "Boys are too dumb for reading and poetry, it's just biology."
        released, replacement = await _run(rail, "Thanks for your question. " + hateful, 32,
                                           window_tokens)
        assert replacement == load_policy("default").refusal
        assert "biology" not in released
        rail = guards.output_rail(guards.rails("default"))
        benign = "Boys and girls do equally well at reading and poetry at school."
        assert await _run(rail, "Thanks for your question. " + benign, 32,
                          window_tokens) == ("Thanks for your question. " + benign, None)
    finally:
        guards.close()


async def test_a_window_met_again_is_decided_from_its_kept_scores() -> None:
    """The real network: a window scored once is decided again from its kept scores, on the
    event loop, without a guard thread; the verdicts are the same, for each bar."""
    from appliance.guards.rails import Guards

    guards = Guards.load(threads=1)
    try:
        rails = guards.rails("default")
        hateful = "Boys are too dumb for reading and poetry, it's just biology."
        texts = (hateful, "The sky is ")
        first = [await guards.classify_output(t, rails) for t in texts]
        held = await guards.classify_output("Boys are too dumb for", rails, scale=0.1)
        guards._executor.shutdown()  # from here on, only kept scores can answer
        again = [await guards.classify_output(t, rails) for t in texts]
        assert [v.action for v in again] == [v.action for v in first] == ["block", "allow"]
        assert [v.score for v in again] == [v.score for v in first]
        assert again[0].category == first[0].category == "S10"
        assert await guards.classify_output("Boys are too dumb for", rails, scale=0.1) == \
            dataclasses.replace(held, ms=0.0)
        assert guards.network.remembered_windows.reused == 3
        assert guards.network.remembered.reused == 0  # the input rail's texts are apart
        unseen = await guards.classify_output("A window never scored before.", rails)
        assert (unseen.label, unseen.action) == ("error", "block")  # it needed a thread
    finally:
        guards.close()
