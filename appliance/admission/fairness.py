"""The order in which the admission queue grants its waiters.

By priority (higher first); within a priority, round-robin between keys (the key served goes
to the back of the rotation, a new key joins at the back), so one key with 100 queued requests
delays another key's single request by at most one grant per other key; within a key, first
come first served.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    key: str
    priority: int


W = TypeVar("W", bound=Queued)


class FairOrder(Generic[W]):
    """Queued waiters in the order they are to be granted; see the module doc."""

    def __init__(self) -> None:
        # priority -> key -> that key's waiters; a level's key order is its rotation
        self._levels: dict[int, OrderedDict[str, deque[W]]] = {}

    def __iter__(self) -> Iterator[W]:
        return (w for level in self._levels.values() for waiters in level.values()
                for w in waiters)

    def add(self, w: W) -> None:
        level = self._levels.setdefault(w.priority, OrderedDict())
        level.setdefault(w.key, deque()).append(w)

    def remove(self, w: W) -> None:
        """Take ``w`` out wherever it stands; its key keeps its place in the rotation."""
        level = self._levels[w.priority]
        waiters = level[w.key]
        waiters.remove(w)
        if not waiters:
            del level[w.key]
            if not level:
                del self._levels[w.priority]

    def head(self) -> W:
        """The waiter to grant next (the order must not be empty)."""
        level = self._levels[max(self._levels)]
        return next(iter(level.values()))[0]

    def pop(self, w: W) -> None:
        """Remove the head waiter ``w`` and move its key to the back of the rotation."""
        level = self._levels[w.priority]
        waiters = level[w.key]
        waiters.popleft()
        if waiters:
            level.move_to_end(w.key)
        else:
            del level[w.key]
            if not level:
                del self._levels[w.priority]

    def position(self, key: str, priority: int) -> int:
        """Where a newcomer would be served: waiters granted before it, plus one."""
        ahead = 0
        for p, level in self._levels.items():
            if p > priority:
                ahead += sum(len(waiters) for waiters in level.values())
            elif p == priority:
                mine = len(level.get(key, ()))
                ahead += mine + sum(min(len(waiters), mine + 1)
                                    for k, waiters in level.items() if k != key)
        return ahead + 1
