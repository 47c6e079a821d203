"""Tool calls read out of text that arrives in pieces (a streamed answer, a replayed one).

:class:`CallSplitter` releases content as soon as it cannot be the start of a call and
holds the rest: text that may be the beginning of a call marker, a call region until it
is complete (``</tool_call>``; for the syntaxes whose calls are the whole answer, the end),
and whitespace next to calls. Streamed or not, an answer goes through the same splitter,
so both read the same content and the same calls.
"""

from __future__ import annotations

from appliance.engine.chat import ToolCall
from appliance.structured.toolcalls import (
    HERMES_CLOSE,
    HERMES_OPEN,
    MISTRAL_MARK,
    PYTHON_TAG,
    CallFormat,
    parse_calls,
)

Piece = str | ToolCall


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``marker``."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class CallSplitter:
    def __init__(self, fmt: CallFormat) -> None:
        self._fmt = fmt
        self._held = ""  # content not released yet
        self._ws = ""  # whitespace released only once more content follows
        self._region: str | None = None  # a call region being read
        self._started = False  # content other than whitespace was released
        self.calls = 0

    @property
    def _anywhere(self) -> str:
        return {"hermes": HERMES_OPEN, "mistral": MISTRAL_MARK, "llama3": ""}[self._fmt.syntax]

    def _starts(self) -> tuple[str, ...]:
        """What opens a call region when it begins the answer."""
        if self._started:
            return ()
        return {"hermes": (), "mistral": ("[",), "llama3": ("{", PYTHON_TAG)}[self._fmt.syntax]

    def feed(self, text: str) -> list[Piece]:
        out: list[Piece] = []
        if self._region is not None:
            self._region += text
        else:
            self._held += text
        while self._step(out):
            pass
        return out

    def finish(self) -> list[Piece]:
        out: list[Piece] = []
        if self._region is not None:
            parsed = parse_calls(self._region, self._fmt)
            self._region = None
            self._content(parsed.content, out)
            self._emit(parsed.calls, out)
        self._content(self._held, out)
        self._held = ""
        if self.calls == 0 and self._ws:
            out.append(self._ws)
        return out

    # --- steps ----------------------------------------------------------------------------
    def _step(self, out: list[Piece]) -> bool:
        """Advance once; False when nothing more can be decided with the text so far."""
        if self._region is not None:
            if self._fmt.syntax != "hermes":
                return False  # the calls are the rest of the answer
            end = self._region.find(HERMES_CLOSE)
            if end < 0:
                return False
            end += len(HERMES_CLOSE)
            block, self._held = self._region[:end], self._region[end:]
            self._region = None
            parsed = parse_calls(block, self._fmt)
            if parsed.calls:
                self._emit(parsed.calls, out)
            else:
                self._content(block, out)
            return True
        return self._open(out)

    def _open(self, out: list[Piece]) -> bool:
        held, marker = self._held, self._anywhere
        at = held.find(marker) if marker else -1
        stripped = held.lstrip()
        if at < 0 and any(stripped.startswith(s) for s in self._starts()):
            at = len(held) - len(stripped)
        if at >= 0:
            self._content(held[:at], out)
            self._region, self._held = held[at:], ""
            return True
        keep = _partial_suffix(held, marker) if marker else 0
        if self._starts() and any(s.startswith(stripped) for s in self._starts()):
            keep = len(held)  # (only whitespace, or the start of a marker, so far)
        self._content(held[:len(held) - keep], out)
        self._held = held[len(held) - keep:]
        return False

    def _content(self, text: str, out: list[Piece]) -> None:
        text = self._ws + text
        body = text.rstrip()
        if not body:
            self._ws = text
            return
        if self.calls and not self._started:
            body = body.lstrip()  # (whitespace after a call, before text)
        self._ws = text[len(text.rstrip()):]
        self._started = True
        out.append(body)

    def _emit(self, calls: tuple[ToolCall, ...], out: list[Piece]) -> None:
        for call in calls:
            if self.calls and not self._fmt.parallel:
                continue
            self._ws = ""  # whitespace before a call is not content
            self.calls += 1
            out.append(call)
