"""The event-loop side of one generation: an async iterator of engine events.

The engine thread hands a whole step's events to the loop in one
``call_soon_threadsafe``; ``Stream`` buffers them. ``cancel()`` (called by the consumer's
``finally``, e.g. when aiohttp cancels a handler whose client went away, or when an
``async for`` over the stream is left early) marks the sequence cancelled; the engine
drops it at its next step and frees its slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from appliance.engine.types import Event, Finished, GenerationRequest


class Stream:
    def __init__(self, request: GenerationRequest,
                 followers: tuple[Stream, ...] = ()) -> None:
        self.request = request
        # n sequences of one prompt: the others, which start from this one's prompt cache
        # once it is decoded (see Scheduler.fork).
        self.followers = followers
        self.cancelled = False  # read by the engine thread at every step
        self._events: deque[Event] = deque()
        self._wakeup = asyncio.Event()
        self._done = False

    # --- engine side (runs on the event loop, scheduled by the engine thread) -------------
    def _deliver(self, events: list[Event]) -> None:
        self._events.extend(events)
        self._wakeup.set()

    # --- consumer side ---------------------------------------------------------------------
    def cancel(self) -> None:
        if not self._done:
            self.cancelled = True

    async def next_events(self) -> list[Event]:
        """Wait for and return all events available now (at least one)."""
        while not self._events:
            self._wakeup.clear()
            await self._wakeup.wait()
        out = list(self._events)
        self._events.clear()
        if isinstance(out[-1], Finished):
            self._done = True
        return out

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            while not self._done:
                for event in await self.next_events():
                    yield event
        finally:
            self.cancel()
