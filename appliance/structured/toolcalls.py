"""Tool calls in a model's text: which syntax a model uses, and reading calls out of text.

Three syntaxes cover the common chat templates:

- ``hermes`` (Hermes, Qwen 2/2.5/3, and the generic format of
  :mod:`~appliance.structured.tool_prompt`): one block per call,
  ``<tool_call>{"name": "f", "arguments": {...}}</tool_call>``, text around them is content;
- ``llama3`` (Llama 3.1-3.3): the whole answer is ``{"name": "f", "parameters": {...}}``
  (after an optional ``<|python_tag|>``; several calls separated by ``;``);
- ``mistral``: ``[TOOL_CALLS]`` then a JSON array of ``{"name", "arguments"}`` (the marker is
  a control token in Mistral's newer vocabularies and may be missing from the text, so an
  answer that is only such an array counts too).

Only calls to a declared function whose arguments are a JSON object count; anything else
stays content. Arguments are re-serialised compactly, so the same call reads the same
whether it arrived streamed or whole.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from appliance.engine.chat import ToolCall

ToolSyntax = Literal["hermes", "llama3", "mistral"]

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_MARK = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"
_HERMES_BLOCK = re.compile(re.escape(HERMES_OPEN) + r"(.*?)(?:" + re.escape(HERMES_CLOSE)
                           + r"|\Z)", re.S)


def detect_syntax(template_source: str) -> ToolSyntax:
    """The call syntax a chat template teaches its model (``hermes`` when it names none:
    the generic format uses that syntax)."""
    if MISTRAL_MARK in template_source:
        return "mistral"
    if HERMES_OPEN in template_source:
        return "hermes"
    if PYTHON_TAG in template_source or "ipython" in template_source:
        return "llama3"
    return "hermes"


@dataclass(frozen=True)
class CallFormat:
    """How one request's answer is read for calls."""

    syntax: ToolSyntax
    names: frozenset[str]  # the declared functions
    parallel: bool = True  # False: only the first call counts


@dataclass(frozen=True)
class Parsed:
    content: str
    calls: tuple[ToolCall, ...]


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def arguments_text(arguments: Any) -> str | None:
    """Arguments as compact JSON, or None unless they are a JSON object (a JSON string
    holding an object, as some models write it, counts)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    try:
        return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False)
    except ValueError:  # 1e999 read as inf
        return None


def call_of(obj: Any, names: frozenset[str], *, args_key: str = "arguments"
            ) -> ToolCall | None:
    """``{"name": ..., "arguments": {...}}`` (or ``parameters``) as a call, if it is one."""
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    arguments = obj.get(args_key, obj.get("parameters", obj.get("arguments", {})))
    text = arguments_text(arguments)
    return None if text is None else ToolCall(new_call_id(), obj["name"], text)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _hermes(text: str, fmt: CallFormat) -> Parsed:
    calls: list[ToolCall] = []
    content: list[str] = []
    pos = 0
    for m in _HERMES_BLOCK.finditer(text):
        call = call_of(_json(m.group(1).strip()), fmt.names)
        if call is None:
            continue  # not a call: stays in the content
        content.append(text[pos:m.start()])
        pos = m.end()
        calls.append(call)
    content.append(text[pos:])
    return Parsed("".join(content).strip() if calls else text, tuple(calls))


def _llama3(text: str, fmt: CallFormat) -> Parsed:
    body = text.strip().removeprefix(PYTHON_TAG).strip()
    if not body.startswith("{"):
        return Parsed(text, ())
    calls = [call_of(_json(part), fmt.names, args_key="parameters")
             for part in _split_objects(body)]
    if not calls or any(c is None for c in calls):
        return Parsed(text, ())
    return Parsed("", tuple(c for c in calls if c is not None))


def _split_objects(body: str) -> Iterable[str]:
    """``{...}; {...}`` as its objects' texts (``[]`` if it is not that)."""
    decoder = json.JSONDecoder()
    pos, out = 0, []
    while pos < len(body):
        try:
            _, end = decoder.raw_decode(body, pos)
        except ValueError:
            return []
        out.append(body[pos:end])
        pos = end
        while pos < len(body) and body[pos] in " \t\r\n;":
            pos += 1
    return out


def _mistral(text: str, fmt: CallFormat) -> Parsed:
    head, mark, tail = text.partition(MISTRAL_MARK)
    body = tail if mark else text
    if not mark:
        head = ""
    items = _json(body.strip())
    if not isinstance(items, list) or not items:
        return Parsed(text, ())
    calls = [call_of(item, fmt.names) for item in items]
    if any(c is None for c in calls):
        return Parsed(text, ())
    return Parsed(head.strip(), tuple(c for c in calls if c is not None))


_PARSERS = {"hermes": _hermes, "llama3": _llama3, "mistral": _mistral}


def parse_calls(text: str, fmt: CallFormat) -> Parsed:
    """Content and calls of a whole answer in ``fmt``'s syntax."""
    parsed = _PARSERS[fmt.syntax](text, fmt)
    if not fmt.parallel and len(parsed.calls) > 1:
        parsed = Parsed(parsed.content, parsed.calls[:1])
    return parsed


def hermes_markup(calls: Iterable[ToolCall]) -> str:
    """Calls written in the ``hermes`` syntax (the generic format; and how a cached answer
    with calls is stored, to be read back by the same parser)."""
    return "".join(
        f'{HERMES_OPEN}{{"name": {json.dumps(c.name)}, "arguments": {c.arguments}}}'
        f"{HERMES_CLOSE}" for c in calls)
