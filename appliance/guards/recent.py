"""The results of a pure, costly function of a text, kept for the texts asked for last.

The input rail meets the same texts again and again: an application's system prompt on
every request, a conversation's tool results and pasted documents on every later turn, a
client's retry. ``Recent.get`` keeps the last ``size`` results by the text's sha256 (the
texts themselves can be long), and a text that another thread is computing at that moment is
waited for, not computed twice: a burst of requests sharing a system prompt scores it once,
where each would otherwise wait its turn for the one guard session to score it again.

Only for functions whose result depends on the text alone (the guard network's runs are
never batched, so its scores are; see :mod:`appliance.guards.guardnet`).

``Recent.peek`` answers from what is kept without computing anything, so a caller on the
event loop can skip the hand-over to a worker thread when the answer is already known.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Recent(Generic[T]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._done: OrderedDict[bytes, T] = OrderedDict()
        self._running: dict[bytes, concurrent.futures.Future[T]] = {}
        self._lock = threading.Lock()
        self.reused = 0  # answers given without computing (kept or waited for)

    def __len__(self) -> int:
        return len(self._done)

    def peek(self, text: str) -> T | None:
        """The kept result for ``text``, or None (nothing is computed or waited for)."""
        key = _key(text)
        with self._lock:
            return self._kept(key)

    def get(self, text: str, compute: Callable[[str], T]) -> T:
        """``compute(text)``, or its kept result; an exception is raised to every caller
        waiting for that text and nothing is kept."""
        key = _key(text)
        with self._lock:
            kept = self._kept(key)
            if kept is not None:
                return kept
            running = self._running.get(key)
            if running is None:
                mine: concurrent.futures.Future[T] = concurrent.futures.Future()
                self._running[key] = mine
            else:
                self.reused += 1
        if running is not None:
            return running.result()  # another thread's run of this text
        try:
            value = compute(text)
        except BaseException as exc:
            with self._lock:
                del self._running[key]
            mine.set_exception(exc)
            raise
        with self._lock:
            del self._running[key]
            self._done[key] = value
            if len(self._done) > self._size:
                self._done.popitem(last=False)
        mine.set_result(value)
        return value

    def _kept(self, key: bytes) -> T | None:
        """The kept result, now the most recent, counted as reused (under the lock)."""
        if key not in self._done:
            return None
        self._done.move_to_end(key)
        self.reused += 1
        return self._done[key]


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
