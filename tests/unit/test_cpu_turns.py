"""CPU turn-taking: encoder work starts at once; the engine's next step waits for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from appliance.engine.cpu_turns import CpuTurns


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
    time.sleep(0.05)
    assert order == []  # the step waits while encoder work runs
    order.append("side-done")
    release.set()
    side.join(5)
    e.join(5)
    assert order == ["side-done", "step"]
    assert turns.engine_wait_s >= 0.04


def test_the_engine_keeps_stepping_between_frequent_side_work() -> None:
    turns = CpuTurns()
    steps = 0
    sides = 0
    stop = threading.Event()

    def engine() -> None:
        nonlocal steps
        while not stop.is_set():
            with turns.engine():
                time.sleep(0.002)
            steps += 1

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
    assert steps >= 20 and sides >= 20, (steps, sides)
