"""Parsing a policy's rules table (plain dicts, as loaded from TOML) into compiled rules::

    default_rules = true                      # the built-in prompt-injection rules (block)
    record_patterns = ["\\bMRN[:# ]*[0-9]{6,10}\\b"]   # reported as PII kind "record"

    [[rules]]
    name = "codename"                         # required, unique
    pattern = "project\\s+falcon"             # Python regex, case-insensitive unless
    action = "block"                          #   case_sensitive = true
    category = "confidential"                 # default "custom"
    replacement = "[CODENAME]"                # what a "redact" action masks with

    [[blocklists]]
    name = "competitors"
    words = ["acme corp", "globex"]           # whole words/phrases, any case, any spacing
    action = "flag"
    category = "business"

    [pii]                                     # kind = action; kinds not listed are not run
    email = "redact"
    ssn = "block"

``parse_rules_config(config)`` answers a frozen :class:`RulesConfig`; bad config raises
:class:`~appliance.errors.ConfigError` naming the offending entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from appliance.errors import ConfigError
from appliance.guards.fold import normalize_text
from appliance.guards.pii import PII_KINDS, PiiKind
from appliance.guards.rule_types import ACTIONS, Action, RegexRule, is_action

_TOP_KEYS = frozenset({"default_rules", "rules", "blocklists", "pii", "record_patterns"})
_RULE_KEYS = frozenset({"name", "pattern", "action", "category", "replacement",
                        "case_sensitive"})
_BLOCKLIST_KEYS = frozenset({"name", "words", "action", "category", "replacement"})


def _str(entry: Mapping[str, object], key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _action(entry: Mapping[str, object], where: str) -> Action:
    value = entry.get("action")
    if not is_action(value):
        raise ConfigError(f"{where}: action must be one of {list(ACTIONS)}, got {value!r}")
    return value


def _table(value: object, where: str, keys: frozenset[str]) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
    unknown = set(value) - keys
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(keys)}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
    return list(value)


def _compile(pattern: str, flags: int, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise ConfigError(f"{where}: bad regex {pattern!r}: {exc}") from exc


def _phrase(phrase: str) -> str:
    """A normalised, lower-cased blocklist entry as a regex: its first character, then a look
    back at the one before it (a pattern that starts with a plain character lets re skip
    ahead), then the rest."""
    return re.escape(phrase[0]) + r"(?<!\w.)" + re.escape(phrase[1:])


def _rule(raw: object, index: int) -> RegexRule:
    where = f"rules[{index}]"
    entry = _table(raw, where, _RULE_KEYS)
    case_sensitive = entry.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise ConfigError(f"{where}: case_sensitive must be true or false")
    flags = 0 if case_sensitive else re.IGNORECASE
    return RegexRule(
        name=_str(entry, "name", where), action=_action(entry, where),
        pattern=_compile(_str(entry, "pattern", where), flags, where),
        category=_str(entry, "category", where, "custom"),
        replacement=_str(entry, "replacement", where, "[REDACTED]"))


def _blocklist(raw: object, index: int) -> RegexRule:
    where = f"blocklists[{index}]"
    entry = _table(raw, where, _BLOCKLIST_KEYS)
    words = [normalize_text(w).lower() if isinstance(w, str) else ""
             for w in _list(entry.get("words"), f"{where}.words")]
    if not words or not all(words):
        raise ConfigError(f"{where}: words must be a non-empty list of words or phrases")
    phrases = sorted({_phrase(w) for w in words}, key=len, reverse=True)
    return RegexRule(
        name=_str(entry, "name", where), action=_action(entry, where),
        pattern=_compile(f"(?:{'|'.join(phrases)})(?!\\w)", re.DOTALL, where),
        category=_str(entry, "category", where, "blocklist"),
        replacement=_str(entry, "replacement", where, "[REDACTED]"), lowercase=True)


def _pii_actions(raw: object) -> dict[PiiKind, Action]:
    table = _table(raw, "pii", frozenset(PII_KINDS))
    out: dict[PiiKind, Action] = {}
    for kind in PII_KINDS:
        if kind in table:
            out[kind] = _action({"action": table[kind]}, f"pii.{kind}")
    return out


@dataclass(frozen=True)
class RulesConfig:
    default_rules: bool  # whether the built-in prompt-injection rules run
    rules: tuple[RegexRule, ...]  # the configured rules, then the blocklists
    pii: Mapping[PiiKind, Action]  # the PII kinds to run and their actions
    records: tuple[re.Pattern[str], ...]  # reported as PII kind "record"


def parse_rules_config(config: Mapping[str, object]) -> RulesConfig:
    """The rules of a config table (see the module doc); raises ConfigError."""
    table = _table(config, "guard rules config", _TOP_KEYS)
    use_defaults = table.get("default_rules", True)
    if not isinstance(use_defaults, bool):
        raise ConfigError(f"default_rules must be true or false, got {use_defaults!r}")
    rules = [_rule(r, i) for i, r in enumerate(_list(table.get("rules", []), "rules"))]
    rules += [_blocklist(b, i)
              for i, b in enumerate(_list(table.get("blocklists", []), "blocklists"))]
    pii = _pii_actions(table.get("pii", {}))
    records: list[re.Pattern[str]] = []
    for i, raw in enumerate(_list(table.get("record_patterns", []), "record_patterns")):
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"record_patterns[{i}] must be a non-empty regex string")
        records.append(_compile(raw, 0, f"record_patterns[{i}]"))
    if records:
        pii.setdefault("record", "redact")
    return RulesConfig(use_defaults, tuple(rules), MappingProxyType(pii), tuple(records))
