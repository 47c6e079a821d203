"""One thread that owns a blocking native object and runs jobs on it, in order.

The SQLite writer connection and each hnswlib index are touched by exactly one thread: an
``Owner``. Any thread submits a job (a callable without arguments); the owner runs the
jobs one at a time in submission order and hands each result, or exception, back::

    owner = Owner("sqlite-writer", label="database app.db")
    owner.start(connect, teardown=disconnect)   # both on the owner thread; start blocks
    n = await owner.call(work)                  # event loop: never blocks it
    n = owner.call_sync(work)                   # threads without a running event loop
    owner.close()

``call`` resolves an asyncio future through ``loop.call_soon_threadsafe``. Cancelling the
awaiting task does not cancel a queued job: it still runs, and its result is dropped.
``call_sync`` runs the job inline when called from a job (the owner thread cannot wait for
itself) and refuses to run on a thread with a running event loop (``RuntimeError``).

A job that raises ``Exception`` hands it to its caller and the owner carries on. A
``BaseException`` (``SystemExit`` ...) stops the owner (it is logged): its caller, and
every job still queued, gets ``RuntimeError`` rather than waiting forever, and any later
call raises ``RuntimeError`` at once. ``teardown`` still runs.

``close()`` lets every queued job finish, then runs ``last`` (its failure is logged: it is
a tear-down, nobody waits for it), then ``teardown`` on the owner thread, and joins the
thread; later calls raise ``RuntimeError``. It is idempotent and blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class _Job:
    fn: Callable[[], Any]
    deliver: Callable[[bool, Any], None]  # (ok, result-or-exception)


def _settle(fut: asyncio.Future[Any] | concurrent.futures.Future[Any], ok: bool,
            value: Any) -> None:
    if fut.cancelled():  # the awaiting task was cancelled; the job ran anyway
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def refuse_in_event_loop(what: str) -> None:
    """``RuntimeError`` if this thread runs an event loop: blocking here would stall it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{what} would block the event loop; use the async version")


class Owner:
    """A thread running submitted jobs in order; see the module doc."""

    def __init__(self, name: str, *, label: str) -> None:
        self.label = label  # names the owned object in errors: "database /data/app.db"
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submissions against close
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._teardown: Callable[[], None] = lambda: None

    def start(self, setup: Callable[[], T], *,
              teardown: Callable[[], None] | None = None) -> T:
        """Start the thread, run ``setup`` on it first and return its result (blocking,
        like opening a file, even on an event-loop thread). If ``setup`` raises, the owner
        is closed and the exception propagates. ``teardown`` runs on the thread when it
        stops, after the last job."""
        started: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put(_Job(setup, lambda ok, value: _settle(started, ok, value)))
        if teardown is not None:
            self._teardown = teardown
        self._thread.start()
        try:
            return started.result()
        except BaseException:
            self._teardown = lambda: None  # setup failed: nothing to tear down
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def on_owner_thread(self) -> bool:
        return threading.current_thread() is self._thread

    # -- calls ------------------------------------------------------------------------------

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the owner thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            loop.call_soon_threadsafe(_settle, fut, ok, value)

        self._submit(_Job(fn, deliver))
        return await fut

    def call_sync(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the owner thread and wait for it (inline from a job)."""
        if self.on_owner_thread():
            return fn()
        refuse_in_event_loop(f"call_sync() on {self.label}")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit(_Job(fn, lambda ok, value: _settle(fut, ok, value)))
        return fut.result()

    def _submit(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.label} is closed")
            self._jobs.put(job)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self, last: Callable[[], object] | None = None) -> None:
        """Finish queued jobs, run ``last``, stop the thread. Idempotent; blocks."""
        if self.on_owner_thread():
            raise RuntimeError(f"{self.label}: close() from a job would wait for itself")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if last is not None:
                self._jobs.put(_Job(last, self._log_failure))
            self._jobs.put(None)
        if self._thread.ident is None:  # never started: no thread will take the queue
            self._fail_leftovers()
        else:
            self._thread.join()

    def _log_failure(self, ok: bool, value: Any) -> None:
        if not ok:
            log.warning("%s: the closing job failed", self.label, exc_info=value)

    # -- the owner thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if not self._run_one(job):
                    break
        finally:
            try:
                self._teardown()
            finally:
                self._fail_leftovers()

    def _run_one(self, job: _Job) -> bool:
        """Run one job and hand its outcome back; ``False``: the owner must stop."""
        try:
            result = job.fn()
        except Exception as exc:
            _deliver(job, False, exc)
        except BaseException as exc:
            # Not re-raised: on this thread it would only reach threading's excepthook.
            log.error("%s: a job raised %r; its owner thread stops", self.label, exc)
            _deliver(job, False, self._stopped(exc))
            return False
        else:
            _deliver(job, True, result)
        return True

    def _stopped(self, cause: BaseException | None = None) -> RuntimeError:
        error = RuntimeError(f"{self.label}: its owner thread stopped")
        error.__cause__ = cause
        return error

    def _fail_leftovers(self) -> None:
        # After a clean close nothing is queued behind the sentinel; after a BaseException
        # jobs may remain, and later calls must fail at once instead of queueing forever.
        with self._lock:
            self._closed = True
        while True:
            try:
                left = self._jobs.get_nowait()
            except queue.Empty:
                return
            if left is not None:
                _deliver(left, False, self._stopped())


def _deliver(job: _Job, ok: bool, value: Any) -> None:
    # RuntimeError: the caller's event loop is closed, nobody is waiting any more
    with contextlib.suppress(RuntimeError):
        job.deliver(ok, value)
