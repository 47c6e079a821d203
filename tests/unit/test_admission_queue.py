"""AdmissionQueue: slots, depth bound, fairness, timeouts, cancellation, per-key caps, drain."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from appliance.admission import AdmissionQueue, ManualClock, Permit
from appliance.errors import Overloaded, RateLimited

LONG = 3600.0  # a timeout the event-loop timers never reach during a test


async def _spin(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def _waiter(queue: AdmissionQueue, key: str, order: list[str], label: str,
            priority: int = 0) -> asyncio.Task[Permit]:
    async def run() -> Permit:
        permit = await queue.acquire_permit(key, priority)
        order.append(label)
        return permit

    return asyncio.ensure_future(run())


async def _grant_one_by_one(held: Permit, tasks: list[asyncio.Task[Permit]]) -> None:
    """Release the held permit, then each granted one, so waiters run one at a time."""
    held.release()
    for _ in tasks:
        await _spin()
        done = [t for t in tasks if t.done() and not t.result().released]
        assert len(done) == 1
        done[0].result().release()


async def test_free_slots_are_granted_at_once() -> None:
    queue = AdmissionQueue(slots=2, depth=4, timeout_s=LONG, clock=ManualClock())
    a = await queue.acquire_permit("a")
    b = await queue.acquire_permit("b")
    assert (a.waited_s, b.waited_s) == (0.0, 0.0)
    stats = queue.stats()
    assert (stats.running, stats.queued, stats.slots, stats.depth) == (2, 0, 2, 4)
    assert stats.degraded  # all slots busy
    a.release()
    a.release()  # idempotent
    assert queue.stats().running == 1
    b.release()
    assert queue.stats().running == 0


async def test_waiter_gets_the_released_permit_and_its_wait_is_measured() -> None:
    clock = ManualClock(50.0)
    queue = AdmissionQueue(slots=1, depth=4, timeout_s=LONG, clock=clock)
    held = await queue.acquire_permit("a")
    task = asyncio.ensure_future(queue.acquire_permit("b"))
    await _spin()
    assert not task.done()
    assert queue.stats().queued == 1
    clock.advance(2.5)
    held.release()
    permit = await task
    assert permit.waited_s == 2.5
    assert queue.stats().running == 1
    permit.release()


async def test_context_manager_releases_on_error() -> None:
    queue = AdmissionQueue(slots=1, depth=0, timeout_s=LONG, clock=ManualClock())
    with pytest.raises(ZeroDivisionError):
        async with queue.acquire("a"):
            assert queue.stats().running == 1
            _ = 1 / 0
    assert queue.stats().running == 0
    async with queue.acquire("a") as permit:
        assert permit.key == "a"


async def test_full_queue_refuses_immediately_with_retry_after() -> None:
    queue = AdmissionQueue(slots=1, depth=2, timeout_s=LONG, clock=ManualClock(),
                           fallback_hold_s=4.0)
    held = await queue.acquire_permit("a")
    waiters = [asyncio.ensure_future(queue.acquire_permit(k)) for k in ("b", "c")]
    await _spin()
    with pytest.raises(Overloaded) as refused:
        await queue.acquire_permit("d")
    assert refused.value.status == 503
    assert refused.value.retry_after == 12.0  # position 3 x 4 s per permit / 1 slot
    stats = queue.stats()
    assert (stats.queued, stats.utilisation, stats.degraded) == (2, 1.0, True)
    held.release()
    (await waiters[0]).release()
    (await waiters[1]).release()
    assert (queue.stats().running, queue.stats().queued) == (0, 0)


async def test_round_robin_between_keys_fifo_within_a_key() -> None:
    queue = AdmissionQueue(slots=1, depth=20, timeout_s=LONG, clock=ManualClock())
    held = await queue.acquire_permit("x")
    order: list[str] = []
    tasks = [_waiter(queue, "A", order, f"A{i}") for i in range(1, 6)]
    await _spin()
    tasks += [_waiter(queue, "B", order, "B1"), _waiter(queue, "C", order, "C1")]
    await _spin()
    tasks.append(_waiter(queue, "B", order, "B2"))
    await _spin()
    await _grant_one_by_one(held, tasks)
    assert order == ["A1", "B1", "C1", "A2", "B2", "A3", "A4", "A5"]


async def test_higher_priority_goes_first() -> None:
    queue = AdmissionQueue(slots=1, depth=20, timeout_s=LONG, clock=ManualClock())
    held = await queue.acquire_permit("x")
    order: list[str] = []
    tasks = [_waiter(queue, "low", order, "low1"), _waiter(queue, "low", order, "low2")]
    await _spin()
    tasks += [_waiter(queue, "high", order, "high1", priority=5),
              _waiter(queue, "mid", order, "mid1", priority=1)]
    await _spin()
    await _grant_one_by_one(held, tasks)
    assert order == ["high1", "mid1", "low1", "low2"]


async def test_one_busy_key_cannot_starve_another() -> None:
    queue = AdmissionQueue(slots=2, depth=200, timeout_s=LONG, clock=ManualClock())
    held = [await queue.acquire_permit("x"), await queue.acquire_permit("x")]
    order: list[str] = []
    tasks = [_waiter(queue, "bulk", order, "bulk") for _ in range(100)]
    await _spin()
    tasks.append(_waiter(queue, "single", order, "single"))
    await _spin()
    held[0].release()
    held[1].release()
    await _spin()
    assert "single" in order[:2]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if not t.cancelled():
            t.result().release()
    assert queue.stats().running == 0
    assert queue.stats().queued == 0


async def test_waiter_times_out_by_the_injected_clock() -> None:
    clock = ManualClock()
    queue = AdmissionQueue(slots=1, depth=4, timeout_s=30, clock=clock)
    held = await queue.acquire_permit("a")
    task = asyncio.ensure_future(queue.acquire_permit("b", max_concurrent=1))
    await _spin()
    clock.advance(29.9)
    assert queue.expire_overdue() == 0
    clock.advance(0.1)
    assert queue.expire_overdue() == 1
    with pytest.raises(Overloaded, match=r"waited 30\.0s"):
        await task
    assert queue.stats().queued == 0
    held.release()
    assert queue.stats().running == 0  # nobody was left waiting for the permit
    async with queue.acquire("b", max_concurrent=1):  # and b's count was freed
        assert queue.stats().running == 1


async def test_waiter_times_out_by_its_event_loop_timer() -> None:
    queue = AdmissionQueue(slots=1, depth=4, timeout_s=0.05, clock=time.monotonic)
    held = await queue.acquire_permit("a")
    started = time.monotonic()
    with pytest.raises(Overloaded):
        await queue.acquire_permit("b")
    assert 0.04 <= time.monotonic() - started < 2
    assert queue.stats().queued == 0
    held.release()


async def test_estimated_wait_beyond_the_timeout_is_refused_at_once() -> None:
    clock = ManualClock()
    queue = AdmissionQueue(slots=1, depth=10, timeout_s=15, clock=clock)
    first = await queue.acquire_permit("a")
    clock.advance(10)
    first.release()  # history: a permit is held 10 s, so 0.1 permits/s drain
    assert queue.stats().drain_rate == pytest.approx(0.1)
    held = await queue.acquire_permit("a")
    queued = asyncio.ensure_future(queue.acquire_permit("b"))  # position 1: ~10 s, fits
    await _spin()
    assert queue.stats().queued == 1
    with pytest.raises(Overloaded, match="estimated wait") as refused:
        await queue.acquire_permit("c")  # position 2: ~20 s > 15 s
    assert refused.value.retry_after == pytest.approx(20)
    held.release()
    (await queued).release()


async def test_without_history_the_estimate_refuses_nobody() -> None:
    queue = AdmissionQueue(slots=1, depth=10, timeout_s=1, clock=ManualClock(),
                           fallback_hold_s=100)
    held = await queue.acquire_permit("a")
    tasks = [asyncio.ensure_future(queue.acquire_permit(k)) for k in "bcd"]
    await _spin()
    assert queue.stats().queued == 3
    assert queue.stats().drain_rate is None
    held.release()
    for t in tasks:
        (await t).release()
    assert queue.stats().running == 0


async def test_per_key_concurrency_cap_is_a_429() -> None:
    queue = AdmissionQueue(slots=1, depth=10, timeout_s=LONG, clock=ManualClock(),
                           fallback_hold_s=3)
    running = await queue.acquire_permit("k", max_concurrent=2)
    queued = asyncio.ensure_future(queue.acquire_permit("k", max_concurrent=2))
    await _spin()
    with pytest.raises(RateLimited, match="concurrency limit") as refused:
        await queue.acquire_permit("k", max_concurrent=2)
    assert refused.value.status == 429
    assert refused.value.retry_after == 3
    other = asyncio.ensure_future(queue.acquire_permit("other", max_concurrent=2))
    await _spin()
    assert queue.stats().queued == 2  # another key is not affected
    running.release()
    (await queued).release()
    (await other).release()
    async with queue.acquire("k", max_concurrent=1):
        pass


async def test_cancelled_waiter_leaves_the_queue_at_once() -> None:
    queue = AdmissionQueue(slots=1, depth=10, timeout_s=LONG, clock=ManualClock())
    held = await queue.acquire_permit("a")
    gone = asyncio.ensure_future(queue.acquire_permit("b", max_concurrent=1))
    stays = asyncio.ensure_future(queue.acquire_permit("c"))
    await _spin()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert queue.stats().queued == 1
    held.release()
    permit = await stays
    assert permit.key == "c"
    assert queue.stats().running == 1
    permit.release()
    async with queue.acquire("b", max_concurrent=1):  # b's slot count was returned
        pass


async def test_granted_and_cancelled_at_once_passes_the_permit_on() -> None:
    queue = AdmissionQueue(slots=1, depth=10, timeout_s=LONG, clock=ManualClock())
    held = await queue.acquire_permit("a")
    unlucky = asyncio.ensure_future(queue.acquire_permit("b"))
    next_in_line = asyncio.ensure_future(queue.acquire_permit("c"))
    await _spin()
    held.release()  # grants b: its future is resolved, its task has not resumed yet
    unlucky.cancel()  # ...and the client goes away in the same instant
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    permit = await asyncio.wait_for(next_in_line, 2)
    assert queue.stats().running == 1
    permit.release()
    assert queue.stats().running == 0
    assert await queue.wait_idle(0.1)


async def test_cancelled_then_dispatched_before_its_handler_runs() -> None:
    queue = AdmissionQueue(slots=1, depth=10, timeout_s=LONG, clock=ManualClock())
    held = await queue.acquire_permit("a")
    cancelled = asyncio.ensure_future(queue.acquire_permit("b"))
    waiting = asyncio.ensure_future(queue.acquire_permit("c"))
    await _spin()
    cancelled.cancel()  # its future is cancelled now, its task's handler runs later
    held.release()  # dispatch must skip b, not hand it the permit
    permit = await waiting
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    stats = queue.stats()
    assert (stats.running, stats.queued) == (1, 0)
    permit.release()
    assert queue.stats().running == 0


async def test_random_cancellations_never_leak_permits() -> None:
    rng = random.Random(7)
    queue = AdmissionQueue(slots=3, depth=1000, timeout_s=LONG, clock=ManualClock())
    peak = 0

    async def client(i: int) -> None:
        nonlocal peak
        async with queue.acquire(f"k{i % 5}", priority=i % 2):
            peak = max(peak, queue.stats().running)
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(client(i)) for i in range(150)]
    for _ in range(60):
        await asyncio.sleep(0)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stats = queue.stats()
    assert (stats.running, stats.queued) == (0, 0)
    assert peak == 3
    assert await queue.wait_idle(0)


async def test_close_drains_running_and_refuses_queued_and_new() -> None:
    queue = AdmissionQueue(slots=1, depth=10, timeout_s=LONG, clock=ManualClock())
    running = await queue.acquire_permit("a")
    queued = asyncio.ensure_future(queue.acquire_permit("b"))
    await _spin()
    assert not await queue.wait_idle(0.01)
    queue.close()
    assert queue.stats().draining
    with pytest.raises(Overloaded, match="draining"):
        await queued
    with pytest.raises(Overloaded, match="draining"):
        await queue.acquire_permit("c")
    assert queue.stats().running == 1
    idle = asyncio.ensure_future(queue.wait_idle(5))
    await _spin()
    assert not idle.done()
    running.release()
    assert await idle


def test_stats_utilisation_and_degraded() -> None:
    queue = AdmissionQueue(slots=4, depth=10, timeout_s=LONG, clock=ManualClock())
    stats = queue.stats()
    assert (stats.utilisation, stats.degraded, stats.drain_rate) == (0.0, False, None)
    with pytest.raises(ValueError):
        AdmissionQueue(slots=0, depth=1, timeout_s=1)
    with pytest.raises(ValueError):
        AdmissionQueue(slots=1, depth=-1, timeout_s=1)


async def test_check_capacity_refuses_only_when_slots_and_queue_are_full() -> None:
    clock = ManualClock(0.0)
    queue = AdmissionQueue(slots=1, depth=1, timeout_s=30, clock=clock)
    queue.check_capacity()  # empty: fine
    held = await queue.acquire_permit("a")
    queue.check_capacity()  # a free queue place remains
    waiter = asyncio.ensure_future(queue.acquire_permit("b"))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as exc:
        queue.check_capacity()
    assert exc.value.retry_after is not None and exc.value.retry_after > 0
    held.release()
    (await waiter).release()
    queue.check_capacity()
    queue.close()
    with pytest.raises(Overloaded, match="draining"):
        queue.check_capacity()
