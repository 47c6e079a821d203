"""The answer's shape planned with the real SmolLM2 template, and an answer with tool calls
released through the real output rail."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from appliance.api.requests import ChatRequest, parse_chat
from appliance.engine.chat import ToolCall
from appliance.engine.tokenizer import Tokenizer
from appliance.errors import InvalidRequest
from appliance.guards.readiness import GuardsState
from appliance.observability.trace import RequestTrace
from appliance.pipeline.call_release import CallRelease, replay_calls
from appliance.pipeline.job import Chunk, Usage
from appliance.pipeline.output_stage import OutputStage
from appliance.pipeline.tool_stage import Grammars, plan_chat
from appliance.structured.toolcalls import CallFormat, hermes_markup

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}


def _req(**fields: Any) -> ChatRequest:
    return parse_chat({"model": "default",
                       "messages": [{"role": "user", "content": "Find cats"}], **fields})


async def _plan(tokenizer: Tokenizer, req: ChatRequest, grammars: Grammars | None = None
                ) -> Any:
    return await plan_chat(req, req.messages, tokenizer.template(), grammars or Grammars())


async def test_plans_for_each_tool_choice(tokenizer: Tokenizer) -> None:
    plain = await _plan(tokenizer, _req())
    assert (plain.grammar, plain.calls, plain.key, plain.tools) == (None, None, "", None)
    none = await _plan(tokenizer, _req(tools=[TOOL], tool_choice="none"))
    assert none.messages == _req().messages and none.calls is None and none.key
    auto = await _plan(tokenizer, _req(tools=[TOOL]))
    assert auto.grammar is None and auto.calls == CallFormat("hermes", frozenset({"lookup"}))
    assert auto.messages[0].role == "system" and "<tools>" in auto.messages[0].content
    assert auto.tools is None  # SmolLM2's template cannot render them: the generic format
    required = await _plan(tokenizer, _req(tools=[TOOL], tool_choice="required"))
    assert required.grammar is not None and "<tool_call>" in required.grammar
    assert none.key != auto.key != required.key
    fmt = await _plan(tokenizer, _req(response_format={"type": "json_object"}))
    assert fmt.grammar is not None and fmt.calls is None and fmt.key


async def test_each_distinct_schema_is_converted_once(tokenizer: Tokenizer) -> None:
    grammars = Grammars()
    body = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}}
    first = await _plan(tokenizer, _req(response_format=body), grammars)
    again = await _plan(tokenizer, _req(response_format=body), grammars)
    assert again.grammar is first.grammar  # the same object: not converted again
    body["json_schema"]["schema"]["properties"]["b"] = {"type": "string"}  # type: ignore[index]
    other = await _plan(tokenizer, _req(response_format=body), grammars)
    assert other.grammar != first.grammar


async def test_unenforceable_schemas_are_400s_only_where_enforced(tokenizer: Tokenizer) -> None:
    loose = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "pattern": "a"}}}}}
    auto = await _plan(tokenizer, _req(tools=[loose]))  # only read, never enforced: fine
    assert auto.grammar is None
    with pytest.raises(InvalidRequest) as err:
        await _plan(tokenizer, _req(tools=[loose], tool_choice="required"))
    assert err.value.param == "tools[0].function.parameters"
    assert err.value.code == "unsupported_schema" and "'pattern'" in err.value.message


def _trace() -> RequestTrace:
    return RequestTrace("t", "/v1/chat/completions")


async def _collect(chunks: AsyncIterator[Chunk]) -> list[Chunk]:
    return [c async for c in chunks]


async def test_calls_are_released_whole_and_the_answer_ends_with_tool_calls(
        guards: GuardsState) -> None:
    rails = guards.get().rails()
    trace = _trace()
    output = OutputStage(guards, holdback_tokens=8)
    release = CallRelease(CallFormat("hermes", frozenset({"lookup"})),
                          output.start(rails, 10, trace), rails, 10, trace)
    text = 'Let me look.\n<tool_call>{"name": "lookup", "arguments": {"q": "cats"}}</tool_call>'
    out: list[Chunk] = []
    for i in range(0, len(text), 7):
        out += await _collect(release.feed(text[i:i + 7], i // 7 + 1))
    out += await _collect(release.finish(Chunk("", "stop", Usage(10, 12, 0))))
    calls = [c for chunk in out for c in chunk.calls]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("lookup", {"q": "cats"})]
    assert "".join(c.text for c in out) == "Let me look."
    assert out[-1].finish_reason == "tool_calls" and out[-1].usage is not None
    assert any(a.guard == "output-rail" for a in trace.guard_checks)


async def test_a_secret_in_arguments_ends_the_answer_and_pii_is_redacted(
        guards: GuardsState) -> None:
    rails = guards.get().rails()
    trace = _trace()
    release = CallRelease(CallFormat("hermes", frozenset({"lookup"})), None, rails, 10, trace)
    leak = '<tool_call>{"name": "lookup", "arguments": {"q": "sk-proj-abcdefghijklmnopqrstuv1234"}}'
    out = await _collect(release.feed(leak + "</tool_call>", 5))
    assert [c.finish_reason for c in out] == ["content_filter"]
    assert not out[0].calls and "sk-proj" not in out[0].text
    assert any(a.action == "block" for a in trace.guard_actions)
    mail = CallRelease(CallFormat("hermes", frozenset({"lookup"})), None, rails, 10, _trace())
    out = await _collect(mail.feed('<tool_call>{"name": "lookup", "arguments": {"q": '
                                   '"mail ann@example.org"}}</tool_call>', 5))
    assert json.loads(out[0].calls[0].arguments) == {"q": "mail [EMAIL]"}


async def test_a_cached_answer_with_calls_reads_back_as_calls() -> None:
    stored = CallRelease(CallFormat("llama3", frozenset({"lookup"})), None, None, 3, _trace())
    first = await _collect(stored.feed('{"name": "lookup", "parameters": {"q": "x"}}', 4))
    first += await _collect(stored.finish(Chunk("", "stop", Usage(3, 4, 0))))
    calls = tuple(c for chunk in first for c in chunk.calls)
    text = hermes_markup(calls)

    async def cached() -> AsyncIterator[Chunk]:
        for i in range(0, len(text), 5):
            yield Chunk(text[i:i + 5])
        yield Chunk("", "tool_calls", Usage(3, 4, 3))

    again = await _collect(replay_calls(cached(), CallFormat("llama3", frozenset({"lookup"}))))
    assert [(c.name, c.arguments) for chunk in again for c in chunk.calls] == [
        (c.name, c.arguments) for c in calls]
    assert "".join(c.text for c in again) == "" and again[-1].finish_reason == "tool_calls"


def test_guards_off_calls_pass_unchecked() -> None:
    call = ToolCall("c", "lookup", '{"q": "sk-proj-abcdefghijklmnopqrstuv1234"}')
    assert OutputStage.check_call(None, call, _trace()) is call
