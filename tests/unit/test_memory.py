"""Tiered memory core: isolation, recall, retention, pins and importance-weighted GC.

Real SQLite, a real hnswlib index and the real MiniLM encoder; an injected clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.encoder.sentence import Encoder
from appliance.engine.chat import ChatMessage
from appliance.memory.memories import DAY, MemoryConfig, MemoryStore, Recall, Recalled
from appliance.memory.prompt import MEMORY_HEADER, inject_memory
from appliance.store.db import Database
from appliance.store.rows import touch
from appliance.store.vectors import VectorIndex


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_manifest()


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    memory: MemoryStore
    db: Database
    index: VectorIndex
    clock: Clock


async def _rig(tmp_path: Path, encoder: Encoder, config: MemoryConfig) -> Rig:
    db = Database(tmp_path / "m.db")
    index = VectorIndex(db, "memories", tmp_path / "vectors")
    clock = Clock()
    return Rig(MemoryStore(db, index, encoder, config, clock=clock), db, index, clock)


@pytest.fixture
async def rig(tmp_path: Path, encoder: Encoder) -> AsyncIterator[Rig]:
    r = await _rig(tmp_path, encoder, MemoryConfig(max_entries=1000))
    yield r
    await r.index.aclose()
    await r.db.aclose()


async def test_recall_is_isolated_by_key_and_user(rig: Rig) -> None:
    m = rig.memory
    await m.add(1, "user", "Alice is allergic to penicillin.", user="alice")
    await m.add(1, "user", "Bob is allergic to peanuts.", user="bob")
    await m.add(2, "user", "Alice (key 2) is allergic to latex.", user="alice")
    await m.add(9, "global", "The clinic is closed on Sundays.")
    q = "What is Alice allergic to?"
    got = await m.recall(1, "alice", "", q)
    texts = [r.entry.content for r in got.related]
    assert "Alice is allergic to penicillin." in texts
    assert not any("peanuts" in t or "latex" in t for t in texts)
    got = await m.recall(2, "alice", "", q)
    assert [r.entry.content for r in got.related
            if "allergic" in r.entry.content] == ["Alice (key 2) is allergic to latex."]
    sunday = await m.recall(3, "carol", "", "Is the clinic open on Sunday?")
    assert [r.entry.content for r in sunday.related] == ["The clinic is closed on Sundays."]
    assert all(r.similarity is not None and r.similarity >= 0.35 for r in sunday.related)


async def test_session_turns_are_recent_verbatim_and_isolated(rig: Rig) -> None:
    m = rig.memory
    for i in range(12):
        await m.add_turns(1, "alice", "s1", [("user", f"question {i}"),
                                             ("assistant", f"answer {i}")])
    await m.add_turns(1, "bob", "s1", [("user", "bob's question")])
    await m.add_turns(2, "alice", "s1", [("user", "key two question")])
    got = await m.recall(1, "alice", "s1", "")
    assert [t.content for t in got.turns] == [
        f"{kind} {i}" for i in range(8, 12) for kind in ("question", "answer")]
    assert got.tokens <= m.config.inject_token_budget
    assert [t.content for t in (await m.recall(1, "bob", "s1", "")).turns] == [
        "bob's question"]
    assert (await m.recall(1, "alice", "s2", "")).turns == ()


async def test_budget_caps_count_and_tokens(tmp_path: Path, encoder: Encoder) -> None:
    r = await _rig(tmp_path, encoder, MemoryConfig(inject_max_entries=3,
                                                   inject_token_budget=40,
                                                   min_similarity=0.0))
    try:
        for i in range(10):
            await r.memory.add(1, "user", f"Fact {i}: the patient likes tea number {i}.",
                               user="u")
        got = await r.memory.recall(1, "u", "", "What does the patient like to drink?")
        assert 1 <= len(got.related) <= 3
        assert sum(x.entry.tokens for x in got.related) == got.tokens <= 40
    finally:
        await r.index.aclose()
        await r.db.aclose()


async def test_delete_and_forget_respect_owners(rig: Rig) -> None:
    m = rig.memory
    a = await m.add(1, "user", "Alice likes jazz.", user="alice")
    b = await m.add(1, "user", "Bob likes rock.", user="bob")
    s = await m.add(1, "session", "hello", user="alice", session_id="s")
    g = await m.add(9, "global", "Parking is free.")
    assert not await m.delete(2, a.id, "alice")  # another key
    assert not await m.delete(1, a.id, "bob")  # another user
    assert not await m.delete(1, g.id, "")  # global: not through delete
    assert await m.delete(1, a.id, "alice")
    assert await m.get(a.id) is None
    assert a.id not in (await rig.index.ids()).get("user:1/alice", set())
    assert await m.forget_user(2, "bob") == 0
    assert await m.forget_user(1, "alice") == 1  # the session turn
    assert await m.get(s.id) is None and await m.get(b.id) is not None
    assert await m.delete_global(9, g.id) and await m.get(g.id) is None


async def test_retention_and_pins(rig: Rig) -> None:
    m, clock = rig.memory, rig.clock
    turn = await m.add(1, "session", "hi", user="u", session_id="s")
    note = await m.add(1, "user", "Prefers mornings.", user="u")
    pinned = await m.add(1, "user", "Blood type O negative.", user="u", pinned=True)
    glob = await m.add(9, "global", "Closed on Sundays.")
    clock.now += DAY + 1
    report = await m.gc()
    assert report.expired == 1 and await m.get(turn.id) is None
    clock.now += 60 * DAY
    assert (await m.recall(1, "u", "", "When does the user prefer appointments?")).related
    await m.gc()  # writes the use: the note's 90 days start again
    clock.now += 80 * DAY
    assert (await m.gc()).expired == 0
    clock.now += 11 * DAY
    assert (await m.gc()).expired == 1
    assert await m.get(note.id) is None
    assert await m.get(pinned.id) is not None and await m.get(glob.id) is not None
    assert await rig.index.ids() == {"user:1/u": {pinned.id}, "global": {glob.id}}
    unpinned = await m.set_pinned(1, pinned.id, "u", False)
    assert unpinned is not None and not unpinned.pinned
    assert await m.set_pinned(1, pinned.id, "other", True) is None


async def test_gc_keeps_the_size_budget_by_importance(tmp_path: Path, encoder: Encoder
                                                      ) -> None:
    r = await _rig(tmp_path, encoder, MemoryConfig(max_entries=4, min_similarity=0.0))
    m, clock = r.memory, r.clock
    try:
        old = await m.add(1, "user", "Old and unused.", user="u")
        clock.now += DAY
        used = await m.add(1, "user", "Old but used a lot.", user="u")
        pin = await m.add(1, "user", "Old and pinned.", user="u", pinned=True)
        clock.now += 5 * DAY
        fresh = [await m.add(1, "user", f"Fresh note {i}.", user="u") for i in range(3)]
        for _ in range(20):
            touch(m._touched, used.id, clock.now - DAY)
        report = await m.gc()
        assert report.evicted == 2 and await m.count() == 4
        assert await m.get(old.id) is None  # least recent, never used
        assert await m.get(pin.id) is not None and await m.get(used.id) is not None
        kept = [await m.get(f.id) is not None for f in fresh]
        assert kept == [False, True, True]  # equal importance: the oldest id goes
        in_db = await r.db.read(lambda c: {x[0] for x in c.execute(
            "SELECT id FROM memories").fetchall()})
        assert set().union(*(await r.index.ids()).values()) == in_db
    finally:
        await r.index.aclose()
        await r.db.aclose()


def test_inject_memory_places_notes_and_turns() -> None:
    from appliance.memory.memories import MemoryEntry

    def e(i: int, role: str, content: str) -> MemoryEntry:
        return MemoryEntry(i, "session", "u", "s", "turn", role, content, 3, False, 0, 0, 0)

    msgs = (ChatMessage("system", "Be brief."), ChatMessage("user", "And tomorrow?"))
    recall = Recall(turns=(e(1, "user", "Weather today?"), e(2, "assistant", "Sunny.")),
                    related=(Recalled(e(3, "note", "Lives in Oslo."), 0.6),), tokens=9)
    injection = inject_memory(msgs, recall)
    out = injection.messages
    assert injection.added == ("Weather today?", "Sunny.", MEMORY_HEADER + "\n- Lives in Oslo.")
    assert [m.role for m in out] == ["system", "user", "assistant", "user"]
    assert out[0].content.startswith("Be brief.") and MEMORY_HEADER in out[0].content
    assert "- Lives in Oslo." in out[0].content
    assert out[1].content == "Weather today?" and out[-1].content == "And tomorrow?"
    # Turns the client already sent are not repeated; nothing recalled: unchanged.
    again = inject_memory((ChatMessage("user", "Weather today?"),
                           ChatMessage("assistant", "Sunny."),
                           ChatMessage("user", "And tomorrow?")),
                          Recall(recall.turns, (), 6)).messages
    assert [m.content for m in again] == ["Weather today?", "Sunny.", "And tomorrow?"]
    assert inject_memory(msgs, Recall((), (), 0)).messages is msgs


async def test_forget_a_user_under_every_key_is_audited(rig: Rig) -> None:
    from appliance.observability.audit import Audit

    audit = Audit(rig.db)
    m = MemoryStore(rig.db, rig.index, rig.memory.encoder, audit=audit)
    mine = await m.add(1, "user", "Alice likes jazz.", user="alice")
    theirs = await m.add(2, "session", "hello", user="alice", session_id="s")
    bob = await m.add(2, "user", "Bob likes rock.", user="bob")
    g = await m.add(9, "global", "Parking is free.")
    assert await m.forget_user(None, "alice", actor_id=7) == 2
    assert await m.get(mine.id) is None and await m.get(theirs.id) is None
    assert await m.get(bob.id) is not None and await m.get(g.id) is not None
    assert mine.id not in (await rig.index.ids()).get("user:1/alice", set())
    record = (await audit.recent(1))[0]
    assert (record.event, record.actor) == ("memory.forget_user", "key:7")
    assert record.detail == {"user": "alice", "deleted": 2, "all_keys": True}
