"""The output stage on its own: the shipped policies and content-safety head."""

from __future__ import annotations

from appliance.guards.readiness import GuardsState
from appliance.observability.trace import RequestTrace
from appliance.pipeline.job import Chunk, Generation, Usage
from appliance.pipeline.output_stage import OutputStage


def _trace() -> RequestTrace:
    return RequestTrace("t", "/v1/chat/completions")


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


async def test_a_leaked_secret_ends_the_answer_before_it_is_released(
        guards: GuardsState) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    pieces = ["Here ", "it ", "is. ", "The ", "key ", "is ", "AKIAIOSFODNN7EXAMPLE ", "for ",
              "the ", "bucket."]
    chunks = await _run(stage, guards, "default", pieces, trace)
    released = "".join(c.text for c in chunks)
    assert "AKIA" not in released and chunks[-1].finish_reason == "content_filter"
    assert any(a.action == "block" for a in trace.guard_actions)


async def test_a_dose_instruction_is_withheld_under_the_clinic_policy(
        guards: GuardsState) -> None:
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    pieces = [w + " " for w in ["You", "should", "take", "400", "mg", "every", "4", "hours."]]
    chunks = await _run(stage, guards, "clinic", pieces, trace)
    assert "400" not in "".join(c.text for c in chunks[:-1])
    assert chunks[-1].finish_reason == "content_filter"


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


async def test_the_replacement_is_the_last_chunk_alone(guards: GuardsState) -> None:
    """Text released in the same step as a violation comes in a chunk of its own, so a
    client can tell the policy's message from the answer (its last delta)."""
    stage, trace = OutputStage(guards, holdback_tokens=8), _trace()
    rails = guards.get().rails("clinic")
    guard = stage.start(rails, 10, trace)
    assert guard is not None
    final = Chunk("Rest well tonight. You should take 400 mg every 4 hours.", "stop",
                  Usage(10, 14, 0))
    chunks = [c async for c in guard.finish(final)]
    replacement = rails.policy.output.rules[0].replacement
    assert chunks[-1] == Chunk(replacement, "content_filter", final.usage)
    assert "".join(c.text for c in chunks[:-1]).startswith("Rest well")
    assert all(c.finish_reason is None for c in chunks[:-1])
