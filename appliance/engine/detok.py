"""Incremental detokenisation: bytes to text without broken UTF-8, and stop strings.

A token's piece may end inside a multi-byte UTF-8 character; ``Utf8Stream`` keeps the
incomplete tail until the next piece completes it (invalid bytes become U+FFFD, never an
exception; a tail left incomplete when the generation ends is dropped). ``StopMatcher``
releases text only once it cannot be the start of a stop string, so a stop string split
across tokens or chunks is still found and never shown. ``LogprobTrail`` releases the
log-probabilities of tokens with the text they begin.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from appliance.engine.types import TokenLogprob


class Utf8Stream:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)

    def cut(self) -> str:
        """The generation ends here (a length limit, the end of text): the bytes of a
        character it did not finish are dropped, never shown as U+FFFD."""
        self._decoder.reset()
        return ""


@dataclass(frozen=True)
class StopResult:
    text: str  # text safe to release now
    stopped: bool  # a stop string was found; text ends just before it


class StopMatcher:
    """Holds back any suffix that could begin a stop string."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def push(self, text: str) -> StopResult:
        if not self._stops:
            return StopResult(text, False)
        self._pending += text
        cut = -1
        for stop in self._stops:
            i = self._pending.find(stop)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            out = self._pending[:cut]
            self._pending = ""
            return StopResult(out, True)
        hold = self._held_suffix()
        out = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(self._pending) - hold :]
        return StopResult(out, False)

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def _held_suffix(self) -> int:
        best = 0
        pending = self._pending
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(pending)), best, -1):
                if pending.endswith(stop[:k]):
                    best = k
                    break
        return best


class LogprobTrail:
    """A sequence's log-probability entries not yet sent, released with their text.

    An entry goes out once the text released covers its token's last byte: text held back
    (half a character, a possible stop string, a window the output rail has not passed yet)
    holds its tokens back too, and a token cut by a stop string is never reported. Text that
    is not shown as generated (redacted by the output rail) is ``discard``-ed: the entries
    of every token with a byte in it are dropped, so none of them shows what it hid.
    """

    def __init__(self) -> None:
        self._entries: list[TokenLogprob] = []
        self._ends: list[int] = []  # byte offset just past each pending token
        self._sampled = 0  # bytes of every piece so far
        self._released = 0  # bytes of the text released (or discarded) so far

    def add(self, item: TokenLogprob) -> None:
        self._sampled += len(item.piece)
        self._entries.append(item)
        self._ends.append(self._sampled)

    def release(self, text: str) -> tuple[TokenLogprob, ...]:
        """The entries of the tokens whose text is now wholly released."""
        self._released += len(text.encode("utf-8"))
        return self._take(sum(1 for end in self._ends if end <= self._released))

    def discard(self, text: str) -> None:
        """``text`` was replaced before release: drop every token it touches (the first
        pending one, which ends past what was released before, and each that starts before
        the end of ``text``)."""
        if not text:
            return
        self._released += len(text.encode("utf-8"))
        touched = 1 + sum(1 for end in self._ends if end < self._released)
        self._take(min(touched, len(self._ends)))

    def rest(self) -> tuple[TokenLogprob, ...]:
        """Every entry not yet sent (the generation ended without a cut)."""
        return self._take(len(self._entries))

    def _take(self, k: int) -> tuple[TokenLogprob, ...]:
        out = tuple(self._entries[:k])
        del self._entries[:k], self._ends[:k]
        return out
