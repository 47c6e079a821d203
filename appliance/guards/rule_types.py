"""The rule tier's vocabulary: the actions a hit can ask for, and a compiled regex rule."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, TypeGuard, get_args

Action = Literal["allow", "flag", "redact", "block"]
ACTIONS: tuple[Action, ...] = get_args(Action)  # weakest first
_RANK = {action: rank for rank, action in enumerate(ACTIONS)}


def is_action(value: object) -> TypeGuard[Action]:
    return value in _RANK


def strongest(actions: Iterable[Action]) -> Action:
    """The strongest of ``actions`` (block > redact > flag > allow); "allow" for none."""
    return max(actions, key=_RANK.__getitem__, default="allow")


@dataclass(frozen=True)
class RegexRule:
    name: str
    pattern: re.Pattern[str]
    action: Action
    category: str = "custom"
    replacement: str = "[REDACTED]"
    triggers: tuple[str, ...] = ()  # lower-case words; if any, the rule runs on texts with one
    lowercase: bool = False  # the pattern runs on text.lower()
