"""The streamed output rail: generated text is released only after it has been checked.

``OutputBuffer`` holds text back and cuts it into windows: at the last sentence boundary in
the held text, or, when a sentence runs longer than ``max_tokens`` tokens, at a whitespace
at least ``KEEP_CHARS`` characters before the end (so a word, an e-mail address or a rule
phrase that has begun is not split between a released window and a held one).
``OutputRail`` checks each window before it is released:

- the policy's output rules (diagnoses, dosing, ...) on the window together with the tail of
  the text already released, so a phrase split across two windows is still seen;
- secrets (block) and PII (redact) on the window itself;
- at sentence boundaries and at the end, the content-safety classifier (when the policy asks
  for it), through an async callable so it runs off the event loop.

A violation that replaces the answer ends the generation: nothing of the offending window is
released, and the caller sends the replacement with ``finish_reason="content_filter"``. A
redaction releases the masked window. The whole module is pure apart from that callable.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from appliance.guards.pipeline import OutputRules

# A sentence ends at . ! ? (and their CJK/ellipsis forms), possibly closed by quotes or
# brackets, followed by whitespace; or at a line break.
_BOUNDARY = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]]*\s+|\n")
_CONTEXT_CHARS = 240
# A forced (mid-sentence) window keeps this much text back: longer than any output rule's
# phrase, so a phrase is either released whole after its check or not at all.
KEEP_CHARS = 64


@dataclass(frozen=True)
class Window:
    text: str
    sentence: bool  # ends at a sentence boundary or at the end of the answer
    held_s: float  # how long its oldest character was held back


@dataclass(frozen=True)
class WindowVerdict:
    """What to do with one window: release ``text``, or end the answer with ``replacement``."""

    text: str
    replacement: str | None = None  # set: stop, send this with finish_reason content_filter
    rule: str | None = None  # the rule or guard that fired (block or redact)
    action: str = "allow"  # "allow" | "redact" | "block"


class OutputBuffer:
    """Text held back until it forms a window (one per response; not thread-safe)."""

    def __init__(self, max_tokens: int, clock: Callable[[], float] = time.perf_counter, *,
                 keep_chars: int = KEEP_CHARS) -> None:
        self.max_tokens = max(1, max_tokens)
        self.keep_chars = keep_chars
        self._clock = clock
        self._held = ""
        self._tokens = 0
        self._since: float | None = None

    def push(self, text: str, n_tokens: int = 1) -> list[Window]:
        if not text:
            return []
        if self._since is None:
            self._since = self._clock()
        self._held += text
        self._tokens += n_tokens
        out: list[Window] = []
        ends = [m.end() for m in _BOUNDARY.finditer(self._held)]
        if ends:
            out.append(self._cut(ends[-1], sentence=True))
        elif self._tokens >= self.max_tokens and len(self._held) > self.keep_chars:
            # Keep the last ``keep_chars`` back: a rule phrase that has begun ("you should
            # take 400 ...") is then still held when its end arrives, not half released.
            limit = len(self._held) - self.keep_chars
            space = max(self._held.rfind(" ", 0, limit), self._held.rfind("\n", 0, limit))
            out.append(self._cut(space + 1 if space > 0 else limit, sentence=False))
        return out

    def flush(self) -> Window | None:
        """The rest, at the end of the answer (always a sentence end for the classifier)."""
        if not self._held:
            return None
        return self._cut(len(self._held), sentence=True)

    def _cut(self, end: int, *, sentence: bool) -> Window:
        now = self._clock()
        held_s = now - self._since if self._since is not None else 0.0
        window, self._held = self._held[:end], self._held[end:]
        # The remainder is a fraction of a window: count it as one token, newly held.
        self._tokens = 1 if self._held else 0
        self._since = now if self._held else None
        return Window(window, sentence, held_s)


Classify = Callable[[str], Awaitable[str | None]]  # text -> the label that blocks, or None


class OutputRail:
    """Checks the windows of one answer in order (one per response)."""

    def __init__(self, rules: OutputRules, *, classify: Classify | None = None) -> None:
        self._rules = rules
        self._classify = classify
        self._released = ""

    async def check(self, window: Window) -> WindowVerdict:
        policy = self._rules.policy
        context = self._released[-_CONTEXT_CHARS:]
        verdict = self._rules.check_text(window.text, context=context)
        if verdict.violated and verdict.replacement is not None:
            return WindowVerdict("", verdict.replacement, verdict.rule, "block")
        text = verdict.redacted if verdict.redacted is not None else window.text
        if self._classify is not None and window.sentence and text.strip():
            label = await self._classify(context + text)
            if label is not None:
                return WindowVerdict("", policy.refusal, label, "block")
        self._released += text
        if verdict.redacted is not None:
            return WindowVerdict(text, None, verdict.rule, "redact")
        return WindowVerdict(text)
