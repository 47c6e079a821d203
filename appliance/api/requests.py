"""Typed OpenAI requests, parsed and validated at the edge.

``parse_chat`` and ``parse_completion`` take the decoded JSON body and return frozen
dataclasses, or raise ``InvalidRequest`` naming the offending ``param``. Unknown fields are
ignored (clients send many); known fields the appliance cannot honour are refused with a
clear 400 rather than silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.api.structured import (
    message_tool_fields,
    parse_response_format,
    parse_tools,
    refuse_for_completions,
)
from appliance.engine.chat import ChatMessage
from appliance.engine.types import SamplingParams
from appliance.errors import InvalidRequest
from appliance.structured.spec import ResponseFormat, Tools

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP = 4
TOP_K_MAX = 100_000
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
MAX_TOKEN_DIGITS = 18  # more digits: outside any vocabulary (and int64); see schema.py
MAX_N = 128  # what any server takes; the configured maximum (max_n) is checked later
MAX_TOP_LOGPROBS = 20
MAX_PROMPTS = 32  # prompts in one /v1/completions request
# The penalty divides a repeated token's positive logit in float32: near 0 it overflows to
# inf and the draw's softmax to NaN (5e-324 is 0 there), which llama.cpp cannot sample
# from. 0.01 already scales such a logit a hundredfold.
MIN_REPEAT_PENALTY = 0.01
MAX_SESSION_CHARS = 256


@dataclass(frozen=True)
class GenerationOptions:
    model: str
    max_tokens: int | None
    sampling: SamplingParams
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    user: str | None
    logit_bias: tuple[tuple[int, float], ...]
    ignore_eos: bool = False
    n: int = 1  # choices, each its own sequence of the one prompt
    logprobs: int | None = None  # alternatives reported per token (None: no logprobs)
    structured: bool = False  # tools, or a response_format other than text (model "auto")


@dataclass(frozen=True)
class ChatRequest:
    options: GenerationOptions
    messages: tuple[ChatMessage, ...]
    response_format: ResponseFormat | None = None
    tools: Tools | None = None


Prompt = str | tuple[int, ...]  # text, or token ids of the served model


@dataclass(frozen=True)
class CompletionRequest:
    options: GenerationOptions
    prompts: tuple[Prompt, ...]  # one or more: a choice (n choices) each
    echo: bool


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean",
            int: "integer", float: "number", type(None): "null"}.get(type(value),
                                                                    type(value).__name__)


def _number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float,
            *, lo_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{name}' must be a number, not {_type_name(value)}", param=name)
    if value < lo or value > hi or (lo_open and value == lo):
        bracket = "(" if lo_open else "["
        raise InvalidRequest(f"'{name}' must be in {bracket}{lo}, {hi}], got {value}",
                             param=name)
    return float(value)


def as_int(value: Any) -> int | None:
    """``value`` as an integer when JSON (and JSON Schema) call it one: ``5`` and ``5.0``
    are the same JSON number; ``true`` is not a number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _integer(body: Mapping[str, Any], name: str, lo: int | None = None,
             hi: int | None = None) -> int | None:
    raw = body.get(name)
    if raw is None:
        return None
    value = as_int(raw)
    if value is None:
        raise InvalidRequest(f"'{name}' must be an integer, not {_type_name(raw)}",
                             param=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise InvalidRequest(f"'{name}' must be {bound}, got {value}", param=name)
    return value


def _boolean(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean, not {_type_name(value)}", param=name)
    return value


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    if len(value) > MAX_STOP:
        raise InvalidRequest(f"'stop' takes at most {MAX_STOP} sequences", param="stop")
    return tuple(s for s in value if s)


def _logit_bias(body: Mapping[str, Any]) -> tuple[tuple[int, float], ...]:
    value = body.get("logit_bias")
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidRequest("'logit_bias' must be an object mapping token ids to biases",
                             param="logit_bias")
    out = []
    for key, bias in value.items():
        if not (key.isascii() and key.isdigit()) or len(key) > MAX_TOKEN_DIGITS:
            raise InvalidRequest(f"'logit_bias' key {key[:32]!r} is not a token id",
                                 param="logit_bias")
        token = int(key)
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
            raise InvalidRequest("'logit_bias' values must be numbers in [-100, 100]",
                                 param="logit_bias")
        out.append((token, float(bias)))
    return tuple(out)


def _is_one(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and value == 1)


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    if not _is_one(body.get("best_of")):
        raise InvalidRequest("best_of is not supported", param="best_of",
                             code="unsupported_parameter")
    if body.get("suffix") is not None:
        raise InvalidRequest("suffix (insertion) is not supported", param="suffix",
                             code="unsupported_parameter")


def _options(body: Mapping[str, Any]) -> GenerationOptions:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, not "
                             f"{_type_name(body)}")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("you must provide a 'model' (\"default\" names the served model)",
                             param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    _refuse_unsupported(body)
    # Both are checked; the newer name wins when both are given.
    legacy = _integer(body, "max_tokens", 1)
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = legacy
    seed = _integer(body, "seed", SEED_MIN, SEED_MAX)
    sampling = SamplingParams(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=_integer(body, "top_k", 0, TOP_K_MAX) or 0,
        min_p=_number(body, "min_p", 0.0, 0.0, 1.0),
        seed=None if seed is None else seed & 0xFFFFFFFF,
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        repeat_penalty=_number(body, "repeat_penalty", 1.0, MIN_REPEAT_PENALTY, 10.0),
        logit_bias=_logit_bias(body),
    )
    stream = _boolean(body, "stream")
    stream_options = body.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true",
                                 param="stream_options")
        include_usage = _boolean(stream_options, "include_usage")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", param="user")
    return GenerationOptions(model=model, max_tokens=max_tokens, sampling=sampling,
                             stop=_stop(body), stream=stream, include_usage=include_usage,
                             user=user, logit_bias=sampling.logit_bias,
                             ignore_eos=_boolean(body, "ignore_eos"),
                             n=_integer(body, "n", 1, MAX_N) or 1,
                             structured=_structured(body))


def _chat_logprobs(body: Mapping[str, Any]) -> int | None:
    """Chat: ``logprobs: true`` and ``top_logprobs`` alternatives (0..20)."""
    top = _integer(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if not _boolean(body, "logprobs"):
        if top:
            raise InvalidRequest("'top_logprobs' needs 'logprobs': true",
                                 param="top_logprobs")
        return None
    return top or 0


def _text_logprobs(body: Mapping[str, Any]) -> int | None:
    """Completions: ``logprobs`` is the number of alternatives (0..20), null for none."""
    top = _integer(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    if top is not None and _boolean(body, "echo"):
        raise InvalidRequest("'echo' with 'logprobs' (log-probabilities of the prompt) is "
                             "not supported; leave one out", param="echo",
                             code="unsupported_parameter")
    return top


def _structured(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    return bool(body.get("tools") or body.get("functions")) or (
        isinstance(fmt, dict) and fmt.get("type") not in (None, "text"))


def _content(value: Any, i: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                    part.get("text"), str):
                raise InvalidRequest(
                    f"messages[{i}].content: only text parts are supported",
                    param=f"messages[{i}].content")
            parts.append(part["text"])
        return "".join(parts)
    if value is None:
        return ""
    raise InvalidRequest(f"messages[{i}].content must be a string or an array of text parts",
                         param=f"messages[{i}].content")


def session_value(value: Any) -> str | None:
    """A memory session as a client gave it (the body's ``session_id`` or the
    ``X-Session-Id`` header); empty is none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_SESSION_CHARS or not _is_text(value):
        raise InvalidRequest(f"'session_id' must be UTF-8 text of at most {MAX_SESSION_CHARS} "
                             "characters", param="session_id")
    return value


def _is_text(value: str) -> bool:
    """False for text with lone surrogates (a header of bytes that are not UTF-8, or a JSON
    ``\\ud800`` escape), which SQLite and the logs cannot store."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_chat(body: Any) -> ChatRequest:
    options = _options(body)
    options = dataclasses.replace(options, logprobs=_chat_logprobs(body))
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("'messages' is required", param="messages",
                             code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param=f"messages[{i}]")
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {sorted(ROLES)}",
                                 param=f"messages[{i}].role")
        name = m.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest(f"messages[{i}].name must be a string",
                                 param=f"messages[{i}].name")
        out.append(ChatMessage(role="system" if role == "developer" else role,
                               content=_content(m.get("content"), i), name=name,
                               **message_tool_fields(m, i)))
    response_format, tools = parse_response_format(body), parse_tools(body)
    session_value(body.get("session_id"))  # read with X-Session-Id where the job is made
    if options.logprobs is not None and (response_format is not None or tools is not None):
        # The constrained sampler and the log-probability reader each run the sampler
        # chain their own way; together they are not built (yet).
        raise InvalidRequest("'logprobs' cannot be combined with 'tools' or a JSON "
                             "'response_format' on this server; leave one out",
                             param="logprobs", code="unsupported_parameter")
    return ChatRequest(options=options, messages=tuple(out), response_format=response_format,
                       tools=tools)


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(as_int(t) is not None for t in value)


def _ids(value: list[Any], where: str) -> tuple[int, ...]:
    """The token ids of a list that :func:`_token_ids` accepted; none may be negative (the
    upper bound is the served model's vocabulary, checked when the job is prepared)."""
    ids = tuple(int(t) for t in value)
    if min(ids) < 0:
        raise InvalidRequest(f"{where} holds a negative token id; token ids are 0 or more",
                             param="prompt")
    return ids


def _prompts(prompt: Any) -> tuple[Prompt, ...]:
    """A string, an array of token ids, or an array of several of those."""
    if isinstance(prompt, str):
        if not prompt:
            raise InvalidRequest("'prompt' is empty; there is nothing to continue",
                                 param="prompt")
        return (prompt,)
    if _token_ids(prompt):
        return (_ids(prompt, "'prompt'"),)
    if not isinstance(prompt, list) or not prompt:
        raise InvalidRequest("'prompt' must be a string, an array of token ids, or a "
                             "non-empty array of those", param="prompt")
    if len(prompt) > MAX_PROMPTS:
        raise InvalidRequest(f"'prompt' takes at most {MAX_PROMPTS} prompts per request",
                             param="prompt")
    out: list[Prompt] = []
    for i, item in enumerate(prompt):
        if isinstance(item, str) and item:
            out.append(item)
        elif _token_ids(item):
            out.append(_ids(item, f"prompt[{i}]"))
        else:
            what = "an empty string" if item == "" else _type_name(item)
            raise InvalidRequest(f"prompt[{i}] must be a non-empty string or a non-empty "
                                 f"array of token ids, not {what}", param="prompt")
    return tuple(out)


def parse_completion(body: Any) -> CompletionRequest:
    options = _options(body)
    options = dataclasses.replace(options, logprobs=_text_logprobs(body))
    refuse_for_completions(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("'prompt' is required", param="prompt",
                             code="missing_required_parameter")
    return CompletionRequest(options=options, prompts=_prompts(prompt),
                             echo=_boolean(body, "echo"))
