"""The response cache core: keys, tiers, scopes, TTL, eviction, invalidation.

Real SQLite, a real hnswlib index and the real MiniLM encoder; an injected clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.cache.keys import GLOBAL_SCOPE, fingerprint, request_keys, scope_for
from appliance.cache.response import CacheConfig, CacheDirectives, CacheQuery, ResponseCache
from appliance.encoder.sentence import Encoder
from appliance.engine.chat import ChatMessage, ToolCall
from appliance.engine.types import SamplingParams
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex

GREEDY = SamplingParams(temperature=0.0)
FP = fingerprint("a" * 64, "{{ messages }}", "policy-1")


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_manifest()


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    cache: ResponseCache
    db: Database
    index: VectorIndex
    clock: Clock


@pytest.fixture
async def rig(tmp_path: Path, encoder: Encoder) -> AsyncIterator[Rig]:
    db = Database(tmp_path / "c.db")
    index = VectorIndex(db, "cache_entries", tmp_path / "vectors")
    clock = Clock()
    cache = ResponseCache(db, index, encoder, CacheConfig(ttl_s=100.0, max_entries=5),
                          clock=clock)
    yield Rig(cache, db, index, clock)
    await index.aclose()
    await db.aclose()


def query(text: str, *, scope: str = "key:1/user:alice", system: str = "Be brief.",
          fp: str = FP, directives: CacheDirectives | None = None,
          tokens: tuple[int, ...] | None = None) -> CacheQuery:
    messages = (ChatMessage("system", system), ChatMessage("user", text))
    toks = tokens if tokens is not None else tuple(ord(c) for c in system + text)
    exact, context, last = request_keys(fp, "chat", toks, GREEDY, 32, (), messages)
    return CacheQuery(scope=scope, exact_key=exact, context=context, fingerprint=fp,
                      kind="chat", text=last, directives=directives or CacheDirectives())


async def put(rig: Rig, q: CacheQuery, answer: str = "Paris.", reason: str = "stop"
              ) -> int | None:
    return await rig.cache.store(q, None, answer, reason, 10, 3)


async def test_exact_then_semantic_then_miss(rig: Rig) -> None:
    q = query("What is the capital of France?")
    assert (await rig.cache.lookup(q)).status == "miss"
    assert await put(rig, q) is not None
    hit = await rig.cache.lookup(q)
    assert hit.status == "hit-exact" and hit.entry is not None
    assert (hit.entry.text, hit.entry.finish_reason, hit.entry.completion_tokens) == \
        ("Paris.", "stop", 3)
    para = await rig.cache.lookup(query("What's the capital of France?"))
    assert para.status == "hit-semantic" and para.entry is not None
    assert para.entry.text == "Paris." and para.similarity is not None
    assert para.similarity >= 0.95
    assert (await rig.cache.lookup(query("What is the capital of Germany?"))).status == "miss"
    assert (await rig.cache.lookup(query("How do I bake bread?"))).status == "miss"


async def test_semantic_needs_the_same_system_prompt_and_fingerprint(rig: Rig) -> None:
    await put(rig, query("What is the capital of France?"))
    other_system = query("What's the capital of France?", system="Answer in French.")
    assert (await rig.cache.lookup(other_system)).status == "miss"
    other_model = query("What's the capital of France?",
                        fp=fingerprint("b" * 64, "{{ messages }}", "policy-1"))
    assert (await rig.cache.lookup(other_model)).status == "miss"


async def test_scopes_are_isolated_and_global_is_shared(rig: Rig) -> None:
    q = query("What is the capital of France?")
    await put(rig, q)
    for scope in ("key:1/user:bob", "key:2/user:alice", "key:2/user:", "key:1/user:"):
        for text in ("What is the capital of France?", "What's the capital of France?"):
            assert (await rig.cache.lookup(query(text, scope=scope))).status == "miss"
    faq = query("How many legs does a spider have?", scope=GLOBAL_SCOPE)
    await put(rig, faq, "Eight.")
    for scope in ("key:1/user:bob", "key:9/user:"):
        exact = await rig.cache.lookup(query("How many legs does a spider have?", scope=scope))
        assert exact.status == "hit-exact" and exact.entry is not None
        assert exact.entry.text == "Eight."
        sem = await rig.cache.lookup(query("How many legs do spiders have?", scope=scope))
        assert sem.status == "hit-semantic"


async def test_directives_and_unfinished_answers(rig: Rig) -> None:
    q = query("What is the capital of France?")
    assert await put(rig, q, reason="content_filter") is None
    assert await rig.cache.store(replace(q, directives=CacheDirectives(no_store=True)),
                                 None, "Paris.", "stop", 1, 1) is None
    assert await rig.cache.count() == 0
    await put(rig, q)
    bypass = replace(q, directives=CacheDirectives(no_cache=True))
    assert (await rig.cache.lookup(bypass)).status == "bypass"
    assert (await rig.cache.lookup(q)).status == "hit-exact"


async def test_restoring_the_same_request_replaces_the_entry(rig: Rig) -> None:
    q = query("What is the capital of France?")
    first = await put(rig, q, "Paris.")
    second = await put(rig, q, "Paris, France.")
    assert first != second and await rig.cache.count() == 1
    hit = await rig.cache.lookup(q)
    assert hit.entry is not None and hit.entry.text == "Paris, France."
    assert await rig.index.ids() == {q.scope: {second}}


async def test_ttl_expiry_and_sweep(rig: Rig) -> None:
    q = query("What is the capital of France?")
    await put(rig, q)
    rig.clock.now += 99.0
    assert (await rig.cache.lookup(q)).status == "hit-exact"
    rig.clock.now += 2.0
    assert (await rig.cache.lookup(q)).status == "miss"
    assert (await rig.cache.lookup(query("What's the capital of France?"))).status == "miss"
    report = await rig.cache.sweep()
    assert report.expired == 1 and await rig.cache.count() == 0
    assert await rig.index.ids() == {}


async def test_size_cap_evicts_least_recently_used(rig: Rig) -> None:
    qs = [query(f"Question number {i} about topic {i * 7}?") for i in range(5)]
    for q in qs:
        await put(rig, q)
        rig.clock.now += 1.0
    assert (await rig.cache.lookup(qs[0])).status == "hit-exact"  # 0 is used again
    await rig.cache.sweep()  # writes the hit
    await put(rig, query("A sixth question, about bread?"))
    assert await rig.cache.count() == 5
    assert (await rig.cache.lookup(qs[0])).status == "hit-exact"
    assert (await rig.cache.lookup(qs[1])).status == "miss"  # the least recently used
    in_db = await rig.db.read(lambda c: {r[0] for r in c.execute(
        "SELECT id FROM cache_entries").fetchall()})
    assert await rig.index.ids() == {qs[0].scope: in_db}


async def test_fingerprint_change_invalidates_everything(rig: Rig) -> None:
    await put(rig, query("What is the capital of France?"))
    await put(rig, query("How many legs does a spider have?", scope=GLOBAL_SCOPE))
    assert await rig.cache.adopt(FP) == 0
    new = fingerprint("a" * 64, "{{ messages }}", "policy-2")
    assert await rig.cache.adopt(new) == 2
    assert await rig.cache.count() == 0 and await rig.index.ids() == {}


def test_scope_names() -> None:
    assert scope_for(3, "alice") == "key:3/user:alice"
    assert scope_for(3, None) == scope_for(3, "") == "key:3/user:"
    assert scope_for(3, "alice", shared=True) == GLOBAL_SCOPE


_text = st.text(max_size=20)


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(_text, _text, st.lists(st.integers(0, 50), max_size=6),
                   st.sampled_from([0.0, 0.5]), st.integers(1, 4), st.text(max_size=3)),
       b=st.tuples(_text, _text, st.lists(st.integers(0, 50), max_size=6),
                   st.sampled_from([0.0, 0.5]), st.integers(1, 4), st.text(max_size=3)))
def test_request_keys_are_equal_exactly_when_requests_are(
        a: tuple[str, str, list[int], float, int, str],
        b: tuple[str, str, list[int], float, int, str]) -> None:
    def keys(x: tuple[str, str, list[int], float, int, str]) -> tuple[str, str, str | None]:
        system, user, tokens, temp, max_tokens, stop = x
        msgs = (ChatMessage("system", system),
                ChatMessage("user", user if user.strip() else "?"))  # no blank turn
        return request_keys(FP, "chat", tokens, SamplingParams(temperature=temp),
                            max_tokens, (stop,), msgs)

    ka, kb = keys(a), keys(b)
    same_request = (a[2], a[3], a[4], a[5]) == (b[2], b[3], b[4], b[5])
    assert (ka[0] == kb[0]) == same_request  # exact key: prompt tokens and sampling
    same_context = (a[0], a[3], a[4], a[5]) == (b[0], b[3], b[4], b[5])
    assert (ka[1] == kb[1]) == same_context  # context: all but the last user turn


def test_the_answers_shape_and_tool_history_are_in_the_keys() -> None:
    """Tools, tool choice and response format change what a prompt's answer may be: a
    request caches only under keys that include them (both tiers)."""
    toks = (1, 2, 3)
    ask = (ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Paris?"))
    plain = request_keys(FP, "chat", toks, GREEDY, 32, (), ask)
    assert plain == request_keys(FP, "chat", toks, GREEDY, 32, (), ask, "")
    json_mode = request_keys(FP, "chat", toks, GREEDY, 32, (), ask, '[null, ["json_object", ""]]')
    tools = request_keys(FP, "chat", toks, GREEDY, 32, (), ask, '[["tools"], null]')
    assert len({plain[0], json_mode[0], tools[0]}) == 3
    assert len({plain[1], json_mode[1], tools[1]}) == 3
    call = ToolCall("c1", "weather", '{"city":"Paris"}')
    after = (ChatMessage("user", "Weather in Paris?"),
             ChatMessage("assistant", "", tool_calls=(call,)),
             ChatMessage("tool", "sunny", tool_call_id="c1"), ChatMessage("user", "And now?"))
    other = (*after[:1], ChatMessage("assistant", "", tool_calls=(
        ToolCall("c1", "weather", '{"city":"Rome"}'),)), *after[2:])
    assert request_keys(FP, "chat", toks, GREEDY, 32, (), after)[1] != request_keys(
        FP, "chat", toks, GREEDY, 32, (), other)[1]


async def test_clear_deletes_every_entry_and_its_vectors(rig: Rig) -> None:
    await put(rig, query("What is the capital of France?"))
    await put(rig, query("What is the capital of Spain?", scope="key:2/user:bob"))
    assert await rig.cache.clear() == 2
    assert await rig.cache.count() == 0 and not any((await rig.index.ids()).values())
    assert await rig.cache.clear() == 0
