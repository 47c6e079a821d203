"""The rule tier: regex rules, blocklists and PII detectors over normalised text.

A :class:`RuleSet` is built once from plain config (see :mod:`appliance.guards.rule_config`
for its format): the built-in prompt-injection rules below (unless ``default_rules = false``),
the configured regex rules and blocklists, and the PII kinds to run with their actions.

``check(text)`` normalises the text (:func:`~appliance.guards.normalize.normalize`), runs
every rule, blocklist and PII detector over the normalised text and over each decoded payload
(a block inside a base64 payload blocks), and answers a frozen :class:`RuleVerdict`: the
strongest action of its hits (block > redact > flag > allow; "allow" when nothing hit), the
hits with their spans in the *original* text (for a hit inside a payload, the span of the
encoded payload), and ``redacted``: the original text with every redact-action span masked
(PII by its label, ``[EMAIL]``..., rules by their ``replacement``), or None when nothing is
to be redacted. An "allow" action only records the hit.

A rule that compiles but matches the empty string never hits. Bad config raises
:class:`~appliance.errors.ConfigError` naming the offending entry.

Cost: each built-in rule runs only when one of its trigger words is in the text, blocklists
are one alternation over the lower-cased text, and the PII detectors have cheap gates, so a
1,200-character prompt costs well under a millisecond; each configured regex rule adds one
scan of the text (and of each payload).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from appliance.errors import ConfigError
from appliance.guards.fold import SourceMap
from appliance.guards.normalize import normalize
from appliance.guards.pii import LABELS, Mask, PiiKind, apply_masks, find_pii
from appliance.guards.rule_config import parse_rules_config
from appliance.guards.rule_types import Action, RegexRule, strongest


@dataclass(frozen=True)
class RuleHit:
    rule: str  # the rule's or blocklist's name, or "pii:<kind>"
    category: str  # "injection", "pii", a configured category ...
    action: Action
    start: int  # span in the original text
    end: int
    source: str = "text"  # or the encoding of the payload it was found in: "base64" ...


@dataclass(frozen=True)
class RuleVerdict:
    action: Action
    hits: tuple[RuleHit, ...]
    redacted: str | None
    ms: float

    @property
    def blocked(self) -> bool:
        return self.action == "block"


# --- the built-in prompt-injection rules -------------------------------------------------------

_OVERRIDE = r"(?:ignore|disregard|forget|override|bypass)"
_EARLIER = r"(?:previous|prior|above|earlier|preceding|foregoing|former|original|initial)"
_ORDERS = (r"(?:instructions?|prompts?|rules|directions|directives|guidelines|commands|"
           r"context|guidance|programming|constraints|restrictions)")
_FILLER = r"(?:(?:all|any|of|the|your|my|these|those|every)\s+)*"

_EARLIER_WORDS = ("previous", "prior", "above", "earlier", "preceding", "foregoing", "former",
                  "original", "initial")
_VERBS = ("ignore", "disregard", "forget", "override", "bypass")

# (name, triggers, pattern): action block, category injection. Every match of a pattern
# contains one of its triggers, so a rule runs only on texts that have one.
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("injection.ignore-previous", _EARLIER_WORDS,
     rf"\b(?:ignore|disregard|forget)\s+{_FILLER}{_EARLIER}\s+{_ORDERS}"),
    ("injection.ignore-above-and", ("ignore",),
     r"\bignore\s+(?:all\s+)?(?:of\s+)?(?:the\s+|that\s+)?(?:above|previous)\s*(?:and|,)\s+"
     r"(?:instead\s+)?(?:say|print|output|write|respond|reply|tell|reveal|repeat)\b"),
    ("injection.disregard-system-prompt", ("system", "safety", "content"),
     rf"\b{_OVERRIDE}\s+(?:all\s+)?(?:of\s+)?(?:your|the|this)\s+(?:system\s+(?:prompt|message)"
     r"|safety\s+(?:guidelines|rules|filters?|policies|training)|content\s+polic(?:y|ies))\b"),
    ("injection.disregard-your-rules", _VERBS,
     rf"\b{_OVERRIDE}\s+(?:all\s+)?(?:of\s+)?your\s+"
     r"(?:instructions|guidelines|programming|rules|training|restrictions|constraints)\b"),
    ("injection.reveal-system-prompt", ("system", "initial", "hidden", "original", "verbatim"),
     r"\b(?:reveal|show|print|output|display|repeat|leak|dump|tell\s+me|give\s+me|share|"
     r"translate|summari[sz]e|rewrite|paraphrase|"
     r"what\s+(?:is|are|was|were))\s+(?:me\s+)?(?:all\s+)?your\s+(?:\w+\s+)?"
     r"(?:system\s+(?:prompt|message)|initial\s+(?:prompt|instructions)|hidden\s+"
     r"(?:prompt|instructions)|original\s+(?:prompt|instructions)|instructions\s+verbatim)"),
    ("injection.repeat-the-words-above", ("repeat",),
     r"\brepeat\s+(?:all\s+)?(?:of\s+)?the\s+(?:words|text|lines|sentences)\s+above\b"),
    ("injection.dan", ("dan", "stan", "dude", "aim", "anything"),
     r"\byou\s+are\s+now\s+(?:DAN|STAN|DUDE|AIM)\b|\byou\s+are\s+(?-i:DAN)\b"
     r"|(?-i:\bDAN\b)[^.!?]{0,60}\bdo\s+anything\s+now\b"
     r"|\bdo\s+anything\s+now\b[^.!?]{0,60}(?-i:\bDAN\b)"),
    ("injection.developer-mode", ("developer",),
     r"\b(?:act|acting|respond|roleplay|role-play)\s+as\b[^.!?]{0,40}\bdeveloper\s+mode\b"
     r"|\b(?:pretend|simulate|simulating|emulate)\b[^.!?]{0,30}\bdeveloper\s+mode\b"
     r"|\b(?:chatgpt|assistant|ai|model|llm|bot)\s+with\s+developer\s+mode\s+(?:enabled|on)\b"),
    ("injection.no-restrictions", ("restrictions", "filters", "limitations", "rules",
                                   "guidelines", "censorship", "unrestricted", "unfiltered",
                                   "uncensored", "jailbroken"),
     r"\byou\s+(?:are|have)\s+(?:now\s+)?(?:no|free\s+(?:from|of)|without)\s+(?:any\s+)?"
     r"(?:restrictions|filters|limitations|rules|guidelines|censorship)\b"
     r"|\bact\s+as\s+an?\s+(?:unrestricted|unfiltered|uncensored|jailbroken)\s+(?:ai|model|"
     r"assistant|chatbot)\b"),
    ("injection.forget-everything", ("forget", "disregard", "ignore"),
     r"\b(?:forget|disregard|ignore)\s+(?:everything|anything)\s+(?:above|previous|"
     r"prior|earlier|(?:that\s+)?you\s+(?:were|have\s+been)\s+told)\b"),
    ("injection.disable-filters", ("disable", "turn", "switch", "deactivate", "remove"),
     r"\b(?:disable|turn\s+off|switch\s+off|deactivate|remove)\s+(?:all\s+)?(?:of\s+)?your\s+"
     r"(?:safety\s+|content\s+)?(?:filters?|guardrails|safeguards|restrictions|moderation)\b"),
    ("injection.new-instructions-from", ("new",),
     r"\bnew\s+instructions?\s+from\s+(?:your\s+|the\s+)?(?:admin|administrator|developers?|"
     r"creators?|operators?|owners?|system)\b"),
    ("injection.system-override", ("override", "system"),
     r"\b(?-i:SYSTEM\s+OVERRIDE)\b|\bsystem\s+override\s*[:!]"
     r"|\b(?:new|updated)\s+system\s+(?:prompt|instructions?)\s*:"),
)


def default_rules() -> tuple[RegexRule, ...]:
    return tuple(RegexRule(name, re.compile(pattern, re.IGNORECASE), "block", "injection",
                           triggers=triggers)
                 for name, triggers, pattern in DEFAULT_RULES)


# --- the rule set ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Found:
    hit: RuleHit
    mask: str | None  # the label a redact-action hit is masked with


@dataclass(frozen=True, eq=False)
class RuleSet:
    """Compiled rules; immutable, so one instance can serve every thread."""

    rules: tuple[RegexRule, ...] = ()
    pii: Mapping[PiiKind, Action] = field(default_factory=lambda: MappingProxyType({}))
    records: tuple[re.Pattern[str], ...] = ()

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"rule names must be unique; repeated: {duplicates}")

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> RuleSet:
        """A rule set from a config table (see the module doc); raises ConfigError."""
        parsed = parse_rules_config(config)
        defaults = default_rules() if parsed.default_rules else ()
        return cls(defaults + parsed.rules, parsed.pii, parsed.records)

    def check(self, text: str) -> RuleVerdict:
        """Normalise ``text``, scan it and its decoded payloads (see the module doc)."""
        start = time.perf_counter()
        norm = normalize(text)
        found = list(self._scan(norm.text, "text"))
        if found and norm.changed:
            spans = norm.source_map()
            found = [_relocate(f, spans) for f in found]
        for payload in norm.payloads:
            found.extend(_Found(RuleHit(f.hit.rule, f.hit.category, f.hit.action,
                                        payload.start, payload.end, payload.encoding), f.mask)
                         for f in self._scan(payload.text, payload.encoding))
        unique = list(dict.fromkeys(found))
        hits = tuple(sorted((f.hit for f in unique), key=lambda h: (h.start, h.end, h.rule)))
        masks = [Mask(f.hit.start, f.hit.end, f.mask) for f in unique if f.mask is not None]
        return RuleVerdict(
            action=strongest(h.action for h in hits), hits=hits,
            redacted=apply_masks(text, masks) if masks else None,
            ms=(time.perf_counter() - start) * 1000.0)

    def _scan(self, text: str, source: str) -> Iterator[_Found]:
        low = text.replace("\u0130", "I").lower()  # the same length as text
        present: dict[str, bool] = {}

        def triggered(rule: RegexRule) -> bool:
            for word in rule.triggers:
                if word not in present:
                    present[word] = word in low
                if present[word]:
                    return True
            return not rule.triggers

        for rule in self.rules:
            if not triggered(rule):
                continue
            for m in rule.pattern.finditer(low if rule.lowercase else text):
                if m.end() > m.start():
                    hit = RuleHit(rule.name, rule.category, rule.action, m.start(), m.end(),
                                  source)
                    yield _Found(hit, rule.replacement if rule.action == "redact" else None)
        if self.pii:
            for match in find_pii(text, self.pii, records=self.records):
                action = self.pii[match.kind]
                hit = RuleHit(f"pii:{match.kind}", "pii", action, match.start, match.end,
                              source)
                yield _Found(hit, LABELS[match.kind] if action == "redact" else None)


def _relocate(found: _Found, spans: SourceMap) -> _Found:
    """A hit on the normalised text, with its span moved to the original text."""
    hit = found.hit
    start, end = spans.span(hit.start, hit.end)
    return _Found(RuleHit(hit.rule, hit.category, hit.action, start, end, hit.source),
                  found.mask)
