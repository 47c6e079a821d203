"""Guard policies: what each tier of the input rail does, and the output rail's rules.

A policy is one TOML file; the presets live in ``appliance/guards/policies/`` and are loaded
by name (``load_policy("clinic")``), any other file by path::

    name = "default"
    version = "1"                        # bumped by hand; Policy.version adds a content hash
    refusal = "I can't help with that request."

    [rules]                              # passed as is to RuleSet.from_config (rule_config.py)
    default_rules = true
    [rules.pii]
    email = "redact"

    [network]                            # one guard-network pass over a text (all labels)
    budget_ms = 1000                     # (``[embedding]``, its old name, is still read)
    on_timeout = "block"                 # "block" fails closed, "flag" fails open
    on_error = "block"

    [classifiers.prompt-injection]       # the injection label (user, system and tool texts)
    threshold = 0.8                      # optional; default labels.json's calibrated one
    short_words = 16                     # a text under 16 words needs ...
    short_threshold = 0.99               # ... this score (injection only; default: off)
    action = "block"                     # on a flag: block | flag | allow
    budget_ms = 250                      # content-safety's: the output rail's window check
    [classifiers.content-safety.categories]  # the unsafe label (the main text) by S-code
    S6 = "allow"                         # default: the classifier's action
    [classifiers.directive]              # output rail: diagnoses, dose instructions to the
    enabled = true                       # reader (off unless named)

    [[topics]]                           # a canned answer, no model call, for inputs within
    name = "emergency"                   # cosine `threshold` of an example
    examples = ["I have crushing chest pain", "my child swallowed bleach"]
    threshold = 0.72
    answer = "Call your local emergency number now."
    # or, instead of an answer: route = "large" (model "auto" sends a match to auto_large)

    [output]
    blocked_message = "..."              # replaces an answer that leaks a secret
    classify = true                      # the guard network on each output window
    categories = ["S10", "S12"]          # the content-safety categories it stops there
    directive_message = "..."            # replaces an answer the directive label stops
    window_tokens = 4                    # streamed text goes out in checked windows of about
                                         # this many tokens (0: whole sentences; at most 64);
                                         # the network's flag inside a sentence holds it back
                                         # to be judged whole, the sentence's end decides:
                                         # see guards/output.py
    [[output.rules]]
    name = "dose-instruction"
    pattern = "you should take \\d+ ?mg"  # case-insensitive, on normalised text
    replacement = "Please talk to a pharmacist."

``Policy.version`` is ``"<version>+<sha256 prefix of the file>"``, so a cache keyed on it
never serves an answer checked under another policy. Bad files raise ConfigError.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeGuard

from appliance.errors import ConfigError
from appliance.guards.policy_output import CATEGORY, OutputPolicy, parse_output
from appliance.guards.policy_output import table as _table
from appliance.guards.policy_output import text as _text
from appliance.guards.policy_output import unit as _unit
from appliance.guards.rules import RuleSet

POLICIES_DIR = Path(__file__).resolve().parent / "policies"

OnFlag = Literal["block", "flag", "allow"]
FailMode = Literal["block", "flag"]
_ON_FLAG: tuple[OnFlag, ...] = ("block", "flag", "allow")
_FAIL: tuple[FailMode, ...] = ("block", "flag")
_CATEGORY = CATEGORY

_TOP_KEYS = frozenset({"name", "version", "description", "refusal", "rules", "network",
                       "embedding", "classifiers", "output", "topics"})
_BUDGET_KEYS = frozenset({"budget_ms", "on_timeout", "on_error"})
_CLASSIFIER_KEYS = _BUDGET_KEYS | {"enabled", "threshold", "action", "categories",
                                   "short_words", "short_threshold"}
# Only the injection check reads system prompts, so only it takes their action.
_INJECTION_KEYS = _CLASSIFIER_KEYS | {"system_action"}
_CLASSIFIER_IDS = frozenset({"prompt-injection", "content-safety", "directive"})
_TOPIC_KEYS = frozenset({"name", "examples", "threshold", "answer", "route"})


@dataclass(frozen=True)
class Budget:
    """A guard's latency budget and what its timeout or failure means."""

    budget_ms: float = 1000.0
    on_timeout: FailMode = "block"
    on_error: FailMode = "block"


@dataclass(frozen=True)
class ClassifierPolicy:
    enabled: bool = True
    threshold: float | None = None  # None: the classifier's shipped threshold
    action: OnFlag = "block"
    categories: Mapping[str, OnFlag] = field(default_factory=lambda: MappingProxyType({}))
    budget: Budget = Budget(250.0)
    # A text of fewer than short_words words needs at least short_threshold (injection):
    # the network over-fires on terse instructions ("Be brief.", "Count to 20."), which an
    # attack rarely is; the rules tier still sees every text.
    short_words: int = 0
    short_threshold: float = 1.0
    # The action on a flag in a system message (injection; None: ``action``). A system
    # prompt is the application's instructions to the model, which is what the injection
    # label finds: the network flags two in three ordinary ones (models/README.md).
    system_action: OnFlag | None = None

    def action_for(self, category: str | None) -> OnFlag:
        """The action on a flag whose top category is ``category`` (an S-code or None)."""
        if category is None:
            return self.action
        return self.categories.get(category, self.action)


@dataclass(frozen=True)
class Topic:
    """A topic rail: inputs close to one of ``examples`` get ``answer`` without the model;
    or, with ``route = "large"`` and no answer, go to the large model of ``auto``."""

    name: str
    examples: tuple[str, ...]
    threshold: float
    answer: str
    route: str = ""


@dataclass(frozen=True, eq=False)
class Policy:
    name: str
    version: str  # "<declared>+<sha256[:12]>"
    sha256: str  # of the file's bytes
    rules_config: Mapping[str, object]  # deep read-only; for RuleSet.from_config
    rule_set: RuleSet  # compiled from rules_config at load time
    injection: ClassifierPolicy
    safety: ClassifierPolicy
    directive: ClassifierPolicy = ClassifierPolicy(enabled=False)
    network: Budget = Budget()
    output: OutputPolicy = OutputPolicy()  # noqa: RUF009 (frozen: safe to share)
    topics: tuple[Topic, ...] = ()
    refusal: str = "I can't help with that request."
    description: str = ""
    path: Path | None = None


# --- parsing -----------------------------------------------------------------------------------

def _is(value: object, choices: tuple[str, ...]) -> bool:
    return isinstance(value, str) and value in choices


def _is_on_flag(value: object) -> TypeGuard[OnFlag]:
    return _is(value, _ON_FLAG)


def _is_fail(value: object) -> TypeGuard[FailMode]:
    return _is(value, _FAIL)


def _on_flag(value: object, where: str) -> OnFlag:
    if not _is_on_flag(value):
        raise ConfigError(f"{where} must be one of {list(_ON_FLAG)}, got {value!r}")
    return value


def _fail(value: object, where: str) -> FailMode:
    if not _is_fail(value):
        raise ConfigError(f"{where} must be 'block' (fail closed) or 'flag' (fail open), "
                          f"got {value!r}")
    return value


def _budget(table: Mapping[str, object], where: str, default_ms: float) -> Budget:
    ms = table.get("budget_ms", default_ms)
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms <= 0:
        raise ConfigError(f"{where}.budget_ms must be a positive number, got {ms!r}")
    return Budget(float(ms), _fail(table.get("on_timeout", "block"), f"{where}.on_timeout"),
                  _fail(table.get("on_error", "block"), f"{where}.on_error"))


def _classifier(raw: object, where: str,
                keys: frozenset[str] = _CLASSIFIER_KEYS) -> ClassifierPolicy:
    table = _table(raw, where, keys)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled must be true or false, got {enabled!r}")
    threshold = _unit(table.get("threshold"), f"{where}.threshold")
    short_threshold = _unit(table.get("short_threshold", 1.0), f"{where}.short_threshold")
    short_words = table.get("short_words", 0)
    if isinstance(short_words, bool) or not isinstance(short_words, int) or short_words < 0:
        raise ConfigError(f"{where}.short_words must be a whole number >= 0, got "
                          f"{short_words!r}")
    categories: dict[str, OnFlag] = {}
    for code, action in _table(table.get("categories", {}), f"{where}.categories").items():
        if not _CATEGORY.fullmatch(code):
            raise ConfigError(f"{where}.categories: {code!r} is not an S-code like 'S6'")
        categories[code] = _on_flag(action, f"{where}.categories.{code}")
    system_action = table.get("system_action")
    return ClassifierPolicy(
        enabled=enabled, threshold=threshold,
        action=_on_flag(table.get("action", "block"), f"{where}.action"),
        system_action=None if system_action is None
        else _on_flag(system_action, f"{where}.system_action"),
        categories=MappingProxyType(categories), budget=_budget(table, where, 250.0),
        short_words=short_words, short_threshold=1.0 if short_threshold is None
        else short_threshold)


def _topics(raw: object) -> tuple[Topic, ...]:
    if not isinstance(raw, list):
        raise ConfigError("topics must be an array of tables ([[topics]])")
    topics = []
    for i, entry in enumerate(raw):
        where = f"topics[{i}]"
        row = _table(entry, where, _TOPIC_KEYS)
        examples = row.get("examples")
        if (not isinstance(examples, list) or not examples
                or not all(isinstance(e, str) and e.strip() for e in examples)):
            raise ConfigError(f"{where}.examples must be a non-empty array of strings")
        threshold = row.get("threshold", 0.75)
        if (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                or not 0.0 < threshold <= 1.0):
            raise ConfigError(f"{where}.threshold must be a number in (0, 1], got "
                              f"{threshold!r}")
        answer, route = (_text(row, k, where, "") if k in row else "" for k in ("answer",
                                                                                 "route"))
        if bool(answer) == bool(route) or route not in ("", "large"):
            raise ConfigError(f"{where} needs an answer, or route = \"large\" (not both)")
        topics.append(Topic(_text(row, "name", where, ""), tuple(examples), float(threshold),
                            answer, route))
    names = [t.name for t in topics]
    if len(set(names)) != len(names):
        raise ConfigError(f"topics: names must be unique, got {names}")
    return tuple(topics)


def _network(top: Mapping[str, object]) -> Budget:
    """The guard network's budget: ``[network]``, or ``[embedding]`` (its older name)."""
    if "network" in top and "embedding" in top:
        raise ConfigError("give [network] or [embedding] (its older name), not both")
    key = "embedding" if "embedding" in top else "network"
    return _budget(_table(top.get(key, {}), key, _BUDGET_KEYS), key, 1000.0)


def _freeze(value: object) -> object:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def parse_policy(data: bytes, *, source: str = "<policy>", path: Path | None = None) -> Policy:
    """A policy from the bytes of a TOML file; ConfigError naming ``source`` if it is bad."""
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"guard policy {source} is not valid TOML: {exc}") from exc
    try:
        top = _table(raw, "policy", _TOP_KEYS)
        name = _text(top, "name", "policy", "")
        version = top.get("version", "0")
        if not isinstance(version, str | int) or isinstance(version, bool):
            raise ConfigError(f"policy.version must be a string, got {version!r}")
        rules_config = _freeze(_table(top.get("rules", {}), "rules"))
        assert isinstance(rules_config, Mapping)
        rule_set = RuleSet.from_config(rules_config)
        classifiers = _table(top.get("classifiers", {}), "classifiers", _CLASSIFIER_IDS)
        sha = hashlib.sha256(data).hexdigest()
        return Policy(
            name=name, version=f"{version}+{sha[:12]}", sha256=sha,
            rules_config=rules_config, rule_set=rule_set,
            injection=_classifier(classifiers.get("prompt-injection", {}),
                                  "classifiers.prompt-injection", _INJECTION_KEYS),
            safety=_classifier(classifiers.get("content-safety", {}),
                               "classifiers.content-safety"),
            directive=_classifier(classifiers.get("directive", {"enabled": False}),
                                  "classifiers.directive"),
            network=_network(top),
            output=parse_output(top.get("output", {})),
            topics=_topics(top.get("topics", [])),
            refusal=_text(top, "refusal", "policy", Policy.refusal),
            description=str(top.get("description", "")), path=path)
    except ConfigError as exc:
        raise ConfigError(f"guard policy {source}: {exc}") from exc


def presets() -> tuple[str, ...]:
    """The names of the built-in policies."""
    return tuple(sorted(p.stem for p in POLICIES_DIR.glob("*.toml")))


def load_policy(name_or_path: str | Path) -> Policy:
    """A built-in preset by name (``"default"``, ``"clinic"``) or a TOML file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        path = Path(name_or_path)
    else:
        path = POLICIES_DIR / f"{text}.toml"
        if not path.is_file():
            raise ConfigError(f"no guard policy preset {text!r}; presets: {list(presets())}, "
                              f"or give the path of a .toml file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read guard policy {path}: {exc}") from exc
    return parse_policy(data, source=str(path), path=path.resolve())
