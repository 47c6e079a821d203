"""Several async generators merged: order as they come, priming, errors, closing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest

from appliance.pipeline.merge import merged


async def _ticks(name: str, n: int, delay: float, closed: list[str],
                 fail_at: int | None = None) -> AsyncGenerator[str, None]:
    try:
        for i in range(n):
            await asyncio.sleep(delay)
            if i == fail_at:
                raise ValueError(f"{name} failed")
            yield f"{name}{i}"
    finally:
        closed.append(name)


async def test_items_come_as_they_are_made_and_every_source_is_read() -> None:
    closed: list[str] = []
    got = [x async for x in merged([_ticks("a", 3, 0.3, closed),
                                    _ticks("b", 3, 0.005, closed)])]
    assert sorted(got) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert got[:3] == ["b0", "b1", "b2"]  # the fast one is not held back by the slow one
    assert sorted(closed) == ["a", "b"]


async def test_priming_waits_for_every_first_item_so_an_early_error_comes_first() -> None:
    closed: list[str] = []
    seen: list[str] = []
    with pytest.raises(ValueError, match="slow failed"):
        async for x in merged([_ticks("fast", 5, 0.001, closed),
                               _ticks("slow", 5, 0.05, closed, fail_at=0)], prime=True):
            seen.append(x)
    assert seen == []  # nothing was given out before the failure
    assert sorted(closed) == ["fast", "slow"]
    primed = [x async for x in merged([_ticks("a", 2, 0.01, closed),
                                       _ticks("b", 2, 0.03, closed)], prime=True)]
    assert sorted(primed) == ["a0", "a1", "b0", "b1"]


async def test_leaving_early_closes_every_source() -> None:
    closed: list[str] = []
    async with contextlib.aclosing(merged([_ticks("a", 100, 0.01, closed),
                                           _ticks("b", 100, 0.01, closed)])) as items:
        await anext(items)
    assert sorted(closed) == ["a", "b"]
