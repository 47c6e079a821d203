"""Server-sent events, as OpenAI-API servers stream them: one JSON object per event.

:class:`SseParser` takes lines and returns each event's data once a blank line ends it
(several ``data:`` lines joined by newlines; comments, ``event:``, ``id:`` and ``retry:``
fields skipped). :func:`sse_data` runs it over a stream of byte lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


class SseParser:
    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """One line without its line ending; the data of the event it ends, if any."""
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def end(self) -> str | None:
        """The last event, when the stream ends without a blank line after it."""
        return self.feed("")


async def sse_data(lines: AsyncIterable[bytes]) -> AsyncIterator[str]:
    parser = SseParser()
    async for raw in lines:
        data = parser.feed(raw.decode("utf-8").rstrip("\r\n"))
        if data is not None:
            yield data
    last = parser.end()
    if last is not None:
        yield last
