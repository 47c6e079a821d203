"""The streamed output rail: generated text is released only after it has been checked.

``OutputBuffer`` holds text back and cuts it into windows: at the last sentence boundary in
the held text; early for the first window (a few words, for the time to first token); and
once ``window_tokens`` tokens are held (the policy's ``[output] window_tokens``: a few
tokens; 0 for whole sentences, where a sentence longer than ``max_tokens`` is cut). A cut
that is not at a sentence end is made at a word boundary where no number or address and no
rule phrase that has begun would be split between a released window and a held one.
``OutputRail`` checks each window before it is released:

- the policy's output rules (diagnoses, dosing, ...) on the window together with the tail of
  the text already released, so a phrase split across two windows is still seen;
- secrets (block) and PII (redact) on the window itself;
- the guard network (when the policy asks for it: hate and sexual content, and in the clinic
  policy diagnoses and dose instructions addressed to the reader), through an async callable
  so it runs off the event loop. It reads the window with the part of its sentence already
  released, and nothing before the sentence: a benign sentence before drowns the one being
  judged ("Thanks for your question." takes "Girls are too dumb for maths and science, it's
  just biology." from 0.86 to 0.06 on S10, and "Increase your insulin dose to 30" from 0.55
  to 0.21 on the directive label when "Insulin needs vary." comes first). Inside a sentence
  that read is capped at ``CLASSIFY_CONTEXT`` characters, and a flag there does not end the
  answer (the beginning of a sentence is not yet its meaning: "Immigrants are" may go on
  either way); it *holds* the window back, and the rest of its sentence with it, until the
  sentence can be judged whole. The window that ends a sentence is read with the *whole*
  sentence (up to ``SENTENCE_CHARS``): the sentence-level check, and there a flag ends the
  answer. It runs after the sentence's earlier windows were released: it withholds its own
  window and stops everything after it, it cannot recall what went out.

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
# The most of its sentence the network reads with a window inside it (about 25 of its
# tokens), and at the sentence's end (its cost grows with its input).
CLASSIFY_CONTEXT = 120
SENTENCE_CHARS = 600
_CLASSIFY_TAIL = SENTENCE_CHARS + 8  # the released text those read from
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
    # A small window inside a sentence: a flag of the guard network holds it back, with the
    # rest of its sentence, to be judged whole (a sentence's beginning is not yet its meaning)
    # instead of ending the answer. Rules, secrets and PII decide on every window.
    tentative: bool = False
    tokens: int = 1  # tokens of the engine's text it holds (about)


@dataclass(frozen=True)
class WindowVerdict:
    """What to do with one window: release ``text``, end the answer with ``replacement``, or
    (``action == "hold"``) keep it back to be checked again with more of its sentence."""

    text: str
    replacement: str | None = None  # set: stop, send this with finish_reason content_filter
    rule: str | None = None  # the rule or guard that fired (block, redact or hold)
    action: str = "allow"  # "allow" | "redact" | "block" | "hold"


class OutputBuffer:
    """Text held back until it forms a window (one per response; not thread-safe).

    Windows are cut:

    - at the last sentence boundary in the held text;
    - for the first window of an answer, as soon as some whole words can be released (the
      time to first token is then one word and one check, not one sentence);
    - once ``window_tokens`` tokens are held (0: never; windows are then whole sentences);
    - when ``max_tokens`` tokens have been held with no sentence end.

    The first and the third kinds are *tentative* (:attr:`Window.tentative`); a tentative
    window given back with :meth:`hold` stays held with the rest of its sentence (no more
    tentative windows until a sentence ends). All but sentence windows cut at a *safe* word
    boundary: the released text must not end in a word
    with digits or an ``@`` (a phone, card or account number, an address, may continue in
    the next word), nor in the beginning of a phrase an output rule catches
    (``ends_in_phrase``, given the held text up to a cut; the caller reads it after what was
    released: "you should take 400" waits for its "mg"). With no safe boundary the
    text stays held until one comes, a sentence ends, or the answer ends; a run past
    ``4 * KEEP_CHARS`` characters is cut at whitespace ``keep_chars`` before its end.
    """

    def __init__(self, max_tokens: int, *, ends_in_phrase: Callable[[str], bool],
                 window_tokens: int = 0, clock: Callable[[], float] = time.perf_counter,
                 keep_chars: int = KEEP_CHARS, early_first: bool = True) -> None:
        self.max_tokens = max(1, max_tokens)
        self.window_tokens = window_tokens
        self.keep_chars = keep_chars
        self._clock = clock
        self._ends_in_phrase = ends_in_phrase
        self._early = early_first  # the first window has not been cut yet
        self._holding = False  # a tentative window was held: whole sentences until one ends
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
        forced = self._tokens >= self.max_tokens
        tentative = not forced and not self._holding and (
            self._early or 0 < self.window_tokens <= self._tokens)
        if forced or tentative:
            end = self._safe_end()
            if end:
                return [self._cut(end, sentence=False, tentative=tentative)]
            if len(self._held) > 4 * self.keep_chars:  # a run with no safe end: bounded
                limit = len(self._held) - self.keep_chars
                space = max(self._held.rfind(" ", 0, limit), self._held.rfind("\n", 0, limit))
                return [self._cut(space + 1 if space > 0 else limit, sentence=False)]
        return []

    def hold(self, window: Window) -> None:
        """Take a tentative window back (before anything pushed after it): it is released
        only with the rest of its sentence (or ``max_tokens`` tokens), checked as a whole."""
        self._held = window.text + self._held
        self._tokens += window.tokens
        self._since = self._clock() - window.held_s
        self._holding = True

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

    def _cut(self, end: int, *, sentence: bool, tentative: bool = False) -> Window:
        now = self._clock()
        held_s = now - self._since if self._since is not None else 0.0
        window, self._held = self._held[:end], self._held[end:]
        self._early = False
        self._holding = self._holding and not sentence
        # The remainder is a fraction of a window: count it as one token, newly held.
        tokens = max(1, self._tokens - 1) if self._held else self._tokens
        self._tokens = 1 if self._held else 0
        self._since = now if self._held else None
        return Window(window, sentence, held_s, tentative, tokens)


# (text, tentative) -> the label that fires, or None; ``tentative``: a small window inside a
# sentence, where a label only holds the window back (a lower bar may apply).
Classify = Callable[[str, bool], Awaitable[str | None]]


class OutputRail:
    """Checks the windows of one answer in order (one per response)."""

    def __init__(self, rules: OutputRules, *, classify: Classify | None = None,
                 context_chars: int = CLASSIFY_CONTEXT) -> None:
        self._rules = rules
        self._classify = classify
        self._context_chars = context_chars  # the network's context inside a sentence
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
            # already released (capped inside the sentence); a window that ends a sentence
            # with all of it, so a sentence released in pieces is judged whole.
            seen = _classifier_context(self._released[-_CLASSIFY_TAIL:], self._context_chars,
                                       whole=window.sentence)
            label = await self._classify(seen + text, window.tentative)
            if label is not None and window.tentative:
                return WindowVerdict("", None, label, "hold")
            if label is not None:
                message = policy.refusal
                if label == "directive" and policy.output.directive_message is not None:
                    message = policy.output.directive_message
                return WindowVerdict("", message, label, "block")
        self._released += text
        if verdict.redacted is not None:
            return WindowVerdict(text, None, verdict.rule, "redact")
        return WindowVerdict(text)


def _classifier_context(released: str, limit: int, *, whole: bool) -> str:
    """What the classifier reads before a window: the released part of the current sentence,
    its last ``limit`` characters inside the sentence, its last ``SENTENCE_CHARS`` for the
    window ending it (``whole``). Cuts are made at a word start."""
    ends = [m.end() for m in _BOUNDARY.finditer(released)]
    current = ends[-1] if ends else 0  # where the current sentence starts
    return _tail(released, current, SENTENCE_CHARS if whole else limit)


def _tail(text: str, start: int, limit: int) -> str:
    """``text[start:]``, or its last ``limit`` characters from a word start."""
    if len(text) - start > limit:
        start = len(text) - limit
        space = text.find(" ", start)
        start = space + 1 if space >= 0 else start
    return text[start:]
