"""CPU turn-taking: encoder work starts at once; the engine's next step waits for it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from appliance.engine.cpu_turns import MAX_ENGINE_WAIT_S, CpuTurns, Reserving, Settle


def _held(turn: Callable[[], AbstractContextManager[None]]
          ) -> tuple[threading.Event, threading.Thread]:
    """A thread inside ``turn()`` until the returned event is set (it is inside on return)."""
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with turn():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(5)
    return release, thread


def test_side_work_never_waits_even_during_a_step() -> None:
    turns = CpuTurns()
    release, step = _held(turns.engine)
    start = time.perf_counter()
    with turns.side():
        pass
    assert time.perf_counter() - start < 0.05  # the step in progress did not hold it up
    release.set()
    step.join(5)


def test_the_engine_waits_for_side_work_before_its_next_step() -> None:
    turns = CpuTurns()
    order: list[str] = []
    release, side = _held(turns.side)

    def engine() -> None:
        with turns.engine():
            order.append("step")

    e = threading.Thread(target=engine)
    e.start()
    time.sleep(MAX_ENGINE_WAIT_S / 5)
    order.append("side-done")  # the step waits while encoder work runs: not yet in order
    release.set()
    side.join(5)
    e.join(5)
    assert order == ["side-done", "step"]
    assert turns.engine_wait_s >= MAX_ENGINE_WAIT_S / 5 - 0.005


def test_the_engine_waits_for_long_side_work_only_so_long() -> None:
    turns = CpuTurns()
    release, side = _held(turns.side)
    start = time.perf_counter()
    with turns.engine():
        waited = time.perf_counter() - start
    release.set()
    side.join(5)
    assert MAX_ENGINE_WAIT_S - 0.005 <= waited < MAX_ENGINE_WAIT_S + 0.5


class _Engine:
    """An engine thread's loop: 2 ms steps, each after its turn, until ``stop`` is set."""

    def __init__(self, turns: CpuTurns, stop: threading.Event) -> None:
        self.turns, self.stop, self.steps = turns, stop, 0

    def __call__(self) -> None:
        while not self.stop.is_set():
            with self.turns.engine():
                time.sleep(0.002)
            self.steps += 1


def test_the_engine_keeps_stepping_between_frequent_side_work() -> None:
    turns = CpuTurns()
    sides = 0
    stop = threading.Event()
    engine = _Engine(turns, stop)

    def side() -> None:
        nonlocal sides
        while not stop.is_set():
            with turns.side():
                time.sleep(0.001)
            sides += 1
            time.sleep(0.003)

    threads = [threading.Thread(target=engine), threading.Thread(target=side),
               threading.Thread(target=side)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(5)
    assert engine.steps >= 20 and sides >= 20, (engine.steps, sides)


def test_the_engine_steps_under_side_work_that_never_pauses() -> None:
    # Two workers whose runs overlap: at every instant one of them runs.
    turns = CpuTurns()
    stop = threading.Event()
    engine = _Engine(turns, stop)

    def side() -> None:
        while not stop.is_set():
            with turns.side():
                time.sleep(0.004)

    workers = [threading.Thread(target=side) for _ in range(2)]
    workers[0].start()
    time.sleep(0.002)
    workers[1].start()
    stepper = threading.Thread(target=engine)
    stepper.start()
    time.sleep(0.5)
    stop.set()
    for t in [*workers, stepper]:
        t.join(5)
    # At most MAX_ENGINE_WAIT_S per step: about nine steps in half a second, not none.
    assert engine.steps >= 5, engine.steps


def _engine_waits(turns: CpuTurns) -> bool:
    """Whether the engine's next step waits now (it does, up to ``MAX_ENGINE_WAIT_S``, only
    while side work is counted)."""
    before = turns.engine_wait_s
    with turns.engine():
        pass
    return turns.engine_wait_s > before


def test_reserved_work_holds_the_engine_from_submission_until_it_is_done() -> None:
    turns = CpuTurns()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        gate = threading.Event()
        busy = pool.submit(gate.wait, 5)  # the only worker is taken: the next one queues
        queued = Reserving(pool, turns).submit(lambda: "checked")
        assert not queued.running()
        assert _engine_waits(turns)  # queued, not running, and the engine waits for it
        gate.set()
        assert busy.result(5) and queued.result(5) == "checked"
    assert not _engine_waits(turns)


def test_reserved_work_cancelled_before_it_ran_releases_the_engine() -> None:
    turns = CpuTurns()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        gate = threading.Event()
        pool.submit(gate.wait, 5)
        queued = Reserving(pool, turns).submit(lambda: None)
        assert queued.cancel()  # a check past its budget, dropped before it ran
        assert not _engine_waits(turns)
        gate.set()


def test_reserved_work_that_raises_releases_the_engine() -> None:
    turns = CpuTurns()

    def fail() -> None:
        raise ValueError("no model")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = Reserving(pool, turns).submit(fail)
        assert isinstance(future.exception(5), ValueError)
    assert not _engine_waits(turns)


def test_a_release_called_twice_counts_once() -> None:
    turns = CpuTurns()
    first, second = turns.reserve(), turns.reserve()
    first()
    first()
    assert _engine_waits(turns)  # the second reservation still holds
    second()
    assert not _engine_waits(turns)


def test_settle_is_set_after_the_woken_consumers_ran() -> None:
    order: list[str] = []  # appended by the loop and by the "engine" thread

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wakeup = asyncio.Event()
        settle = Settle()

        async def consumer() -> None:
            await wakeup.wait()
            time.sleep(0.05)  # its work before it queues a check (the engine must not start)
            order.append("consumer queued its check")

        task = asyncio.create_task(consumer())
        await asyncio.sleep(0)  # the consumer waits

        def deliver() -> None:  # what the engine hands the loop for one step
            wakeup.set()
            settle.after_delivery(loop)

        def engine() -> None:
            loop.call_soon_threadsafe(deliver)
            assert settle.wait(5)
            order.append("engine steps")

        thread = threading.Thread(target=engine)
        thread.start()
        await task
        await asyncio.to_thread(thread.join, 5)

    asyncio.run(main())
    assert order == ["consumer queued its check", "engine steps"]


def test_settle_gives_up_when_the_loop_does_not_come() -> None:
    start = time.perf_counter()
    assert not Settle().wait(0.02)
    assert time.perf_counter() - start < 1.0
