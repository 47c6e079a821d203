"""The output rail's part of a guard policy: ``[output]`` and its ``[[output.rules]]``, and
the small table readers every part of the policy parser shares. See ``policy.py``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import regex

from appliance.errors import ConfigError

CATEGORY = re.compile(r"S[0-9]{1,2}")
_OUTPUT_KEYS = frozenset({"blocked_message", "rules", "classify", "categories",
                          "directive_message", "window_tokens", "min_score"})
MAX_WINDOW_TOKENS = 64
_OUTPUT_RULE_KEYS = frozenset({"name", "pattern", "replacement"})


@dataclass(frozen=True)
class OutputRule:
    name: str
    pattern: re.Pattern[str]
    replacement: str
    # The same pattern in the ``regex`` module, for partial matches: whether a streamed text
    # ends in the beginning of a phrase the rule would catch once it is complete.
    partial: regex.Pattern[str]


@dataclass(frozen=True)
class OutputPolicy:
    rules: tuple[OutputRule, ...] = ()
    blocked_message: str = "The answer was withheld because it contained sensitive data."
    classify: bool = True  # the guard network on each output window
    categories: tuple[str, ...] = ("S10", "S12")  # content-safety categories stopped there
    directive_message: str | None = None  # None: the policy's refusal
    # Streamed text is released in windows of about this many tokens, each checked first
    # (0: whole sentences). Measured default: see docs/BENCHMARKS.md.
    window_tokens: int = 4
    # A category stops the answer at max(its calibrated threshold, min_score): the network's
    # category thresholds are set for naming the category of an unsafe input, and read alone
    # on a few words of an answer they fire on ordinary fragments ("Shelter." scores 0.21 on
    # S10, whose threshold is 0.11).
    min_score: float = 0.0


def table(value: object, where: str, keys: frozenset[str] | None = None) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
    unknown = set(value) - keys if keys is not None else set()
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(keys or ())}")
    return value


def text(table: Mapping[str, object], key: str, where: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def unit(value: object, where: str) -> float | None:
    """``value`` as a number in [0, 1]; None stays None (not set)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not 0.0 <= value <= 1.0):
        raise ConfigError(f"{where} must be a number in [0, 1], got {value!r}")
    return None if value is None else float(value)


def parse_output(raw: object) -> OutputPolicy:
    section = table(raw, "output", _OUTPUT_KEYS)
    rules_raw = section.get("rules", [])
    if not isinstance(rules_raw, list):
        raise ConfigError("output.rules must be an array of tables ([[output.rules]])")
    rules = []
    for i, entry in enumerate(rules_raw):
        where = f"output.rules[{i}]"
        row = table(entry, where, _OUTPUT_RULE_KEYS)
        pattern = text(row, "pattern", where, "")
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
            partial = regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)
        except (re.error, regex.error) as exc:
            raise ConfigError(f"{where}: bad regex {pattern!r}: {exc}") from exc
        rules.append(OutputRule(text(row, "name", where, ""), compiled,
                                text(row, "replacement", where, ""), partial))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"output.rules: names must be unique, got {names}")
    default = OutputPolicy()
    classify = section.get("classify", default.classify)
    if not isinstance(classify, bool):
        raise ConfigError(f"output.classify must be true or false, got {classify!r}")
    categories = section.get("categories", list(default.categories))
    if not isinstance(categories, list) or not all(
            isinstance(c, str) and CATEGORY.fullmatch(c) for c in categories):
        raise ConfigError(f"output.categories must be an array of S-codes like \"S10\", got "
                          f"{categories!r}")
    message = section.get("directive_message")
    window = section.get("window_tokens", default.window_tokens)
    if isinstance(window, bool) or not isinstance(window, int) \
            or not 0 <= window <= MAX_WINDOW_TOKENS:
        raise ConfigError(f"output.window_tokens must be an integer from 0 (whole sentences) "
                          f"to {MAX_WINDOW_TOKENS}, got {window!r}")
    min_score = unit(section.get("min_score", default.min_score), "output.min_score")
    return OutputPolicy(tuple(rules),
                        text(section, "blocked_message", "output", default.blocked_message),
                        classify, tuple(categories),
                        None if message is None else text(section, "directive_message",
                                                           "output", ""), window,
                        default.min_score if min_score is None else min_score)
