"""The response cache with structured outputs and tools: an answer is reused only for the
same schema and tools, and a cached answer with tool calls replays as tool calls (streamed
too). Guards are off here: the cache is what is tested (the guarded path is elsewhere)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import RunningServer, make_settings, start_server

pytestmark = pytest.mark.model

ASK = [{"role": "user", "content": "Name a colour and a number."}]
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a city",
    "parameters": {"type": "object", "additionalProperties": False,
                   "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}}


def _format(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "properties": props,
        "required": list(props)}}}


A = _format({"colour": {"enum": ["red", "blue"]}, "number": {"type": "integer"}})
B = _format({"number": {"type": "integer"}, "colour": {"type": "string", "maxLength": 12}})


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(make_settings(tmp_path_factory.mktemp("structured-cache"),
                                        parallel=2, ctx_size=1024, cache_enabled=True,
                                        guards=False))
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.base_url + "/v1", api_key="unused", max_retries=0,
                       timeout=900) as c:
        yield c


def _ask(client: openai.OpenAI, **kwargs: Any) -> tuple[str | None, Any]:
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=ASK, temperature=0, max_tokens=120, **kwargs)
    return raw.headers.get("x-cache"), raw.parse()


def test_an_answer_is_reused_only_for_the_same_schema(client: openai.OpenAI) -> None:
    status, first = _ask(client, response_format=A)
    assert status == "miss"
    status, again = _ask(client, response_format=A)
    assert status == "hit-exact"
    assert again.choices[0].message.content == first.choices[0].message.content
    status, other = _ask(client, response_format=B)
    assert status == "miss"
    assert list(json.loads(other.choices[0].message.content)) == ["number", "colour"]
    status, _ = _ask(client, response_format={"type": "json_object"})
    assert status == "miss"
    status, _ = _ask(client)
    assert status == "miss"


def test_a_cached_tool_call_replays_as_a_tool_call(client: openai.OpenAI) -> None:
    kwargs: Any = dict(tools=[TIME], tool_choice="required", parallel_tool_calls=False)
    status, first = _ask(client, **kwargs)
    assert status == "miss" and first.choices[0].finish_reason == "tool_calls"
    calls = [(c.function.name, c.function.arguments) for c in first.choices[0].message.tool_calls]
    status, again = _ask(client, **kwargs)
    assert status == "hit-exact" and again.choices[0].finish_reason == "tool_calls"
    assert again.choices[0].message.content is None
    assert [(c.function.name, c.function.arguments)
            for c in again.choices[0].message.tool_calls] == calls
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=ASK, temperature=0, max_tokens=120, stream=True, **kwargs)
    assert raw.headers.get("x-cache") == "hit-exact"
    chunks = [c for c in raw.parse() if c.choices]
    streamed: dict[int, list[str]] = {}
    for chunk in chunks:
        for d in chunk.choices[0].delta.tool_calls or []:
            entry = streamed.setdefault(d.index, ["", ""])
            entry[0] += (d.function.name or "") if d.function else ""
            entry[1] += (d.function.arguments or "") if d.function else ""
    assert [tuple(v) for _, v in sorted(streamed.items())] == calls
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    status, _ = _ask(client, tools=[TIME], tool_choice="none")
    assert status == "miss"  # same prompt tokens as no tools at all, other shape
