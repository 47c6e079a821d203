"""/v1/memory and memory injection over HTTP: two keys, two users, strict isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import openai
import pytest

from appliance.admission.keys import KeyStore, Scope
from appliance.store.db import Database
from tests.conftest import RunningServer, make_settings, start_server

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RunningServer, dict[str, str]]]:
    settings = make_settings(tmp_path_factory.mktemp("memory"), parallel=2, ctx_size=1024,
                             cache_enabled=False, memory_summary_tokens=80)
    with Database(settings.database) as db:
        store = KeyStore(db)
        secrets = {"a": store.create_sync("a").secret, "b": store.create_sync("b").secret,
                   "admin": store.create_sync("root", scopes=[Scope.ADMIN]).secret,
                   "chat-only": store.create_sync("chat-only", scopes=[Scope.CHAT]).secret}
    srv = start_server(settings)
    yield srv, secrets
    srv.close()


class Api:
    def __init__(self, http: aiohttp.ClientSession, srv: RunningServer,
                 keys: dict[str, str]) -> None:
        self.http, self.base, self.keys = http, srv.base_url, keys

    async def call(self, who: str, method: str, path: str, body: Any = None,
                   **params: str) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, params=params,
                                     headers={"Authorization": f"Bearer {self.keys[who]}"}
                                     ) as r:
            return r.status, await r.json()


@pytest.fixture
async def api(keyed: tuple[RunningServer, dict[str, str]]) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, *keyed)


async def test_memory_crud_is_isolated_by_key_and_user(api: Api) -> None:
    status, alice = await api.call("a", "POST", "/v1/memory", {
        "scope": "user", "user": "alice", "content": "Alice is allergic to penicillin."})
    assert status == 200 and alice["object"] == "memory" and alice["pinned"] is False
    assert (alice["scope"], alice["user"]) == ("user", "alice") and alice["id"] > 0
    _, bob = await api.call("a", "POST", "/v1/memory", {
        "scope": "user", "user": "bob", "content": "Bob is allergic to peanuts."})
    _, other = await api.call("b", "POST", "/v1/memory", {
        "scope": "user", "user": "alice", "content": "Key b's Alice likes tea."})
    _, session = await api.call("a", "POST", "/v1/memory", {
        "scope": "session", "user": "alice", "session_id": "s1", "content": "Hello there."})

    async def listed(who: str, **q: str) -> list[str]:
        status, body = await api.call(who, "GET", "/v1/memory", **q)
        assert status == 200 and body["object"] == "list"
        return [e["content"] for e in body["data"]]

    assert await listed("a", scope="user", user="alice") == ["Alice is allergic to penicillin."]
    assert await listed("a", scope="user", user="bob") == ["Bob is allergic to peanuts."]
    assert await listed("b", scope="user", user="alice") == ["Key b's Alice likes tea."]
    assert await listed("b", scope="user", user="bob") == []
    assert await listed("a", scope="session", user="alice", session_id="s1") == [
        "Hello there."]
    assert await listed("a", scope="session", user="bob", session_id="s1") == []
    assert await listed("b", scope="session", user="alice", session_id="s1") == []
    # Deleting or pinning another key's or user's entry: 404, and it is still there.
    for who, user, entry in (("b", "alice", alice), ("a", "bob", alice), ("a", "", alice),
                             ("a", "alice", other)):
        status, body = await api.call(who, "DELETE", f"/v1/memory/{entry['id']}", user=user)
        assert status == 404 and body["error"]["code"] == "not_found", (who, user)
        status, _ = await api.call(who, "PATCH", f"/v1/memory/{entry['id']}",
                                   {"pinned": True, "user": user})
        assert status == 404, (who, user)
    assert await listed("a", scope="user", user="alice") == ["Alice is allergic to penicillin."]
    status, pinned = await api.call("a", "PATCH", f"/v1/memory/{alice['id']}",
                                    {"pinned": True, "user": "alice"})
    assert status == 200 and pinned["pinned"] is True
    # Forgetting alice under key a removes her user and session memories, nobody else's.
    status, body = await api.call("a", "DELETE", "/v1/memory", user="alice")
    assert status == 200 and body["deleted"] == 2
    assert await listed("a", scope="user", user="alice") == []
    assert await listed("a", scope="session", user="alice", session_id="s1") == []
    assert await listed("a", scope="user", user="bob") == ["Bob is allergic to peanuts."]
    assert await listed("b", scope="user", user="alice") == ["Key b's Alice likes tea."]
    status, body = await api.call("a", "DELETE", f"/v1/memory/{bob['id']}", user="bob")
    assert status == 200 and body == {"id": bob["id"], "object": "memory.deleted",
                                      "deleted": True}
    assert session["id"] > 0


async def test_global_memory_is_admin_only(api: Api) -> None:
    status, body = await api.call("a", "POST", "/v1/memory", {
        "scope": "global", "content": "The clinic is closed on Sundays."})
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    status, entry = await api.call("admin", "POST", "/v1/memory", {
        "scope": "global", "content": "The clinic is closed on Sundays."})
    assert status == 200
    _, listed = await api.call("b", "GET", "/v1/memory", scope="global")
    assert "The clinic is closed on Sundays." in [e["content"] for e in listed["data"]]
    assert (await api.call("a", "DELETE", f"/v1/memory/{entry['id']}"))[0] == 404
    assert (await api.call("admin", "DELETE", f"/v1/memory/{entry['id']}"))[0] == 200


@pytest.mark.parametrize(("method", "path", "body", "params", "param"), [
    ("POST", "/v1/memory", {"scope": "team", "content": "x"}, {}, "scope"),
    ("POST", "/v1/memory", {"scope": "user", "content": "x"}, {}, "user"),
    ("POST", "/v1/memory", {"scope": "session", "content": "x"}, {}, "session_id"),
    ("POST", "/v1/memory", {"scope": "user", "user": "u", "content": ""}, {}, "content"),
    ("POST", "/v1/memory", {"scope": "user", "user": "u", "content": "x", "pinned": "yes"},
     {}, "pinned"),
    ("GET", "/v1/memory", None, {"scope": "user"}, "user"),
    ("DELETE", "/v1/memory", None, {}, "user"),
    ("DELETE", "/v1/memory/abc", None, {}, "id"),
    ("PATCH", "/v1/memory/1", {"user": "u"}, {}, "pinned"),
])
async def test_bad_memory_requests_get_400(api: Api, method: str, path: str, body: Any,
                                           params: dict[str, str], param: str) -> None:
    status, got = await api.call("a", method, path, body, **params)
    assert status == 400 and got["error"]["param"] == param


async def test_memory_needs_the_memory_scope(api: Api) -> None:
    status, got = await api.call("chat-only", "GET", "/v1/memory", scope="global")
    assert status == 403 and got["error"]["code"] == "insufficient_scope"


def _chat(srv: RunningServer, key: str, text: str, **extra: Any) -> Any:
    with openai.OpenAI(base_url=srv.base_url + "/v1", api_key=key, max_retries=0) as c:
        return c.chat.completions.create(
            model="default", messages=[{"role": "user", "content": text}], max_tokens=8,
            temperature=0, **extra)


async def test_memory_is_injected_and_counted(api: Api,
                                              keyed: tuple[RunningServer, dict[str, str]]
                                              ) -> None:
    import asyncio

    srv, keys = keyed
    await api.call("a", "POST", "/v1/memory", {
        "scope": "user", "user": "carol", "content": "Carol's favourite colour is green."})
    plain = await asyncio.to_thread(_chat, srv, keys["a"], "What is my favourite colour?")
    with_memory = await asyncio.to_thread(_chat, srv, keys["a"],
                                          "What is my favourite colour?", user="carol")
    other_key = await asyncio.to_thread(_chat, srv, keys["b"],
                                        "What is my favourite colour?", user="carol")
    assert plain.usage.model_extra["memory_tokens"] == 0
    added = with_memory.usage.model_extra["memory_tokens"]
    assert added > 10  # the note's header and the one memory
    assert with_memory.usage.prompt_tokens > plain.usage.prompt_tokens
    assert other_key.usage.model_extra["memory_tokens"] == 0
    assert other_key.usage.prompt_tokens == plain.usage.prompt_tokens


async def test_session_turns_are_remembered_and_injected(
        api: Api, keyed: tuple[RunningServer, dict[str, str]]) -> None:
    import asyncio

    srv, keys = keyed
    first = await asyncio.to_thread(_chat, srv, keys["a"], "My name is Dana.", user="dana",
                                    extra_headers={"X-Session-Id": "visit-1"})
    assert first.usage.model_extra["memory_tokens"] == 0
    status, body = await api.call("a", "GET", "/v1/memory", scope="session", user="dana",
                                  session_id="visit-1")
    assert status == 200
    assert [(e["role"], e["content"]) for e in body["data"]] == [
        ("user", "My name is Dana."), ("assistant", first.choices[0].message.content)]
    second = await asyncio.to_thread(_chat, srv, keys["a"], "What is my name?",
                                     user="dana", extra_body={"session_id": "visit-1"})
    assert second.usage.model_extra["memory_tokens"] >= 4  # "My name is Dana." at least
    for key, user, session in (("b", "dana", "visit-1"), ("a", "erin", "visit-1"),
                               ("a", "dana", "visit-2")):
        other = await asyncio.to_thread(_chat, srv, keys[key], "What is my name?", user=user,
                                        extra_headers={"X-Session-Id": session})
        assert other.usage.model_extra["memory_tokens"] == 0, (key, user, session)


async def test_long_session_is_summarised_by_the_model(
        api: Api, keyed: tuple[RunningServer, dict[str, str]]) -> None:
    import asyncio

    from appliance.web.state import SUMMARISER

    srv, keys = keyed
    facts = ["My dog is called Rex and he is seven years old.",
             "I live in Bergen, a rainy city on the west coast of Norway.",
             "My appointment is on Tuesday at ten in the morning with Dr. Olsen.",
             "I am allergic to penicillin and I take vitamin D every day."]
    for text in facts:
        await asyncio.to_thread(_chat, srv, keys["a"], text, user="finn",
                                extra_headers={"X-Session-Id": "long"})
    report = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
        srv.app[SUMMARISER].run_once(), srv.loop))
    assert report.digests >= 1
    status, body = await api.call("a", "GET", "/v1/memory", scope="session", user="finn",
                                  session_id="long")
    assert status == 200
    kinds = [e["kind"] for e in body["data"]]
    assert kinds.count("turn") == 4 and kinds.count("digest") == 1  # 4 newest turns kept
    digest = next(e for e in body["data"] if e["kind"] == "digest")
    assert digest["content"].strip() and digest["role"] == "summary"
    nxt = await asyncio.to_thread(_chat, srv, keys["a"], "What is my dog called?",
                                  user="finn", extra_headers={"X-Session-Id": "long"})
    assert nxt.usage.model_extra["memory_tokens"] > 10
