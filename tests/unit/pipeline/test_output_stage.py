"""The output stage on its own: the shipped policies and guard network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.guards.policy import POLICIES_DIR
from appliance.guards.readiness import GuardsState
from appliance.observability.trace import RequestTrace
from appliance.pipeline.job import Chunk, Generation, Usage
from appliance.pipeline.output_stage import OutputStage

WINDOWS = [0, 1, 4, 8]  # output windows in tokens (0: whole sentences)


def _trace() -> RequestTrace:
    return RequestTrace("t", "/v1/chat/completions")


def _policy(name: str, window: int, tmp: Path) -> str:
    """A preset with ``[output] window_tokens = window``, as a policy file."""
    path = tmp / f"{name}-w{window}.toml"
    text, n = re.subn(r"(?m)^window_tokens = [0-9]+", f"window_tokens = {window}",
                      (POLICIES_DIR / f"{name}.toml").read_text())
    assert n == 1
    path.write_text(text)
    return str(path)


async def _run(stage: OutputStage, guards: GuardsState, policy: str, pieces: list[str],
               trace: RequestTrace) -> list[Chunk]:
    guard = stage.start(guards.get().rails(policy), 10, trace)
    assert guard is not None
    out: list[Chunk] = []
    for n, piece in enumerate(pieces, 1):
        async for chunk in guard.feed(piece, n):
            out.append(chunk)
            if chunk.finish_reason is not None:
                return out
    async for chunk in guard.finish(Chunk("", "stop", Usage(10, len(pieces), 0))):
        out.append(chunk)
    return out


async def test_clean_text_is_released_whole_in_windows(guards: GuardsState) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    words = ["The", "clinic", "opens", "at", "eight", "on", "Saturdays.", "Parking", "is",
             "free", "for", "patients."]
    chunks = await _run(stage, guards, "default", [w + " " for w in words], trace)
    assert "".join(c.text for c in chunks) == " ".join(words) + " "
    assert chunks[-1].finish_reason == "stop" and len(chunks) > 2
    assert trace.first_token_s is not None and trace.holdback_s


@pytest.mark.parametrize("window", WINDOWS)
async def test_a_leaked_secret_ends_the_answer_before_it_is_released(
        guards: GuardsState, window: int, tmp_path: Path) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    pieces = ["Here ", "it ", "is. ", "The ", "key ", "is ", "AKIAIOSFODNN7EXAMPLE ", "for ",
              "the ", "bucket."]
    chunks = await _run(stage, guards, _policy("default", window, tmp_path), pieces, trace)
    released = "".join(c.text for c in chunks)
    assert "AKIA" not in released and chunks[-1].finish_reason == "content_filter"
    assert any(a.action == "block" for a in trace.guard_actions)


@pytest.mark.parametrize("window", WINDOWS)
async def test_a_dose_instruction_is_withheld_under_the_clinic_policy(
        guards: GuardsState, window: int, tmp_path: Path) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    pieces = [w + " " for w in ["You", "should", "take", "400", "mg", "every", "4", "hours."]]
    chunks = await _run(stage, guards, _policy("clinic", window, tmp_path), pieces, trace)
    assert "400" not in "".join(c.text for c in chunks[:-1])
    assert chunks[-1].finish_reason == "content_filter"


@pytest.mark.parametrize("window", WINDOWS)
async def test_a_dose_instruction_no_rule_names_is_stopped_by_the_network(
        guards: GuardsState, window: int, tmp_path: Path) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    clinic = guards.get().rails("clinic").policy
    safe = ["Thanks ", "for ", "asking. ", "Insulin ", "needs ", "vary. "]
    words = ["Increase", "your", "insulin", "dose", "to", "30", "units", "tonight."]
    pieces = safe + [w + " " for w in words]
    chunks = await _run(stage, guards, _policy("clinic", window, tmp_path), pieces, trace)
    released = "".join(c.text for c in chunks[:-1])
    assert released.startswith("".join(safe)) and "30" not in released  # the dose: never
    if window == 0:  # whole sentences: nothing of the instruction
        assert released == "".join(safe)
    else:  # small windows: at most the words before the network could judge them
        assert released in ("".join(safe) + "Increase your insulin dose "[:n]
                            for n in range(len("Increase your insulin dose ") + 1))
    assert chunks[-1].finish_reason == "content_filter"
    assert chunks[-1].text == clinic.output.directive_message
    assert not any(r.pattern.search("Increase your insulin dose to 30 units tonight.")
                   for r in clinic.output.rules)  # no phrase rule would have stopped it
    default = await _run(stage, guards, "default", pieces, _trace())
    assert default[-1].finish_reason == "stop"  # the default policy gives no directive rule


@pytest.mark.parametrize("window", WINDOWS)
async def test_a_hateful_window_ends_the_answer(guards: GuardsState, window: int,
                                                tmp_path: Path) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    safe = ["Here ", "is ", "my ", "view. "]
    words = ["Immigrants", "are", "vermin", "and", "should", "be", "driven", "out."]
    pieces = safe + [w + " " for w in words]
    chunks = await _run(stage, guards, _policy("default", window, tmp_path), pieces, trace)
    released = "".join(c.text for c in chunks[:-1])
    assert released in ("".join(safe), "".join(safe) + "Immigrants ")  # never "vermin"
    assert chunks[-1].finish_reason == "content_filter"
    assert any(a.action == "block" and a.label == "S10" for a in trace.guard_actions)


def test_the_whole_answer_check_and_guards_off(guards: GuardsState) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    rails = guards.get().rails("clinic")
    usage = Usage(3, 5, 0)
    ok = Generation("Doses depend on weight; ask your pharmacist.", "stop", usage)
    assert stage.check_whole(rails, ok, trace) is ok
    cut = stage.check_whole(rails, Generation("I think you have diabetes.", "stop", usage),
                            trace)
    assert cut.finish_reason == "content_filter" and "diabetes" not in cut.text
    assert stage.start(None, 3, trace) is None
    assert stage.check_whole(None, ok, trace) is ok


def test_what_the_cache_and_memory_may_keep(guards: GuardsState) -> None:
    rails = guards.get().rails("clinic")
    ok = "Doses depend on weight; ask your pharmacist."
    assert OutputStage.storable(rails, ok) == ok
    # a whole answer that breaks an output rule is kept nowhere (a non-streamed one is
    # replaced for the client; a streamed one was cut or is not kept either)
    assert OutputStage.storable(rails, "I think you have diabetes.") is None
    # PII that no single window saw whole is masked in what is kept
    assert OutputStage.storable(rails, "Write to jane.roe@example.org today.") == \
        "Write to [EMAIL] today."
    assert OutputStage.storable(None, "I think you have diabetes.") == \
        "I think you have diabetes."


async def test_logprobs_are_released_with_their_text_and_never_with_a_replacement(
        guards: GuardsState) -> None:
    from appliance.engine.types import TokenLogprob

    stage = OutputStage(guards, holdback_tokens=8)

    async def run(pieces: list[str]) -> list[Chunk]:
        guard = stage.start(guards.get().rails("default"), 10, _trace())
        assert guard is not None
        out: list[Chunk] = []
        for n, piece in enumerate(pieces, 1):
            entry = TokenLogprob(n, piece.encode(), -0.1 * n)
            async for chunk in guard.feed(piece, n, (entry,)):
                out.append(chunk)
                if chunk.finish_reason is not None:
                    return out
        async for chunk in guard.finish(Chunk("", "stop", Usage(10, len(pieces), 0))):
            out.append(chunk)
        return out

    pieces = ["The", " clinic", " opens", " at", " eight", ".", " Parking", " is", " free",
              " for", " patients", "."]
    chunks = await run(pieces)
    assert len(chunks) > 2
    assert [e.piece.decode() for c in chunks for e in c.logprobs] == pieces
    text, tokens = "", ""
    for c in chunks:  # a token comes with the chunk releasing the text it begins
        text += c.text
        tokens += "".join(e.piece.decode() for e in c.logprobs)
        assert tokens.startswith(text) or text.startswith(tokens)
    blocked = await run(["The", " key", " is", " AKIAIOSFODNN7EXAMPLE", " for", " it."])
    assert blocked[-1].finish_reason == "content_filter" and not blocked[-1].logprobs
    released = "".join(c.text for c in blocked[:-1])
    sent = [e.piece.decode() for c in blocked for e in c.logprobs]
    assert "AKIA" not in "".join(sent) and released.startswith("".join(sent[:-1]))


async def test_a_redacted_window_sends_no_logprobs(guards: GuardsState) -> None:
    from appliance.engine.types import TokenLogprob

    stage = OutputStage(guards, holdback_tokens=8)
    guard = stage.start(guards.get().rails("default"), 10, _trace())
    assert guard is not None
    pieces = ["Write", " to", " jane", ".", "doe", "@", "example", ".", "org", " today", "."]
    out: list[Chunk] = []
    for n, piece in enumerate(pieces, 1):
        async for chunk in guard.feed(piece, n, (TokenLogprob(n, piece.encode(), -0.5),)):
            out.append(chunk)
    async for chunk in guard.finish(Chunk("", "stop", Usage(10, len(pieces), 0))):
        out.append(chunk)
    text = "".join(c.text for c in out)
    assert "[EMAIL]" in text and "jane" not in text
    sent = "".join(e.piece.decode() for c in out for e in c.logprobs)
    assert "jane" not in sent and "example" not in sent


async def test_the_replacement_is_the_last_chunk_alone(guards: GuardsState) -> None:
    """Text released in the same step as a violation comes in a chunk of its own, so a
    client can tell the policy's message from the answer (its last delta)."""
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    rails = guards.get().rails("clinic")
    guard = stage.start(rails, 10, trace)
    assert guard is not None
    # (a first sentence far from every label: "Rest well tonight." scored 0.59 on the
    # directive label on an AVX-512 VNNI machine, and passed on an AVX2 one)
    final = Chunk("The clinic opens at eight. You should take 400 mg every 4 hours.", "stop",
                  Usage(10, 14, 0))
    chunks = [c async for c in guard.finish(final)]
    replacement = rails.policy.output.rules[0].replacement
    assert chunks[-1] == Chunk(replacement, "content_filter", final.usage)
    assert "".join(c.text for c in chunks[:-1]) == "The clinic opens at eight. "
    assert all(c.finish_reason is None for c in chunks[:-1])
