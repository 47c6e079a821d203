"""Clocks for the admission core.

Everything time-dependent in ``appliance.admission`` takes a ``Clock``: a callable
returning seconds as a float (``time.monotonic`` in production, a ``ManualClock`` in
tests). Only differences between readings matter, except for ``KeyStore`` which compares
against stored expiry times and so uses wall-clock time (``time.time``).
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]


class ManualClock:
    """A clock that moves only when told to: ``clock.advance(0.5)`` or ``clock.now = 3``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self.now += seconds
