"""Turn-taking on the CPU between the engine and the encoder: the encoder goes first.

On a machine with few cores, llama.cpp's decode already uses every core (and, like the
encoder, is mostly bound by memory bandwidth). An encoder run (guards, cache, memory,
``/v1/embeddings``) at the same time as a decode step slows both.

``CpuTurns`` lets encoder work (``side()``) start at once and makes the engine wait, before
its next ``llama_decode`` (``engine()``), until no encoder work runs. A check that blocks a
request's first token is then as fast as on an idle machine, and the engine gives up
exactly the encoder's time, not more. It waits ``MAX_ENGINE_WAIT_S`` at most: two runs that
overlap (the guard threads, the encoder beside the guard network) can keep some run going
at every instant under a steady load of checks or embeddings, and would otherwise stop
generation for as long as the load lasts.

Measured on 2 cores, guards on, 32 requests per level (`appliance bench`): with the
engine yielding like this, 4 clients got 64.4 tok/s and a TTFT p95 of 862 ms, against
57.4 tok/s and 1347 ms with no turn-taking. An earlier variant that also made encoder
work wait for the step in progress doubled the time to first token (a check had to wait
for a whole prefill step) and ran input checks past their time budget at 16 clients.

The output rail's checks are side work the engine itself sets off: each step's text
completes windows that are checked before they are released. Handed to a guard thread the
usual way, they would start only after the engine had begun its next decode (the event loop
sees a step's text after the engine has moved on) and share the cores with it. So for text
that is checked the engine waits until the loop has handed the step on (``Settle``), and
those checks count as side work from the moment they are queued (``reserve``, the
``Reserving`` executor), not only while they run: they run before the next step, on the
cores it leaves free. Measured at 16 clients (guards on, 2 cores, 3 interleaved rounds):
189.7 tok/s before, 199.9 with this and two checks run at once, 193.6 with the latter alone.

``None`` in place of a ``CpuTurns`` means no turn-taking (the engine runs on a GPU, or the
``cpu_turns`` setting is off).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, Protocol, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

# How long the engine waits for the event loop to take a step's text before it decodes
# anyway: the loop handles a step's events in well under a millisecond when it is free; a
# loop busy with something long must not hold the engine.
SETTLE_S = 0.010
# The longest the engine waits for side work before a step: longer than a burst of input
# checks or a step's output checks take, far shorter than a stall anyone would notice.
MAX_ENGINE_WAIT_S = 0.050


class CpuTurns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._side = 0  # encoder runs in progress
        self.engine_wait_s = 0.0  # total time the engine waited for encoder work

    @contextlib.contextmanager
    def engine(self) -> Iterator[None]:
        with self._cond:
            if self._side:
                start = time.perf_counter()
                deadline = start + MAX_ENGINE_WAIT_S
                while self._side:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self.engine_wait_s += time.perf_counter() - start
        yield

    @contextlib.contextmanager
    def side(self) -> Iterator[None]:
        release = self.reserve()
        try:
            yield
        finally:
            release()

    def reserve(self) -> Callable[[], None]:
        """Count side work from now (queued, not yet running); call the returned function
        once when it is done or will never run."""
        with self._cond:
            self._side += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._cond:
                if released:
                    return
                released = True
                self._side -= 1
                if not self._side:
                    self._cond.notify_all()
        return release


class Reserves(Protocol):
    """What ``Reserving`` needs of a ``CpuTurns``."""

    def reserve(self) -> Callable[[], None]: ...


class Reserving(concurrent.futures.Executor):
    """An executor whose work counts as side work from the moment it is submitted."""

    def __init__(self, inner: concurrent.futures.Executor, turns: Reserves) -> None:
        self._inner = inner
        self._turns = turns

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args,
               **kwargs: _P.kwargs) -> concurrent.futures.Future[_T]:
        release = self._turns.reserve()
        try:
            future = self._inner.submit(fn, *args, **kwargs)
        except BaseException:
            release()
            raise
        # Done, failed or cancelled before it ran (a check past its budget): released.
        future.add_done_callback(lambda _: release())
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)


class Settle:
    """Set on the event loop once the consumers of one step's events have run (they queue
    their checks without waiting in between); the engine waits for it before its next step."""

    def __init__(self) -> None:
        self._done = threading.Event()

    def after_delivery(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop, right after the step's events were delivered. The consumers they
        woke run in the loop's next round and queue their checks there; the mark is set in
        the round after."""
        loop.call_soon(loop.call_soon, self._done.set)

    def wait(self, timeout: float = SETTLE_S) -> bool:
        return self._done.wait(timeout)


def engine_turn(turns: CpuTurns | None) -> contextlib.AbstractContextManager[None]:
    """``turns.engine()``, or nothing to wait for when there is no turn-taking."""
    return turns.engine() if turns is not None else contextlib.nullcontext()


def reserving(executor: concurrent.futures.Executor,
              turns: Reserves | None) -> concurrent.futures.Executor:
    """``executor`` whose work the engine's next step waits for from submission on (with
    turn-taking), else ``executor`` itself."""
    return Reserving(executor, turns) if turns is not None else executor
