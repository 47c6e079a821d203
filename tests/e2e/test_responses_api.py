"""/v1/responses with the official client: plain and streamed text turns, the same answer as
the chat endpoint gives, and clear 400s for what is not supported."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.model

INSTRUCTIONS = "Be brief."
ASK = "Say hello."  # (about 24 tokens, then the end of text)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused",
                       max_retries=0, timeout=300) as c:
        yield c


def _chat(client: openai.OpenAI, max_tokens: int) -> Any:
    return client.chat.completions.create(
        model="default", temperature=0, max_tokens=max_tokens,
        messages=[{"role": "system", "content": INSTRUCTIONS},
                  {"role": "user", "content": ASK}])


def test_plain_turn_is_the_chat_answer(client: openai.OpenAI) -> None:
    r = client.responses.create(model="default", input=ASK, instructions=INSTRUCTIONS,
                                max_output_tokens=64, temperature=0, metadata={"k": "v"})
    chat = _chat(client, 64)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed" and r.incomplete_details is None
    assert r.output_text == chat.choices[0].message.content
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed"
    assert r.usage is not None
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == INSTRUCTIONS and r.metadata == {"k": "v"}


def test_message_items_and_a_length_cut(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="default", temperature=0, max_output_tokens=5,
        input=[{"role": "system", "content": INSTRUCTIONS},
               {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": ASK}]}])
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage is not None and r.usage.output_tokens == 5
    assert r.output_text == _chat(client, 5).choices[0].message.content


def test_streamed_turn(client: openai.OpenAI) -> None:
    with client.responses.stream(model="default", input=ASK, instructions=INSTRUCTIONS,
                                 max_output_tokens=64, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2
    assert "".join(deltas) == final.output_text == _chat(client, 64).choices[0].message.content
    assert final.status == "completed" and final.usage is not None
    assert events[0].response.id == final.id  # type: ignore[union-attr]


def test_streamed_cut_ends_incomplete(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="default", input=ASK, max_output_tokens=4,
                                          temperature=0, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"background": True}, "background"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format"),
    ({"include": ["message.output_text.logprobs"]}, "include"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
     "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0]"),
])
def test_what_is_not_supported_is_a_400_naming_the_field(
        client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    body: dict[str, Any] = {"model": "default", "input": ASK, **extra}
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(**body)
    assert exc.value.body["param"] == param  # type: ignore[index]
