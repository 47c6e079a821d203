"""Several async generators read at once, their items yielded as they come.

Each source is read by a task of its own, so one waiting (for the engine, for a guard) does
not hold back the others. Leaving early, or an error from any source, cancels the tasks and
closes every source (a generation's ``finally`` cancels its sequence).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Item(Generic[T]):
    """What a reader task hands over: an item, an error, or the end of its source."""

    source: int
    values: tuple[T, ...] = ()  # one item (empty for an error or the end)
    error: BaseException | None = None
    end: bool = False


async def _read(i: int, source: AsyncGenerator[T, None],
                out: asyncio.Queue[_Item[T]]) -> None:
    try:
        async for value in source:
            out.put_nowait(_Item(i, (value,)))
    except Exception as exc:  # handed to the reader of the merge, raised there
        out.put_nowait(_Item(i, error=exc))
        return
    out.put_nowait(_Item(i, end=True))


async def merged(sources: Sequence[AsyncGenerator[T, None]], *,
                 prime: bool = False) -> AsyncGenerator[T, None]:
    """The sources' items as they come. With ``prime``, nothing is yielded before every
    source has given its first item or ended: an error raised before any source's first
    item is raised before anything is yielded (so a response can still be a plain error)."""
    queue: asyncio.Queue[_Item[T]] = asyncio.Queue()
    tasks = [asyncio.create_task(_read(i, s, queue)) for i, s in enumerate(sources)]
    unstarted = set(range(len(sources))) if prime else set()
    held: list[T] = []
    live = len(sources)
    try:
        while live:
            item = await queue.get()
            if item.error is not None:
                raise item.error
            unstarted.discard(item.source)
            live -= item.end
            held.extend(item.values)
            if not unstarted:
                for value in held:
                    yield value
                held.clear()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for source in sources:
            with contextlib.suppress(Exception):
                await source.aclose()
