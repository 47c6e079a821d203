"""JSON Schema (2020-12, as OpenAPI 3.1 uses it) of every request the parsers in this
package accept: the fields, types and ranges they enforce, built from the same constants.

The schemas sit here, beside the parsers, so that a change to a parser is made next to the
description of what it accepts; ``tests/unit/test_openapi.py`` generates bodies from them
and checks that the parsers accept every conforming body (and refuse the mutated ones).
Rules a schema cannot say without getting unreadable (``stream_options`` needs ``stream``,
a memory's scope decides which of ``user``/``session_id`` it needs) are said in
``description``; the parsers enforce them with a 400 naming the ``param``.

Unknown fields are ignored by the chat, completion and embedding parsers (clients send
many), so those objects allow additional properties; ``/v1/guard`` refuses them.
"""

from __future__ import annotations

from typing import Any

from appliance.api.embeddings import MAX_INPUTS as MAX_EMBED_INPUTS
from appliance.api.guard import MAX_INPUTS as MAX_GUARD_INPUTS
from appliance.api.memory import MAX_CONTENT_CHARS, MAX_ID, MAX_NAME_CHARS, TIERS
from appliance.api.requests import (
    MAX_N,
    MAX_PROMPTS,
    MAX_STOP,
    MAX_TOKEN_DIGITS,
    MAX_TOP_LOGPROBS,
    MIN_REPEAT_PENALTY,
    ROLES,
    SEED_MAX,
    SEED_MIN,
    TOP_K_MAX,
)
from appliance.api.structured import MAX_TOOLS

Schema = dict[str, Any]


def _nullable(schema: Schema) -> Schema:
    """``schema`` or ``null``: the parsers treat a field sent as null as left out."""
    return {"anyOf": [schema, {"type": "null"}]}


def _number(lo: float, hi: float, *, lo_open: bool = False) -> Schema:
    low = {"exclusiveMinimum": lo} if lo_open else {"minimum": lo}
    return _nullable({"type": "number", **low, "maximum": hi})


def _integer(lo: int, hi: int | None = None) -> Schema:
    out: Schema = {"type": "integer", "minimum": lo}
    if hi is not None:
        out["maximum"] = hi
    return _nullable(out)


_BOOLEAN = _nullable({"type": "boolean"})
_GIVEN = {"type": "string", "minLength": 1, "maxLength": 256}
_NAME = {"type": "string", "maxLength": MAX_NAME_CHARS}
_MODEL = {"type": "string", "minLength": 1, "examples": ["default"],
          "description": "\"default\" names the served model; see GET /v1/models"}
_FUNCTION_NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}
_TOOL_CALL = {"type": "object", "required": ["id", "function"],
              "properties": {"id": {"type": "string"}, "type": {"const": "function"},
                             "function": {"type": "object", "required": ["name", "arguments"],
                                          "properties": {"name": {"type": "string"},
                                                         "arguments": {"type": "string"}}}}}
_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}

_MESSAGE: Schema = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": sorted(ROLES)},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART},
                              {"type": "null"}]},
        "name": _nullable({"type": "string"}),
        "tool_calls": _nullable({"type": "array", "items": _TOOL_CALL,
                                 "description": "an assistant turn's earlier calls"}),
        "tool_call_id": _nullable({"type": "string",
                                   "description": "a tool turn: the call it answers"}),
    },
    "allOf": [
        {"if": {"required": ["role"], "properties": {"role": {"const": "tool"}}},
         "then": {"required": ["tool_call_id"],
                  "properties": {"tool_call_id": {"type": "string", "minLength": 1}}}},
        {"if": {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array"}}},
         "then": {"properties": {"role": {"const": "assistant"}}}},
    ],
}

_OPTIONS: Schema = {
    "model": _MODEL,
    "max_tokens": _integer(1),
    "max_completion_tokens": _integer(1),
    "temperature": _number(0.0, 2.0),
    "top_p": _number(0.0, 1.0, lo_open=True),
    "top_k": _integer(0, TOP_K_MAX),
    "min_p": _number(0.0, 1.0),
    "seed": _integer(SEED_MIN, SEED_MAX),
    "presence_penalty": _number(-2.0, 2.0),
    "frequency_penalty": _number(-2.0, 2.0),
    "repeat_penalty": _number(MIN_REPEAT_PENALTY, 10.0),
    "logit_bias": _nullable({
        "type": "object", "description": "token id -> bias; ids must be in the vocabulary",
        "propertyNames": {"pattern": f"^[0-9]{{1,{MAX_TOKEN_DIGITS}}}$"},
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}}),
    "stop": {"anyOf": [{"type": "string"},
                       {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP},
                       {"type": "null"}]},
    "stream": _BOOLEAN,
    "stream_options": _nullable({
        "type": "object", "description": "only with \"stream\": true",
        "properties": {"include_usage": _BOOLEAN}}),
    "user": _nullable({"type": "string"}),
    "ignore_eos": _BOOLEAN,
    "n": {**_integer(1, MAX_N), "description": "choices per prompt; at most the server's "
                                               "max_n (a 400 above it)"},
    # Refused with a 400 unsupported_parameter unless left at what the appliance does.
    "best_of": {"enum": [1, None], "description": "not supported"},
    "suffix": {"type": "null", "description": "not supported"},
}

# "stream_options" (not null) only with "stream": true.
_STREAM_RULE: Schema = {
    "if": {"required": ["stream_options"],
           "properties": {"stream_options": {"type": "object"}}},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}

CHAT: Schema = {
    "type": "object",
    "required": ["model", "messages"],
    **_STREAM_RULE,
    "allOf": [{"if": {"required": ["top_logprobs"],
                      "properties": {"top_logprobs": {"type": "integer", "minimum": 1}}},
               "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}}],
    "properties": {
        **_OPTIONS,
        "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
        "response_format": _nullable({
            "type": "object", "required": ["type"],
            "description": "json_schema: the schema is enforced while decoding; a keyword "
                           "the grammar cannot enforce is a 400 unsupported_schema",
            "if": {"properties": {"type": {"const": "json_schema"}}},
            "then": {"required": ["json_schema"]},
            "properties": {"type": {"enum": ["text", "json_object", "json_schema"]},
                           "json_schema": {"type": "object", "required": ["name"],
                                           "properties": {"name": _FUNCTION_NAME,
                                                          "schema": _nullable(
                                                              {"type": "object"})}}}}),
        "tools": _nullable({
            "type": "array", "maxItems": MAX_TOOLS,
            "description": "function names are unique within the array",
            "items": {
                "type": "object", "required": ["function"],
                "properties": {"type": {"const": "function"},
                               "function": {"type": "object", "required": ["name"],
                                            "properties": {
                                                "name": _FUNCTION_NAME,
                                                "description": _nullable({"type": "string"}),
                                                "parameters": _nullable({"type": "object"}),
                                                "strict": _BOOLEAN}}}}}),
        "tool_choice": _nullable({
            "description": "\"required\" needs tools; a named function must be one of them",
            "anyOf": [{"enum": ["none", "auto", "required"]},
                      {"type": "object", "required": ["type", "function"],
                       "properties": {"type": {"const": "function"},
                                      "function": {"type": "object", "required": ["name"],
                                                   "properties": {"name": _FUNCTION_NAME}}}}]}),
        "parallel_tool_calls": _BOOLEAN,
        # Refused with a 400 unsupported_parameter: the parser names the fields to send.
        "functions": {"type": "null", "description": "deprecated: send tools"},
        "function_call": {"type": "null", "description": "deprecated: send tool_choice"},
        "logprobs": _BOOLEAN,
        "top_logprobs": {**_integer(0, MAX_TOP_LOGPROBS),
                         "description": "alternatives per token; needs \"logprobs\": true"},
        "session_id": _nullable({"type": "string", "maxLength": 256,
                                 "description": "memory session (or X-Session-Id)"}),
    },
}

_PROMPT_TEXT = {"type": "string", "minLength": 1}  # an empty prompt gives nothing to continue
_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0},
           "description": "token ids of the served model's vocabulary"}

COMPLETION: Schema = {
    "type": "object",
    "required": ["model", "prompt"],
    **_STREAM_RULE,
    "allOf": [{"if": {"required": ["logprobs"], "properties": {"logprobs": {"type": "integer"}}},
               "then": {"properties": {"echo": {"enum": [False, None]}}}}],
    "properties": {
        **_OPTIONS,
        "prompt": {"anyOf": [
            _PROMPT_TEXT, _TOKENS,
            {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS,
             "items": {"anyOf": [_PROMPT_TEXT, _TOKENS]}}]},
        "echo": _BOOLEAN,
        "logprobs": {**_integer(0, MAX_TOP_LOGPROBS),
                     "description": "alternatives per token (not with \"echo\")"},
        # Chat's fields, refused here with a 400 unsupported_parameter.
        **{name: {"type": "null", "description": "only on /v1/chat/completions"}
           for name in ("tools", "tool_choice", "functions")},
        "response_format": _nullable({
            "type": "object", "required": ["type"], "properties": {"type": {"const": "text"}},
            "description": "only \"text\" here; JSON formats are on /v1/chat/completions"}),
    },
}
_EMBED_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0},
                 "description": "token ids of the encoder's vocabulary"}

EMBEDDINGS: Schema = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": _MODEL,
        "input": {"anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "minItems": 1, "maxItems": MAX_EMBED_INPUTS,
             "items": {"type": "string", "minLength": 1}},
            _EMBED_TOKENS,
            {"type": "array", "minItems": 1, "maxItems": MAX_EMBED_INPUTS,
             "items": _EMBED_TOKENS}]},
        "encoding_format": {"enum": ["float", "base64", None]},
        "dimensions": _nullable({"type": "integer",
                                 "description": "must be the encoder's own (384)"}),
        "user": _nullable({"type": "string"}),
    },
}


def guard(presets: tuple[str, ...]) -> Schema:
    """``POST /v1/guard``'s body; ``presets``: the policy names it accepts."""
    return {
        "type": "object",
        "required": ["input"],
        "additionalProperties": False,
        "properties": {
            "input": {"anyOf": [{"type": "string"},
                                {"type": "array", "minItems": 1, "maxItems": MAX_GUARD_INPUTS,
                                 "items": {"type": "string"}}]},
            "role": {"enum": ["user", "system", "assistant"]},
            "policy": _nullable({"enum": list(presets)}),
        },
    }


def _when_scope(tier: str, then: Schema) -> Schema:
    return {"if": {"required": ["scope"], "properties": {"scope": {"const": tier}}},
            "then": then}


_ABSENT = {"enum": ["", None]}

MEMORY_WRITE: Schema = {
    "type": "object",
    "required": ["scope", "content"],
    "description": "scope 'session' needs a session_id, 'user' a user, 'global' neither "
                   "(and an admin key)",
    "allOf": [
        _when_scope("session", {"required": ["session_id"],
                                "properties": {"session_id": _GIVEN}}),
        _when_scope("user", {"required": ["user"], "properties": {"user": _GIVEN}}),
        _when_scope("global", {"properties": {"user": _ABSENT, "session_id": _ABSENT}}),
    ],
    "properties": {
        "scope": {"enum": list(TIERS)},
        "user": _nullable(_NAME),
        "session_id": _nullable(_NAME),
        "content": {"type": "string", "minLength": 1, "maxLength": MAX_CONTENT_CHARS,
                    "pattern": "[^\\s\\x1c-\\x1f\\x85]"},
        "pinned": {"type": "boolean"},
    },
}

MEMORY_PIN: Schema = {
    "type": "object",
    "required": ["pinned"],
    "properties": {"pinned": {"type": "boolean"}, "user": _nullable(_NAME)},
}

MEMORY_ID: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
MEMORY_SCOPE: Schema = {"enum": list(TIERS)}
NAME: Schema = _NAME

_RESPONSE_PART = {"type": "object", "required": ["type", "text"],
                  "properties": {"type": {"enum": ["input_text", "output_text", "text"]},
                                 "text": {"type": "string"}}}
_RESPONSE_ITEM = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": ["user", "assistant", "system", "developer"]},
        "content": {"anyOf": [{"type": "string"},
                              {"type": "array", "items": _RESPONSE_PART}]},
    },
}

RESPONSES: Schema = {
    "type": "object",
    "required": ["model", "input"],
    "description": "text turns only: tools, stored responses (previous_response_id, "
                   "conversation), background runs, reasoning and 'include' are a 400",
    "properties": {
        "model": _MODEL,
        "input": {"anyOf": [{"type": "string"},
                            {"type": "array", "minItems": 1, "items": _RESPONSE_ITEM}]},
        "instructions": _nullable({"type": "string"}),
        "max_output_tokens": _integer(1),
        "temperature": _number(0.0, 2.0),
        "top_p": _number(0.0, 1.0, lo_open=True),
        "stream": _BOOLEAN,
        "user": _nullable({"type": "string"}),
        "metadata": _nullable({"type": "object", "additionalProperties": {"type": "string"}}),
    },
}
