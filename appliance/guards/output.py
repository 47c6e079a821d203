"""The streamed output rail: generated text is released only after it has been checked.

``OutputBuffer`` holds text back and cuts it into windows: at the last sentence boundary in
the held text; early for the first window (a few words, for the time to first token); or
when a sentence runs longer than ``max_tokens`` tokens. A cut that is not at a sentence end
is made at a word boundary where no number or address and no rule phrase that has begun
would be split between a released window and a held one.
``OutputRail`` checks each window before it is released:

- the policy's output rules (diagnoses, dosing, ...) on the window together with the tail of
  the text already released, so a phrase split across two windows is still seen;
- secrets (block) and PII (redact) on the window itself;
- the guard network (when the policy asks for it: hate and sexual content, and in the clinic
  policy diagnoses and dose instructions addressed to the reader) on the window with the
  rest of its sentence released so far and the sentence before, through an async callable
  so it runs off the event loop.

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
_CLASSIFY_CONTEXT = 120
# A forced (mid-sentence) window keeps this much text back: longer than any output rule's
# phrase, so a phrase is either released whole after its check or not at all.
KEEP_CHARS = 64
# A word that may be part of a number or an address continuing in the next word.
_NUMERIC = re.compile(r"[0-9@]")


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
    """Text held back until it forms a window (one per response; not thread-safe).

    Windows are cut:

    - at the last sentence boundary in the held text;
    - for the first window of an answer, as soon as some whole words can be released (the
      time to first token is then one word and one check, not one sentence);
    - when ``max_tokens`` tokens have been held with no sentence end.

    The last two cut at a *safe* word boundary: the released text must not end in a word
    with digits or an ``@`` (a phone, card or account number, an address, may continue in
    the next word), nor in the beginning of a phrase an output rule catches
    (``ends_in_phrase``, given the held text up to a cut; the caller reads it after what was
    released: "you should take 400" waits for its "mg"). With no safe boundary the
    text stays held until one comes, a sentence ends, or the answer ends; a run past
    ``4 * KEEP_CHARS`` characters is cut at whitespace ``keep_chars`` before its end.
    """

    def __init__(self, max_tokens: int, *, ends_in_phrase: Callable[[str], bool],
                 clock: Callable[[], float] = time.perf_counter, keep_chars: int = KEEP_CHARS,
                 early_first: bool = True) -> None:
        self.max_tokens = max(1, max_tokens)
        self.keep_chars = keep_chars
        self._clock = clock
        self._ends_in_phrase = ends_in_phrase
        self._early = early_first  # the first window has not been cut yet
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
        ends = [m.end() for m in _BOUNDARY.finditer(self._held)]
        if ends:
            return [self._cut(ends[-1], sentence=True)]
        if self._early or self._tokens >= self.max_tokens:
            end = self._safe_end()
            if end:
                return [self._cut(end, sentence=False)]
            if len(self._held) > 4 * self.keep_chars:  # a run with no safe end: bounded
                limit = len(self._held) - self.keep_chars
                space = max(self._held.rfind(" ", 0, limit), self._held.rfind("\n", 0, limit))
                return [self._cut(space + 1 if space > 0 else limit, sentence=False)]
        return []

    def flush(self) -> Window | None:
        """The rest, at the end of the answer (it counts as a sentence end)."""
        if not self._held:
            return None
        return self._cut(len(self._held), sentence=True)

    def _safe_end(self) -> int:
        """The last word boundary the held text may be cut at (0: none)."""
        held = self._held
        end = len(held)
        while True:
            end = max(held.rfind(" ", 0, end), held.rfind("\n", 0, end))
            if end <= 0:
                return 0
            head = held[:end]
            word = head.split()[-1] if head.strip() else ""
            if word and not _NUMERIC.search(word) and not self._ends_in_phrase(head):
                return end + 1

    def _cut(self, end: int, *, sentence: bool) -> Window:
        now = self._clock()
        held_s = now - self._since if self._since is not None else 0.0
        window, self._held = self._held[:end], self._held[end:]
        self._early = False
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

    def ends_in_phrase(self, held: str) -> bool:
        """For the :class:`OutputBuffer`: whether held text, read after what this rail has
        released, ends in the beginning of an output rule's phrase (no window may end there)."""
        return self._rules.ends_in_phrase(self._released[-_CONTEXT_CHARS:] + held)

    async def check(self, window: Window) -> WindowVerdict:
        policy = self._rules.policy
        context = self._released[-_CONTEXT_CHARS:]
        verdict = self._rules.check_text(window.text, context=context)
        if verdict.violated and verdict.replacement is not None:
            return WindowVerdict("", verdict.replacement, verdict.rule, "block")
        text = verdict.redacted if verdict.redacted is not None else window.text
        if self._classify is not None and text.strip():
            # Every window is classified before release, with the part of its sentence
            # already released (and the end of the sentence before), so a sentence released
            # in pieces is judged whole at its last piece.
            label = await self._classify(_classifier_context(context) + text)
            if label is not None:
                message = policy.refusal
                if label == "directive" and policy.output.directive_message is not None:
                    message = policy.output.directive_message
                return WindowVerdict("", message, label, "block")
        self._released += text
        if verdict.redacted is not None:
            return WindowVerdict(text, None, verdict.rule, "redact")
        return WindowVerdict(text)


def _classifier_context(released: str) -> str:
    """What the classifier sees before a window: the released part of the current sentence
    and the sentence before it, at most ``_CLASSIFY_CONTEXT`` characters from a word start.
    (The network's cost grows with its input: a shorter context than the rules' keeps the
    check of each window cheap.)"""
    ends = [m.end() for m in _BOUNDARY.finditer(released)]
    start = ends[-2] if len(ends) >= 2 else 0
    if len(released) - start > _CLASSIFY_CONTEXT:
        start = len(released) - _CLASSIFY_CONTEXT
        space = released.find(" ", start)
        start = space + 1 if space >= 0 else start
    return released[start:]
