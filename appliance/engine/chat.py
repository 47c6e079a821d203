"""Chat templates: the Jinja template stored in a GGUF, rendered in a sandbox."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from appliance.errors import ChatTemplateMissing, InvalidRequest

# Placeholders for client text while the template renders (private-use characters).
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_MARK_OPEN}([0-9]+){_MARK_CLOSE}")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None  # a tool message: the call it answers


def _raise(message: str) -> NoReturn:
    raise InvalidRequest(f"the chat template refused these messages: {message}",
                         param="messages")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    """As Hugging Face renders templates: key order kept, non-ASCII (and so the client-text
    placeholders) left as they are."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _marked(value: Any, mark: Callable[[str], str]) -> Any:
    """``value`` with every string (keys too) replaced by a JSON-escaped placeholder."""
    if isinstance(value, str):
        return mark(json.dumps(value, ensure_ascii=False)[1:-1])
    if isinstance(value, Mapping):
        return {_marked(k, mark): _marked(v, mark) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_marked(v, mark) for v in value]
    return value


def _call_row(call: ToolCall, mark: Callable[[str], str]) -> dict[str, Any]:
    try:  # templates print arguments with tojson: they want the object
        arguments: Any = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    return {"id": mark(call.id), "type": "function",
            "function": {"name": mark(call.name), "arguments": _marked(arguments, mark)}}


class ChatTemplate:
    """A compiled chat template plus the special-token strings it refers to."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            loader=jinja2.BaseLoader())
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        self.source = source
        self._template = env.from_string(source)
        # A template that reads ``tools`` renders function definitions itself.
        self.supports_tools = "tools" in jinja2.meta.find_undeclared_variables(
            env.parse(source))
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(text for text, _ in self.render_parts(messages))

    def render_parts(self, messages: Sequence[ChatMessage],
                     tools: Sequence[Mapping[str, Any]] | None = None
                     ) -> list[tuple[str, bool]]:
        """The prompt as ``(text, from_client)`` pieces: the template's own markup, and the
        messages' contents and names as the client sent them. The template is rendered with
        a placeholder for each client string, so where client text lies is known exactly
        (the tokenizer must never read a role marker typed by a user as a control token).
        Strings inside ``tools`` and call arguments are JSON-escaped in their placeholders
        (templates print those with ``tojson``)."""
        values: list[str] = []

        def mark(value: str) -> str:
            values.append(value)
            return f"{_MARK_OPEN}{len(values) - 1}{_MARK_CLOSE}"

        rows = [_row(m, mark) for m in messages]
        marked_tools = [_marked(t, mark) for t in tools] if tools else None
        pieces = _MARK.split(self._render(rows, marked_tools))
        # split() alternates template text and the captured placeholder numbers
        return [(piece, False) if i % 2 == 0 else (values[int(piece)], True)
                for i, piece in enumerate(pieces) if piece]

    def _render(self, rows: list[dict[str, Any]], tools: list[Any] | None) -> str:
        extra = {"tools": tools} if tools else {}
        try:
            return self._template.render(
                messages=rows, add_generation_prompt=True,
                bos_token=self.bos_token, eos_token=self.eos_token, **extra,
            )
        except InvalidRequest:
            raise
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the model's chat template failed: {exc}",
                                 param="messages") from exc


def _row(m: ChatMessage, mark: Callable[[str], str]) -> dict[str, Any]:
    row: dict[str, Any] = {"role": m.role, "content": mark(m.content)}
    if m.name:
        row["name"] = mark(m.name)
    if m.tool_calls:
        row["tool_calls"] = [_call_row(c, mark) for c in m.tool_calls]
        if not m.content:
            row["content"] = None  # as OpenAI sends it: templates test for it
    if m.tool_call_id is not None:
        row["tool_call_id"] = mark(m.tool_call_id)
    return row


class NoChatTemplate:
    """Stands in for a model without a template: chat requests get a clear 400."""

    source = ""
    supports_tools = False

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def render(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(text for text, _ in self.render_parts(messages))

    def render_parts(self, messages: Sequence[ChatMessage],
                     tools: Sequence[Mapping[str, Any]] | None = None
                     ) -> list[tuple[str, bool]]:
        raise ChatTemplateMissing(
            f"model {self.model_id!r} has no chat template (it is a base model); use "
            f"/v1/completions, or set chat_template_fallback to a Jinja template",
            param="model",
        )
