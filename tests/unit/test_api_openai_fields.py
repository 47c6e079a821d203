"""Parsing of the OpenAI fields of issue scope: n, logprobs, several prompts, token-id
embeddings and the Responses API request; each bad value a 400 naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.api.embeddings import parse_embeddings
from appliance.api.requests import parse_chat, parse_completion
from appliance.api.responses import parse_responses
from appliance.errors import InvalidRequest

MESSAGES = [{"role": "user", "content": "hi"}]


def _error(parse: Any, body: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as exc:
        parse(body)
    return exc.value


def test_chat_n_and_logprobs() -> None:
    plain = parse_chat({"model": "m", "messages": MESSAGES})
    assert (plain.options.n, plain.options.logprobs) == (1, None)
    asked = parse_chat({"model": "m", "messages": MESSAGES, "n": 3, "logprobs": True,
                        "top_logprobs": 20})
    assert (asked.options.n, asked.options.logprobs) == (3, 20)
    assert parse_chat({"model": "m", "messages": MESSAGES, "logprobs": True}).options.logprobs \
        == 0
    for extra, param in (({"n": 0}, "n"), ({"n": 1.5}, "n"), ({"n": 1000}, "n"),
                         ({"logprobs": 1}, "logprobs"),
                         ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                         ({"top_logprobs": 2}, "top_logprobs")):
        body = {"model": "m", "messages": MESSAGES, **extra}
        assert _error(parse_chat, body).param == param, extra


def test_chat_session_and_both_token_limits_are_checked() -> None:
    body = {"model": "m", "messages": MESSAGES}
    for session in (5, ["a"], "x" * 257, "\ud800"):
        assert _error(parse_chat, {**body, "session_id": session}).param == "session_id"
    parse_chat({**body, "session_id": "s-1"})
    parse_chat({**body, "session_id": ""})
    # The newer name wins, but the legacy one is not let through unchecked.
    both = parse_chat({**body, "max_completion_tokens": 2, "max_tokens": 9})
    assert both.options.max_tokens == 2
    for legacy in (True, 0, "9"):
        error = _error(parse_chat, {**body, "max_completion_tokens": 2, "max_tokens": legacy})
        assert error.param == "max_tokens", legacy


def test_completion_prompts_and_legacy_logprobs() -> None:
    one = parse_completion({"model": "m", "prompt": "a", "logprobs": 3})
    assert one.prompts == ("a",) and one.options.logprobs == 3
    assert parse_completion({"model": "m", "prompt": [1, 2]}).prompts == ((1, 2),)
    several = parse_completion({"model": "m", "prompt": ["a", [3, 4], "b"], "n": 2})
    assert several.prompts == ("a", (3, 4), "b") and several.options.n == 2
    for prompt in ([], {}, ["a", 5], ["a", []], [True], ["x"] * 33):
        assert _error(parse_completion, {"model": "m", "prompt": prompt}).param == "prompt"
    for prompt, where in (([-1], "'prompt'"), ([[3, 4], [-13178, -2415]], "prompt[1]")):
        error = _error(parse_completion, {"model": "m", "prompt": prompt})
        assert error.param == "prompt" and f"{where} holds a negative token id" in str(error)
    # An empty prompt gives the model nothing to continue (the schema says minLength 1).
    assert "'prompt' is empty" in str(_error(parse_completion, {"model": "m", "prompt": ""}))
    assert "prompt[1] must be a non-empty string or a non-empty array of token ids, not an " \
        "empty string" in str(_error(parse_completion, {"model": "m", "prompt": ["a", ""]}))
    assert _error(parse_completion, {"model": "m", "prompt": "a", "logprobs": 21}).param \
        == "logprobs"
    echo = _error(parse_completion, {"model": "m", "prompt": "a", "logprobs": 1, "echo": True})
    assert echo.param == "echo" and echo.code == "unsupported_parameter"


def test_embedding_inputs_are_texts_or_token_ids() -> None:
    def inputs(value: Any) -> tuple[Any, Any]:
        req = parse_embeddings({"model": "m", "input": value})
        return req.inputs, req.token_ids

    assert inputs("a") == (("a",), ())
    assert inputs(["a", "b"]) == (("a", "b"), ())
    assert inputs([101, 7, 102]) == ((), ((101, 7, 102),))
    assert inputs([[1], [2, 3]]) == ((), ((1,), (2, 3)))
    for bad in ([], [[]], [1, "a"], [[1], "a"], ["a", [1]], [[-1]], [True], [[1.5]], 3):
        assert _error(parse_embeddings, {"model": "m", "input": bad}).param == "input", bad
    for fmt in ("", False, "int8"):
        error = _error(parse_embeddings, {"model": "m", "input": "a", "encoding_format": fmt})
        assert error.param == "encoding_format", fmt


def test_responses_request_becomes_a_chat_request() -> None:
    req = parse_responses({
        "model": "default", "instructions": "Be brief.", "max_output_tokens": 30,
        "temperature": 0.2, "stream": True, "user": "u", "metadata": {"a": "b"},
        "store": True, "tools": [], "tool_choice": "auto", "reasoning": {"effort": None},
        "text": {"format": {"type": "text"}}, "truncation": "disabled",
        "input": [{"role": "developer", "content": "Use English."},
                  {"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "Hi "},
                               {"type": "input_text", "text": "there"}]},
                  {"role": "assistant", "content": [{"type": "output_text", "text": "Yo"}]}]})
    chat = req.chat
    assert [(m.role, m.content) for m in chat.messages] == [
        ("system", "Be brief."), ("system", "Use English."), ("user", "Hi there"),
        ("assistant", "Yo")]
    assert chat.options.max_tokens == 30 and chat.options.stream
    assert chat.options.sampling.temperature == 0.2 and chat.options.user == "u"
    assert (req.instructions, req.max_output_tokens, req.metadata) == ("Be brief.", 30,
                                                                        {"a": "b"})
    assert [(m.role, m.content) for m in parse_responses(
        {"model": "m", "input": "Hello"}).chat.messages] == [("user", "Hello")]


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"truncation": "auto"}, "truncation"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"instructions": 5}, "instructions"),
    ({"metadata": {"a": 1}}, "metadata"),
    ({"metadata": []}, "metadata"),
    ({"metadata": ""}, "metadata"),
    ({"temperature": 5}, "temperature"),
    ({"input": []}, "input"),
    ({"input": [5]}, "input[0]"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
     "input[0].content[0]"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
])
def test_responses_refusals_name_the_field(extra: dict[str, Any], param: str) -> None:
    assert _error(parse_responses, {"model": "m", "input": "x", **extra}).param == param
    missing = _error(parse_responses, {"model": "m"})
    assert (missing.param, missing.code) == ("input", "missing_required_parameter")
