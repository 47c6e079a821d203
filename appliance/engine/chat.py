"""Chat templates: the Jinja template stored in a GGUF, rendered in a sandbox."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from appliance.errors import ChatTemplateMissing, InvalidRequest


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
        rows: list[dict[str, Any]] = []
        for m in messages:
            row: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.name:
                row["name"] = m.name
            rows.append(row)
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
        raise ChatTemplateMissing(
            f"model {self.model_id!r} has no chat template (it is a base model); use "
            f"/v1/completions, or set chat_template_fallback to a Jinja template",
            param="model",
        )
