"""Text normalisation for the rule tier: one canonical form to match on, plus hidden payloads.

``normalize(text)`` answers a frozen :class:`Normalized`:

- ``text``: the text folded by :func:`appliance.guards.fold.normalize_text` (invisible
  characters removed, NFKC, look-alike letters folded to Latin, whitespace collapsed).
- ``decoded``: the hidden payloads' texts (:mod:`appliance.guards.payloads`: base64, hex,
  rot13, tag characters, variation selectors), decoded and folded the same way, so that the
  rules scan them too.
- ``payloads``: the same, each with its encoding and the span of its *encoded* form in the
  original text (what a redaction masks).
- ``changed``: whether ``text`` differs from the input.

``Normalized.source_map()`` maps a span of ``text`` back to the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.guards.fold import SourceMap, fold, source_map
from appliance.guards.payloads import Payload, find_payloads


@dataclass(frozen=True)
class Normalized:
    """The result of :func:`normalize`; ``source`` is the original text."""

    text: str
    decoded: tuple[str, ...] = ()
    changed: bool = False
    source: str = ""
    payloads: tuple[Payload, ...] = ()

    def source_map(self) -> SourceMap:
        """The span map back to ``source`` (computed on demand: O(len(source)))."""
        return source_map(self.source)


def normalize(text: str) -> Normalized:
    """Normalise ``text`` for matching and decode its hidden payloads (see the module doc)."""
    words = fold(text).split()
    norm = " ".join(words)
    payloads = find_payloads(text, norm, words)
    return Normalized(text=norm, decoded=tuple(p.text for p in payloads), changed=norm != text,
                      source=text, payloads=payloads)
