"""The OpenAI API on the wire to an upstream: SSE framing, request bodies, chunks, and
errors mapped into the appliance's tree without the upstream's words."""

from __future__ import annotations

import pytest

from appliance.engine.chat import ChatMessage
from appliance.engine.types import GenerationRequest, SamplingParams, TextPrompt
from appliance.errors import (
    BadGateway,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
)
from appliance.upstream.sse import SseParser
from appliance.upstream.wire import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    error_for,
    path_of,
    read_chunk,
    request_body,
)


def test_sse_events_end_at_blank_lines_and_join_data_lines() -> None:
    parser = SseParser()
    lines = [": comment", "event: message", "data: {\"a\":", "data: 1}", "", "", "data:[DONE]",
             ""]
    assert [d for line in lines if (d := parser.feed(line)) is not None] == [
        '{"a":\n1}', "[DONE]"]
    parser.feed("data: tail")
    assert parser.end() == "tail" and parser.end() is None


def test_a_chat_body_carries_messages_and_only_the_sampling_that_was_set() -> None:
    request = GenerationRequest(
        prompt_tokens=(), max_tokens=32, stop=("\n\n",), text=TextPrompt((
            ChatMessage("system", "Be brief."), ChatMessage("user", "Hi", name="ann"))),
        model="big", sampling=SamplingParams(temperature=0.0, seed=7, top_k=40))
    body = request_body(request)
    assert path_of(request) == CHAT_PATH
    assert body == {
        "model": "big", "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": 32, "temperature": 0.0, "top_p": 1.0, "seed": 7, "top_k": 40,
        "stop": ["\n\n"],
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hi", "name": "ann"}]}


def test_a_completion_body_carries_the_prompt_and_ignore_eos() -> None:
    request = GenerationRequest(prompt_tokens=(), max_tokens=8, ignore_eos=True,
                                text=TextPrompt(text="Once upon"), model="m")
    body = request_body(request)
    assert path_of(request) == COMPLETIONS_PATH
    assert body["prompt"] == "Once upon" and body["ignore_eos"] is True
    assert "messages" not in body


def test_chunks_give_text_finish_and_usage() -> None:
    got = read_chunk({"choices": [{"delta": {"content": "Hel"}, "finish_reason": None}]}, True)
    assert (got.text, got.finish_reason, got.usage) == ("Hel", None, None)
    got = read_chunk({"choices": [{"text": "lo", "finish_reason": "length"}]}, False)
    assert (got.text, got.finish_reason) == ("lo", "length")
    got = read_chunk({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                               "prompt_tokens_details": {"cached_tokens": 4}}},
                     True)
    assert got.usage is not None and (got.usage.prompt_tokens, got.usage.completion_tokens,
                                      got.usage.cached_tokens) == (9, 3, 4)
    with pytest.raises(BadGateway):
        read_chunk({"error": {"message": "CUDA out of memory at 10.0.0.5"}}, True)
    with pytest.raises(BadGateway):
        read_chunk([1, 2], True)


@pytest.mark.parametrize(("status", "body", "error", "code"), [
    (400, {"error": {"type": "exceed_context_size_error", "message": "n_ctx 4096 at /srv"}},
     ContextLengthExceeded, "context_length_exceeded"),
    (400, {"error": {"message": "bad top_k near /etc/secret"}}, InvalidRequest, None),
    (429, None, Overloaded, "server_overloaded"),
    (503, None, Overloaded, "server_overloaded"),
    (401, {"error": {"message": "key sk-123 invalid"}}, BadGateway, "bad_gateway"),
    (404, None, BadGateway, "bad_gateway"),
    (500, {"error": {"message": "Traceback ... 10.0.0.5"}}, BadGateway, "bad_gateway"),
])
def test_upstream_errors_map_into_the_tree_without_its_words(
        status: int, body: object, error: type, code: str | None) -> None:
    err = error_for(status, body, "7")
    assert isinstance(err, error)
    assert err.code == code
    text = str(err.body())
    for leak in ("/srv", "/etc", "sk-123", "10.0.0.5", "Traceback", "4096"):
        assert leak not in text
    if isinstance(err, Overloaded):
        assert err.retry_after == 7.0
