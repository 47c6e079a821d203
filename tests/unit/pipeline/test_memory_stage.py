"""The memory stage on its own: real SQLite and vector index, the real encoder and model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.admission.gate import ANONYMOUS
from appliance.encoder.sentence import Encoder
from appliance.engine.chat import ChatMessage
from appliance.engine.tokenizer import Tokenizer
from appliance.memory.memories import MemoryStore
from appliance.memory.prompt import MEMORY_HEADER
from appliance.pipeline.memory_stage import MemoryStage
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex


@pytest.fixture
async def memory(db: Database, tmp_path: Path, encoder: Encoder) -> AsyncIterator[MemoryStore]:
    index = VectorIndex(db, "memories", tmp_path / "vectors")
    await asyncio.to_thread(index.open)
    yield MemoryStore(db, index, encoder)
    await index.aclose()


QUESTION = (ChatMessage("system", "You are the clinic's assistant."),
            ChatMessage("user", "Which antibiotic should I avoid?"))


async def test_nothing_is_injected_without_a_user_or_a_session(
        memory: MemoryStore, tokenizer: Tokenizer) -> None:
    stage = MemoryStage(memory, tokenizer)
    injected = await stage.inject(QUESTION, ANONYMOUS, None, None)
    assert injected.messages is QUESTION and injected.context is None and injected.tokens == 0


async def test_a_users_memory_goes_into_the_system_message_and_is_counted(
        memory: MemoryStore, tokenizer: Tokenizer) -> None:
    await memory.add(ANONYMOUS.id, "user", "The patient is allergic to penicillin.",
                     user="alice")
    stage = MemoryStage(memory, tokenizer)
    injected = await stage.inject(QUESTION, ANONYMOUS, "alice", None)
    system = injected.messages[0].content
    assert MEMORY_HEADER in system and "allergic to penicillin" in system
    assert injected.context is not None and injected.context.user == "alice"
    added = system.removeprefix(QUESTION[0].content).strip()
    assert injected.tokens >= len(tokenizer.tokenize_text(added, add_special=False)) - 2
    assert injected.tokens > 5


async def test_an_exchange_is_remembered_as_session_turns_and_recalled_next_time(
        memory: MemoryStore, tokenizer: Tokenizer) -> None:
    stage = MemoryStage(memory, tokenizer)
    first = await stage.inject(QUESTION, ANONYMOUS, None, "s1")
    await stage.remember(first.context, "Avoid penicillin: the record shows an allergy.")
    follow_up = (QUESTION[0], ChatMessage("user", "And what can I take instead?"))
    second = await stage.inject(follow_up, ANONYMOUS, None, "s1")
    contents = [m.content for m in second.messages]
    assert "Which antibiotic should I avoid?" in contents
    assert "Avoid penicillin: the record shows an allergy." in contents
    assert contents[-1] == "And what can I take instead?" and second.tokens > 0
    await stage.remember(None, "nothing to remember without a context")
    other = await stage.inject(follow_up, ANONYMOUS, None, "s2")
    assert other.tokens == 0
