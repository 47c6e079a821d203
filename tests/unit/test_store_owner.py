"""The owner thread on its own: order, errors, the event-loop guard, close. The owned
object is a real SQLite connection on a file, as in the appliance."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.store.owner import Owner


class _Owned:
    """A SQLite connection that only its owner thread may touch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.closed_on: int | None = None

    def open(self) -> int:
        self.conn = sqlite3.connect(self.path)  # check_same_thread: only the owner may use it
        self.conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        return threading.get_ident()

    def insert(self, v: str) -> int:
        assert self.conn is not None
        with self.conn:
            return int(self.conn.execute("INSERT INTO t (v) VALUES (?)", [v]).lastrowid or 0)

    def close(self) -> None:
        assert self.conn is not None
        self.conn.close()
        self.closed_on = threading.get_ident()

    def values(self) -> list[str]:
        with sqlite3.connect(self.path) as conn:
            return [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id")]


@pytest.fixture
def owned(tmp_path: Path) -> _Owned:
    return _Owned(tmp_path / "owned.db")


@pytest.fixture
def owner(owned: _Owned) -> Iterator[Owner]:
    o = Owner("test-owner", label="test object")
    o.start(owned.open, teardown=owned.close)
    yield o
    o.close()


def test_setup_and_jobs_run_on_one_thread_in_submission_order(owned: _Owned) -> None:
    owner = Owner("test-owner", label="test object")
    thread = owner.start(owned.open, teardown=owned.close)
    assert thread != threading.get_ident()
    ids = [owner.call_sync(lambda i=i: owned.insert(f"v{i}")) for i in range(20)]
    assert ids == list(range(1, 21))
    owner.close()
    assert owned.closed_on == thread  # teardown ran on the owner thread
    assert owned.values() == [f"v{i}" for i in range(20)]


async def test_async_calls_resolve_in_submission_order(owner: Owner, owned: _Owned) -> None:
    done: list[int] = []

    async def one(i: int) -> int:
        row = await owner.call(lambda: owned.insert(str(i)))
        done.append(row)
        return row

    assert await asyncio.gather(*(one(i) for i in range(50))) == list(range(1, 51))
    assert owned.values() == [str(i) for i in range(50)]


def test_a_failing_job_raises_in_its_caller_and_the_owner_carries_on(owner: Owner,
                                                                    owned: _Owned) -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        owner.call_sync(fail)
    assert owner.call_sync(lambda: owned.insert("after")) == 1


async def test_a_failing_job_raises_in_its_awaiting_task(owner: Owner) -> None:
    def fail() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await owner.call(fail)
    assert await owner.call(lambda: 7) == 7


async def test_sync_call_is_refused_inside_an_event_loop(owner: Owner) -> None:
    with pytest.raises(RuntimeError, match="event loop"):
        owner.call_sync(lambda: None)


def test_call_sync_from_a_job_runs_inline(owner: Owner, owned: _Owned) -> None:
    def outer() -> int:
        return owner.call_sync(lambda: owned.insert("inner")) + 100

    assert owner.call_sync(outer) == 101


async def test_cancelling_the_awaiting_task_does_not_cancel_the_job(owner: Owner,
                                                                    owned: _Owned) -> None:
    gate = threading.Event()
    blocker = asyncio.ensure_future(owner.call(lambda: gate.wait(5)))
    task = asyncio.ensure_future(owner.call(lambda: owned.insert("queued")))
    await asyncio.sleep(0.01)
    task.cancel()
    gate.set()
    await blocker
    await owner.call(lambda: None)  # FIFO: the cancelled task's job ran before this one
    assert owned.values() == ["queued"]


async def test_close_lets_queued_jobs_finish_runs_last_then_refuses(owned: _Owned) -> None:
    owner = Owner("test-owner", label="test object")
    owner.start(owned.open, teardown=owned.close)
    gate = threading.Event()
    blocker = asyncio.ensure_future(owner.call(lambda: gate.wait(5)))
    pending = [asyncio.ensure_future(owner.call(lambda i=i: owned.insert(str(i))))
               for i in range(10)]
    await asyncio.sleep(0)  # every task has queued its job
    closing = asyncio.ensure_future(asyncio.to_thread(
        owner.close, last=lambda: owned.insert("last")))
    await asyncio.sleep(0.05)
    assert not closing.done()  # close waits for the queue
    gate.set()
    await closing
    await blocker
    assert await asyncio.gather(*pending) == list(range(1, 11))
    assert owned.values() == [*(str(i) for i in range(10)), "last"]
    assert owner.closed and not owner.is_alive() and owned.closed_on is not None
    with pytest.raises(RuntimeError, match="test object is closed"):
        await owner.call(lambda: None)
    owner.close()  # idempotent


def test_a_failing_last_job_is_logged_and_the_owner_still_stops(
        owned: _Owned, caplog: pytest.LogCaptureFixture) -> None:
    owner = Owner("test-owner", label="test object")
    owner.start(owned.open, teardown=owned.close)

    def fail() -> None:
        raise OSError("disk full")

    with caplog.at_level(logging.WARNING, logger="appliance.store.owner"):
        owner.close(last=fail)
    assert not owner.is_alive() and owned.closed_on is not None
    assert "closing job failed" in caplog.text and "disk full" in caplog.text


def test_a_failing_setup_propagates_and_closes_without_teardown(owned: _Owned) -> None:
    owner = Owner("test-owner", label="test object")

    def setup() -> None:
        raise sqlite3.OperationalError("unable to open database file")

    with pytest.raises(sqlite3.OperationalError):
        owner.start(setup, teardown=owned.close)
    assert owner.closed and not owner.is_alive() and owned.closed_on is None


async def test_a_base_exception_stops_the_owner_and_fails_every_waiting_caller(
        owner: Owner, owned: _Owned) -> None:
    gate = threading.Event()

    def wait_then_exit() -> None:
        gate.wait(5)
        raise SystemExit

    first = asyncio.ensure_future(owner.call(wait_then_exit))
    second = asyncio.ensure_future(owner.call(lambda: None))
    await asyncio.sleep(0)  # both queued
    gate.set()
    for task in (first, second):
        with pytest.raises(RuntimeError, match="owner thread stopped"):
            await task
    assert owned.closed_on is not None  # the teardown still ran
    with pytest.raises(RuntimeError, match="closed"):
        await owner.call(lambda: None)
