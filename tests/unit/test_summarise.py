"""Hierarchical session compression: digests replace older turns, facts replace digests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.encoder.sentence import Encoder
from appliance.engine.chat import ChatMessage
from appliance.memory.memories import MemoryConfig, MemoryStore
from appliance.memory.prompt import SUMMARY_HEADER, inject_memory
from appliance.memory.summarise import (
    DIGEST_INSTRUCTION,
    FACTS_INSTRUCTION,
    SessionSummariser,
    SummaryConfig,
)
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_manifest()


@pytest.fixture
async def memory(tmp_path: Path, encoder: Encoder) -> AsyncIterator[MemoryStore]:
    db = Database(tmp_path / "s.db")
    index = VectorIndex(db, "memories", tmp_path / "vectors")
    yield MemoryStore(db, index, encoder, MemoryConfig(inject_token_budget=2000,
                                                       inject_max_entries=20))
    await index.aclose()
    await db.aclose()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, instruction: str, text: str) -> str:
        self.calls.append((instruction, text))
        n = len(self.calls)
        return f"digest {n}" if instruction == DIGEST_INSTRUCTION else f"- fact list {n}"


async def _talk(memory: MemoryStore, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await memory.add_turns(1, "u", "s", [
            ("user", f"Turn {i}: here is a longer message about topic {i} " * 3),
            ("assistant", f"Reply {i}: noted, topic {i} is understood and recorded.")])


async def test_long_sessions_are_digested_then_condensed_to_facts(memory: MemoryStore
                                                                  ) -> None:
    model = Recorder()
    summariser = SessionSummariser(memory, model, SummaryConfig(
        threshold_tokens=200, keep_recent=4, max_digests=2))
    await _talk(memory, 2)
    assert (await summariser.run_once()).sessions == 0  # under the threshold
    await _talk(memory, 6, start=2)
    report = await summariser.run_once()
    assert (report.sessions, report.digests, report.facts) == (1, 1, 0)
    instruction, text = model.calls[0]
    assert instruction == DIGEST_INSTRUCTION and text.startswith("user: Turn 0:")
    assert "Reply 5" in text and "Turn 6" not in text  # the 4 newest turns stay verbatim
    rows = await memory.entries(1, "session", user="u", session_id="s")
    assert [r.kind for r in rows] == ["turn"] * 4 + ["digest"]
    for i in range(3):  # more conversation, more digests, then one fact list
        await _talk(memory, 6, start=10 + 10 * i)
        await summariser.run_once()
    rows = await memory.entries(1, "session", user="u", session_id="s")
    kinds = [r.kind for r in rows]
    assert kinds.count("facts") == 1 and kinds.count("digest") <= 2 and \
        kinds.count("turn") == 4
    assert any(call[0] == FACTS_INSTRUCTION for call in model.calls)
    # Other sessions and users are untouched.
    assert await memory.long_sessions(200) == []
    recall = await memory.recall(1, "u", "s", "What did we decide?")
    assert recall.summaries[0].kind == "facts"
    assert len(recall.turns) == 4
    injected = inject_memory((ChatMessage("user", "What did we decide?"),), recall)
    assert SUMMARY_HEADER in injected.messages[0].content
    assert injected.messages[0].role == "system"


async def test_a_failing_model_leaves_the_session_verbatim(memory: MemoryStore) -> None:
    async def broken(instruction: str, text: str) -> str:
        raise RuntimeError("model unavailable")

    await _talk(memory, 8)
    before = await memory.entries(1, "session", user="u", session_id="s")
    report = await SessionSummariser(memory, broken, SummaryConfig(threshold_tokens=100)
                                     ).run_once()
    assert (report.sessions, report.digests) == (1, 0)
    assert await memory.entries(1, "session", user="u", session_id="s") == before
