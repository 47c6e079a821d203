"""The structured-output and tool fields of a chat request, parsed and validated.

``response_format``, ``tools``, ``tool_choice`` and ``parallel_tool_calls`` become
:mod:`appliance.structured.spec` values; an assistant message's ``tool_calls`` and a tool
message's ``tool_call_id`` become :class:`~appliance.engine.chat.ChatMessage` fields.
Whether a schema can be enforced is decided later, where the grammar is built (the grammar
of forced calls depends on the model's call syntax).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from appliance.engine.chat import ToolCall
from appliance.errors import InvalidRequest
from appliance.structured.spec import ChoiceMode, Function, ResponseFormat, Tools

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# As OpenAI caps them. Each function is one more path for a forced call's grammar to keep
# open, and one more definition in the prompt.
MAX_TOOLS = 128
_CHOICES: tuple[ChoiceMode, ...] = ("none", "auto", "required")


def _schema_json(value: Any, param: str) -> str:
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be a JSON schema object", param=param)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _name(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidRequest(f"'{param}' must be 1-64 letters, digits, '_' or '-'",
                             param=param)
    return value


def parse_response_format(body: Mapping[str, Any]) -> ResponseFormat | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise InvalidRequest("'response_format.type' must be 'text', 'json_object' or "
                             "'json_schema'", param="response_format.type")
    # json_schema is checked whatever the type says, as the schema does: a malformed field
    # is not ignored.
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) and (spec is not None or kind == "json_schema"):
        raise InvalidRequest("'response_format.json_schema' must be an object with 'name' "
                             "and 'schema'", param="response_format.json_schema")
    name, schema = ("", None) if spec is None else (
        _name(spec.get("name"), "response_format.json_schema.name"),
        None if spec.get("schema") is None else _schema_json(
            spec["schema"], "response_format.json_schema.schema"))
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object", "", "")
    if schema is None:  # no schema: any JSON object, as json_object
        return ResponseFormat("json_object", name, "")
    return ResponseFormat("json_schema", name, schema)


def _function(tool: Any, i: int) -> Function:
    where = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type", "function") != "function" or \
            not isinstance(tool.get("function"), dict):
        raise InvalidRequest(f"'{where}' must be {{\"type\": \"function\", \"function\": "
                             f"{{...}}}} (only function tools are supported)", param=where)
    fn = tool["function"]
    description = fn.get("description")
    description = "" if description is None else description
    if not isinstance(description, str):
        raise InvalidRequest(f"'{where}.function.description' must be a string",
                             param=f"{where}.function.description")
    strict = fn.get("strict")
    strict = False if strict is None else strict
    if not isinstance(strict, bool):
        raise InvalidRequest(f"'{where}.function.strict' must be a boolean",
                             param=f"{where}.function.strict")
    params = fn.get("parameters")
    params_json = "" if params is None else _schema_json(params,
                                                         f"{where}.function.parameters")
    return Function(_name(fn.get("name"), f"{where}.function.name"), description, params,
                    params_json, strict)


def _choice(value: Any, names: set[str]) -> tuple[ChoiceMode, str | None]:
    if value is None:
        return ("auto" if names else "none"), None
    if value in _CHOICES:
        if value == "required" and not names:
            raise InvalidRequest("tool_choice 'required' needs 'tools'", param="tool_choice")
        return value, None
    fn = value.get("function") if isinstance(value, dict) else None
    if not isinstance(fn, dict) or value.get("type") != "function":
        raise InvalidRequest("'tool_choice' must be 'none', 'auto', 'required' or "
                             "{\"type\": \"function\", \"function\": {\"name\": ...}}",
                             param="tool_choice")
    name = fn.get("name")
    if name not in names:
        raise InvalidRequest(f"tool_choice names the function {name!r}, which is not in "
                             "'tools'", param="tool_choice")
    return "function", name


def parse_tools(body: Mapping[str, Any]) -> Tools | None:
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise InvalidRequest("'functions' and 'function_call' are deprecated; send 'tools' "
                             "and 'tool_choice'", param="functions",
                             code="unsupported_parameter")
    raw = body.get("tools")
    if raw is not None and not isinstance(raw, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    if raw is not None and len(raw) > MAX_TOOLS:
        raise InvalidRequest(f"'tools' takes at most {MAX_TOOLS} functions", param="tools")
    functions = tuple(_function(t, i) for i, t in enumerate(raw or []))
    names = {f.name for f in functions}
    if len(names) < len(functions):
        raise InvalidRequest("'tools' declares the same function name twice", param="tools")
    choice, forced = _choice(body.get("tool_choice"), names)
    parallel = body.get("parallel_tool_calls")
    parallel = True if parallel is None else parallel  # null: left out, as every field
    if not isinstance(parallel, bool):
        raise InvalidRequest("'parallel_tool_calls' must be a boolean",
                             param="parallel_tool_calls")
    if not functions:
        return None
    return Tools(functions, choice, forced, parallel)


def message_tool_fields(m: Mapping[str, Any], i: int) -> dict[str, Any]:
    """``tool_calls`` (assistant) and ``tool_call_id`` (tool) of ``messages[i]``."""
    role, where = m.get("role"), f"messages[{i}]"
    out: dict[str, Any] = {}
    calls = m.get("tool_calls")
    if calls is not None:
        if role != "assistant" or not isinstance(calls, list):
            raise InvalidRequest(f"'{where}.tool_calls' must be an array on an assistant "
                                 "message", param=f"{where}.tool_calls")
        out["tool_calls"] = tuple(_call(c, f"{where}.tool_calls[{j}]")
                                  for j, c in enumerate(calls))
    call_id = m.get("tool_call_id")
    if role == "tool":
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(f"'{where}.tool_call_id' is required on a tool message",
                                 param=f"{where}.tool_call_id")
        out["tool_call_id"] = call_id
    elif call_id is not None and not isinstance(call_id, str):  # given, then ignored
        raise InvalidRequest(f"'{where}.tool_call_id' must be a string",
                             param=f"{where}.tool_call_id")
    return out


def _call(c: Any, where: str) -> ToolCall:
    fn = c.get("function") if isinstance(c, dict) else None
    if not isinstance(fn, dict) or not isinstance(c.get("id"), str) or \
            c.get("type", "function") != "function" or \
            not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
        raise InvalidRequest(f"'{where}' must be {{\"id\", \"type\": \"function\", "
                             "\"function\": {\"name\", \"arguments\" (a JSON string)}}",
                             param=where)
    return ToolCall(c["id"], fn["name"], fn["arguments"])


def refuse_for_completions(body: Mapping[str, Any]) -> None:
    """The legacy completions endpoint has neither tools nor response formats."""
    for name in ("tools", "tool_choice", "functions", "response_format"):
        value = body.get(name)
        if value is None or (name == "response_format" and isinstance(value, dict)
                             and value.get("type") == "text"):
            continue
        raise InvalidRequest(f"'{name}' is only supported on /v1/chat/completions",
                             param=name, code="unsupported_parameter")
