"""A bounded, fair admission queue in front of the decoding slots.

``AdmissionQueue(slots, depth, timeout_s, clock)`` hands out ``slots`` permits (one per
sequence the engine decodes at once). A request that finds none free waits in a queue of
at most ``depth`` waiters::

    async with queue.acquire(key.name, priority=key.priority,
                             max_concurrent=key.max_concurrent) as permit:
        ...generate...            # the permit is released on exit, whatever happens

(``await queue.acquire_permit(...)`` returns the ``Permit`` for a caller that must release
it later, say when a stream ends; ``Permit.release()`` is idempotent.)

Refusals are immediate and typed, so the web layer answers 429/503 with ``Retry-After``:

* ``RateLimited`` (429): the key already has ``max_concurrent`` requests running or queued.
  This is the client's own limit, not the server's state, hence 429 rather than 503;
  ``retry_after`` is the expected time for one permit to be released.
* ``Overloaded`` (503): the queue already holds ``depth`` waiters; or the estimated wait
  exceeds ``timeout_s``; or a waiter has waited ``timeout_s`` without a permit; or the
  queue is draining (``close()``).

Estimates (:mod:`appliance.admission.estimate`): a newcomer's wait is its position divided by
the drain rate, learnt from how long permits are held. Fairness
(:mod:`appliance.admission.fairness`): by priority, then round-robin between keys, then first
come first served.

Cancellation. A waiter whose task is cancelled (client gone) leaves the queue at once. If
the cancellation lands just after the waiter was granted but before it resumed, the
permit is released to the next waiter: no permit ever leaks.

Time. The injected ``clock`` measures waits, holds and deadlines. Waiters are timed out by
event-loop timers that re-check the clock; with a manual clock, tests call
``expire_overdue()`` after advancing it.

``stats()`` returns a :class:`~appliance.admission.estimate.QueueStats` for ``/health`` and
metrics. ``close()`` starts draining: new requests and those still queued get
``Overloaded`` ("draining"), running ones finish; ``await wait_idle(timeout)`` waits for
them. All methods must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator

from appliance.admission.clock import Clock
from appliance.admission.estimate import DrainEstimate, QueueStats
from appliance.admission.fairness import FairOrder
from appliance.errors import Overloaded, RateLimited


class _State(enum.Enum):
    QUEUED = 1
    GRANTED = 2
    GONE = 3  # cancelled, timed out or refused while queued


class _Waiter:
    __slots__ = ("deadline", "enqueued_at", "future", "granted_at", "key", "priority",
                 "state", "timer")

    def __init__(self, key: str, priority: int, future: asyncio.Future[None],
                 enqueued_at: float, deadline: float) -> None:
        self.key = key
        self.priority = priority
        self.future = future
        self.enqueued_at = enqueued_at
        self.deadline = deadline
        self.granted_at = 0.0
        self.state = _State.QUEUED
        self.timer: asyncio.TimerHandle | None = None


class Permit:
    """One decoding slot, held until ``release()`` (idempotent)."""

    __slots__ = ("_queue", "_released", "granted_at", "key", "waited_s")

    def __init__(self, queue: AdmissionQueue, key: str, granted_at: float,
                 waited_s: float) -> None:
        self._queue = queue
        self._released = False
        self.key = key
        self.granted_at = granted_at
        self.waited_s = waited_s

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._queue._release(self.key, self.granted_at)


class AdmissionQueue:
    """``slots`` permits, a fair queue of at most ``depth`` waiters; see the module doc."""

    def __init__(
        self,
        slots: int,
        depth: int,
        timeout_s: float,
        clock: Clock = time.monotonic,
        *,
        fallback_hold_s: float = 10.0,
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if depth < 0:
            raise ValueError("depth must not be negative")
        if timeout_s <= 0 or fallback_hold_s <= 0:
            raise ValueError("timeouts must be positive")
        self.slots = slots
        self.depth = depth
        self.timeout_s = timeout_s
        self._clock = clock
        self._estimate = DrainEstimate(slots, fallback_hold_s)
        self._running = 0
        self._queued = 0
        self._per_key: dict[str, int] = {}  # running + queued
        self._order: FairOrder[_Waiter] = FairOrder()
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- public ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(
        self, key: str, priority: int = 0, max_concurrent: int | None = None
    ) -> AsyncIterator[Permit]:
        """Hold one permit for the ``async with`` block; see ``acquire_permit``."""
        permit = await self.acquire_permit(key, priority, max_concurrent)
        try:
            yield permit
        finally:
            permit.release()

    async def acquire_permit(
        self, key: str, priority: int = 0, max_concurrent: int | None = None
    ) -> Permit:
        """Wait for a permit; raise ``RateLimited``/``Overloaded`` as the module doc says."""
        self._refuse_if_draining()
        now = self._clock()
        held = self._per_key.get(key, 0)
        if max_concurrent is not None and held >= max_concurrent:
            err = RateLimited(
                f"API key {key!r} already has {held} requests running or queued, its "
                f"concurrency limit ({max_concurrent}).",
                retry_after=self._estimate.hold(),
            )
            err.kind = "concurrency"
            raise err
        if self._running < self.slots and self._queued == 0:
            self._running += 1
            self._per_key[key] = held + 1
            self._idle.clear()
            return Permit(self, key, now, 0.0)
        position = self._order.position(key, priority)
        if self._queued >= self.depth:
            raise Overloaded(
                f"The server is overloaded: {self._queued} requests are already queued.",
                retry_after=self._estimate.wait_for(position),
            )
        if self._estimate.known and (wait := self._estimate.wait_for(position)) > self.timeout_s:
            raise Overloaded(
                f"The server is overloaded: the estimated wait ({wait:.1f}s) exceeds the "
                f"queue timeout ({self.timeout_s:g}s).",
                retry_after=wait,
            )
        return await self._wait(key, priority, now)

    def check_capacity(self) -> None:
        """Refuse now if a request arriving this instant could not even queue (draining,
        or slots and queue all taken): lets a handler answer 503 before reading the body
        or tokenising the prompt. ``acquire_permit`` still makes the binding decision."""
        self._refuse_if_draining()
        if self._running >= self.slots and self._queued >= self.depth:
            raise Overloaded(
                f"The server is overloaded: {self._queued} requests are already queued.",
                retry_after=self._estimate.wait_for(self._queued + 1),
            )

    def _refuse_if_draining(self) -> None:
        if self._draining:
            raise Overloaded("The server is draining for shutdown and takes no new "
                             "requests.", retry_after=self._estimate.wait_for(1))

    def stats(self) -> QueueStats:
        return QueueStats(
            running=self._running,
            queued=self._queued,
            slots=self.slots,
            depth=self.depth,
            drain_rate=self._estimate.drain_rate(),
            draining=self._draining,
        )

    def expected_hold(self) -> float:
        """The expected time for one permit to be released (seconds)."""
        return self._estimate.hold()

    def held(self, key: str) -> int:
        """Permits held and places queued by ``key``."""
        return self._per_key.get(key, 0)

    def expire_overdue(self) -> int:
        """Time out every waiter whose deadline has passed by the clock; return how many."""
        now = self._clock()
        overdue = [w for w in self._order if w.deadline <= now]
        for w in overdue:
            self._expire(w)
        return len(overdue)

    def close(self) -> None:
        """Start draining: refuse new requests and queued ones; running ones finish."""
        self._draining = True
        for w in list(self._order):
            self._drop(w, Overloaded("The server is draining for shutdown.",
                                     retry_after=self._estimate.wait_for(1)))
        self._update_idle()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing runs or waits; ``False`` if ``timeout`` (s) passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- waiting --------------------------------------------------------------------------

    async def _wait(self, key: str, priority: int, now: float) -> Permit:
        loop = asyncio.get_running_loop()
        w = _Waiter(key, priority, loop.create_future(), now, now + self.timeout_s)
        self._order.add(w)
        self._queued += 1
        self._per_key[key] = self._per_key.get(key, 0) + 1
        self._idle.clear()
        w.timer = loop.call_later(self.timeout_s, self._on_timer, w)
        try:
            await w.future
        except asyncio.CancelledError:
            if w.state is _State.GRANTED:
                # granted, then cancelled before it could resume: pass the permit on
                self._release(key, w.granted_at)
            elif w.state is _State.QUEUED:
                self._drop(w, None)
                self._update_idle()
            raise
        return Permit(self, key, w.granted_at, w.granted_at - w.enqueued_at)

    def _on_timer(self, w: _Waiter) -> None:
        if w.state is not _State.QUEUED:
            return
        left = w.deadline - self._clock()
        if left <= 0:
            self._expire(w)
        else:
            w.timer = asyncio.get_running_loop().call_later(left, self._on_timer, w)

    def _expire(self, w: _Waiter) -> None:
        waited = self._clock() - w.enqueued_at
        self._drop(w, Overloaded(
            f"The server is overloaded: the request waited {waited:.1f}s for a free slot "
            f"(queue timeout {self.timeout_s:g}s).",
            retry_after=self._estimate.wait_for(self._queued),
        ))
        self._update_idle()

    def _drop(self, w: _Waiter, error: Exception | None) -> None:
        """Take a queued waiter out of the queue; fail its future with ``error``."""
        w.state = _State.GONE
        if w.timer is not None:
            w.timer.cancel()
        self._order.remove(w)
        self._queued -= 1
        self._decrement(w.key)
        if error is not None and not w.future.done():
            w.future.set_exception(error)

    # -- granting -------------------------------------------------------------------------

    def _release(self, key: str, granted_at: float) -> None:
        now = self._clock()
        self._running -= 1
        self._decrement(key)
        self._estimate.observe(now - granted_at)
        self._dispatch(now)
        self._update_idle()

    def _dispatch(self, now: float) -> None:
        while self._running < self.slots and self._queued:
            w = self._order.head()
            if w.future.done():
                # cancelled, but its task has not run its handler yet: skip it here
                self._drop(w, None)
                continue
            self._order.pop(w)
            self._queued -= 1
            w.state = _State.GRANTED
            w.granted_at = now
            if w.timer is not None:
                w.timer.cancel()
            self._running += 1
            w.future.set_result(None)

    def _decrement(self, key: str) -> None:
        n = self._per_key[key] - 1
        if n:
            self._per_key[key] = n
        else:
            del self._per_key[key]

    def _update_idle(self) -> None:
        if self._running == 0 and self._queued == 0:
            self._idle.set()
        else:
            self._idle.clear()
