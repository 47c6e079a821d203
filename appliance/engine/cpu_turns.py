"""Turn-taking on the CPU between the engine and the encoder: the encoder goes first.

On a machine with few cores, llama.cpp's decode already uses every core (and, like the
encoder, is mostly bound by memory bandwidth). An encoder run (guards, cache, memory,
``/v1/embeddings``) at the same time as a decode step slows both.

``CpuTurns`` lets encoder work (``side()``) start at once and makes the engine wait, before
its next ``llama_decode`` (``engine()``), until no encoder work runs. A check that blocks a
request's first token is then as fast as on an idle machine, and the engine gives up
exactly the encoder's time, not more. The engine cannot starve: encoder work only comes
with requests and windows of streamed text, a few milliseconds each.

Measured on 2 cores, guards on, 32 requests per level (`appliance bench`): with the
engine yielding like this, 4 clients got 64.4 tok/s and a TTFT p95 of 862 ms, against
57.4 tok/s and 1347 ms with no turn-taking. An earlier variant that also made encoder
work wait for the step in progress doubled the time to first token (a check had to wait
for a whole prefill step) and ran input checks past their time budget at 16 clients.

``None`` in place of a ``CpuTurns`` means no turn-taking (the engine runs on a GPU, or the
``cpu_turns`` setting is off).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


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
                while self._side:
                    self._cond.wait()
                self.engine_wait_s += time.perf_counter() - start
        yield

    @contextlib.contextmanager
    def side(self) -> Iterator[None]:
        with self._cond:
            self._side += 1
        try:
            yield
        finally:
            with self._cond:
                self._side -= 1
                if not self._side:
                    self._cond.notify_all()


def engine_turn(turns: CpuTurns | None) -> contextlib.AbstractContextManager[None]:
    """``turns.engine()``, or nothing to wait for when there is no turn-taking."""
    return turns.engine() if turns is not None else contextlib.nullcontext()
