"""The ``auto`` model: a small model by default, the large one when the request needs it.

The rule, first match wins (the README's "Scaling out" documents it):

1. ``structured``: the request has tools or a structured ``response_format``;
2. ``prompt_tokens``: the prompt (after memory injection) is over ``prompt_tokens`` tokens;
3. ``topic``: the last user turn matches a topic of the key's guard policy that says
   ``route = "large"``;
4. otherwise ``small``.

The answer's ``model`` names the model that served it, and ``appliance_auto_routes_total``
counts each reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AutoReason = Literal["structured", "prompt_tokens", "topic", "small"]


@dataclass(frozen=True)
class AutoRule:
    small: str
    large: str
    prompt_tokens: int


@dataclass(frozen=True)
class AutoHints:
    prompt_tokens: int
    structured: bool = False  # tools, or a response_format other than text
    topic: str | None = None  # a "route = large" topic the last user turn matched


@dataclass(frozen=True)
class AutoChoice:
    model: str
    reason: AutoReason


def choose(rule: AutoRule, hints: AutoHints) -> AutoChoice:
    if hints.structured:
        return AutoChoice(rule.large, "structured")
    if hints.prompt_tokens > rule.prompt_tokens:
        return AutoChoice(rule.large, "prompt_tokens")
    if hints.topic is not None:
        return AutoChoice(rule.large, "topic")
    return AutoChoice(rule.small, "small")
