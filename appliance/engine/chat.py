"""Chat templates: the Jinja template stored in a GGUF, rendered in a sandbox."""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from appliance.errors import ChatTemplateMissing, InvalidRequest

# Placeholders for client text while the template renders (private-use characters).
_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_MARK_OPEN}([0-9]+){_MARK_CLOSE}")


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str
    name: str | None = None


def _raise(message: str) -> NoReturn:
    raise InvalidRequest(f"the chat template refused these messages: {message}",
                         param="messages")


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template plus the special-token strings it refers to."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            loader=jinja2.BaseLoader())
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = _strftime_now
        self.source = source
        self._template = env.from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(text for text, _ in self.render_parts(messages))

    def render_parts(self, messages: Sequence[ChatMessage]) -> list[tuple[str, bool]]:
        """The prompt as ``(text, from_client)`` pieces: the template's own markup, and the
        messages' contents and names as the client sent them. The template is rendered with
        a placeholder for each client string, so where client text lies is known exactly
        (the tokenizer must never read a role marker typed by a user as a control token)."""
        values: list[str] = []

        def mark(value: str) -> str:
            values.append(value)
            return f"{_MARK_OPEN}{len(values) - 1}{_MARK_CLOSE}"

        rows: list[dict[str, Any]] = []
        for m in messages:
            row: dict[str, Any] = {"role": m.role, "content": mark(m.content)}
            if m.name:
                row["name"] = mark(m.name)
            rows.append(row)
        pieces = _MARK.split(self._render(rows))
        # split() alternates template text and the captured placeholder numbers
        return [(piece, False) if i % 2 == 0 else (values[int(piece)], True)
                for i, piece in enumerate(pieces) if piece]

    def _render(self, rows: list[dict[str, Any]]) -> str:
        try:
            return self._template.render(
                messages=rows, add_generation_prompt=True,
                bos_token=self.bos_token, eos_token=self.eos_token,
            )
        except InvalidRequest:
            raise
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the model's chat template failed: {exc}",
                                 param="messages") from exc


class NoChatTemplate:
    """Stands in for a model without a template: chat requests get a clear 400."""

    source = ""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def render(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(text for text, _ in self.render_parts(messages))

    def render_parts(self, messages: Sequence[ChatMessage]) -> list[tuple[str, bool]]:
        raise ChatTemplateMissing(
            f"model {self.model_id!r} has no chat template (it is a base model); use "
            f"/v1/completions, or set chat_template_fallback to a Jinja template",
            param="model",
        )
