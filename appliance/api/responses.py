"""The OpenAI Responses API request (``POST /v1/responses``), parsed into a chat request.

Text turns only: ``input`` is a string or a list of message items (``role`` and ``content``,
a string or text parts), ``instructions`` becomes the system message, ``max_output_tokens``,
``temperature``, ``top_p``, ``stream``, ``user`` and ``metadata`` are honoured. What the
appliance does not do is refused with a 400 naming the field: tools, stored responses and
conversations (nothing is stored, so ``previous_response_id`` cannot be followed),
background runs, stored prompts, reasoning, non-text formats and ``include``. Fields that
change nothing here (``store``, ``service_tier``, ``parallel_tool_calls``, ...) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.api.requests import ChatRequest, as_int, parse_chat
from appliance.errors import InvalidRequest

_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text")
_PART_NAMES = ", ".join(_TEXT_PARTS)

# Fields refused whenever they ask for something (a non-empty, non-false value), and why.
_REFUSED = {
    "previous_response_id": "responses are not stored on this server; send the whole "
                            "conversation in 'input'",
    "conversation": "conversations are not stored on this server; send the whole "
                    "conversation in 'input'",
    "background": "background responses are not supported",
    "prompt": "stored prompt templates are not supported",
    "tools": "tools are not supported on /v1/responses",
    "include": "'include' is not supported (no extra output data is produced)",
    "top_logprobs": "log-probabilities are not supported on /v1/responses (use "
                    "/v1/chat/completions with 'logprobs')",
}


@dataclass(frozen=True)
class ResponsesRequest:
    chat: ChatRequest  # the same turn as a chat completion request
    instructions: str | None
    max_output_tokens: int | None
    metadata: dict[str, str]


def _refuse(body: Mapping[str, Any]) -> None:
    for name, why in _REFUSED.items():
        if body.get(name):
            raise InvalidRequest(why, param=name, code="unsupported_parameter")
    choice = body.get("tool_choice")
    if choice not in (None, "none", "auto"):
        raise InvalidRequest("'tool_choice' needs tools, which are not supported here",
                             param="tool_choice", code="unsupported_parameter")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and any(v is not None for v in reasoning.values()):
        raise InvalidRequest("'reasoning' is not supported by the served model",
                             param="reasoning", code="unsupported_parameter")
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise InvalidRequest("only the text format is supported on /v1/responses",
                             param="text.format", code="unsupported_parameter")
    if body.get("truncation") not in (None, "disabled"):
        raise InvalidRequest("only 'truncation': 'disabled' is supported (a conversation "
                             "longer than the context is a 400)", param="truncation",
                             code="unsupported_parameter")


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}.content must be a string or an array of text parts",
                             param=f"{where}.content")
    texts = []
    for j, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}.content[{j}]: only text parts ({_PART_NAMES}) are "
                                 f"supported, not {kind!r}", param=f"{where}.content[{j}]")
        texts.append(part["text"])
    return "".join(texts)


def _messages(value: Any) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty array of message "
                             "items", param="input")
    out = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        kind = item.get("type", "message")
        if kind != "message":
            raise InvalidRequest(f"{where}: items of type {kind!r} are not supported (only "
                                 f"messages)", param=f"{where}.type",
                                 code="unsupported_parameter")
        role = item.get("role")
        if role not in _ROLES:
            raise InvalidRequest(f"{where}.role must be one of {', '.join(_ROLES)}",
                                 param=f"{where}.role")
        out.append({"role": role, "content": _content(item.get("content"), where)})
    return out


def _max_output_tokens(body: Mapping[str, Any]) -> int | None:
    raw = body.get("max_output_tokens")
    value = as_int(raw)
    if raw is not None and (value is None or value < 1):
        raise InvalidRequest("'max_output_tokens' must be a positive integer",
                             param="max_output_tokens")
    return value


def _metadata(body: Mapping[str, Any]) -> dict[str, str]:
    value = body.get("metadata")
    value = {} if value is None else value
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidRequest("'metadata' must be an object of strings", param="metadata")
    return value


def parse_responses(body: Any) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    _refuse(body)
    if "input" not in body:
        raise InvalidRequest("'input' is required", param="input",
                             code="missing_required_parameter")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")
    messages = _messages(body["input"])
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    max_output = _max_output_tokens(body)
    chat = {key: body[key] for key in ("model", "temperature", "top_p", "stream", "user")
            if key in body}
    chat.update(messages=messages, max_tokens=max_output)
    return ResponsesRequest(chat=parse_chat(chat), instructions=instructions,
                            max_output_tokens=max_output, metadata=_metadata(body))
