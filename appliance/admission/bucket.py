"""A token bucket with continuous refill, exact to the microsecond.

``TokenBucket(capacity, rate, clock)`` starts full and refills continuously::

    tokens = min(capacity, tokens + elapsed * rate)

``try_take(cost)`` takes ``cost`` tokens if they are there and says so in a ``Decision``:
``allowed``, ``remaining`` (tokens left), ``retry_after`` (seconds until ``cost`` would
fit; 0 when allowed, ``math.inf`` when ``cost`` exceeds ``capacity`` and never can) and
``reset`` (seconds until the bucket is full again). ``peek(cost)`` answers the same
question without taking anything; ``refund(amount)`` gives tokens back, never above
``capacity``. ``take``/``fits`` are the same as ``try_take``/``peek`` answering only
``allowed`` (a bool), for hot paths.

Exactness: tokens are kept as integer micro-tokens, clock readings are rounded to whole
microseconds, and the refill rate is a ``Fraction`` (``rpm/60`` stays exact) whose
remainder is carried between refills. So there is no float drift: 50 requests at a
50-token, 10/s bucket at t=0 all pass, one more at t=0.1 passes, the next at t=0.1 is
refused, and 5 s later the bucket holds exactly 50. Refill rounds down, so the tokens
handed out over any interval never exceed ``capacity + rate * elapsed``.

A clock that goes backwards is ignored until it passes its latest reading again.
Not thread-safe: use one bucket from one thread (the event loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from appliance.admission.clock import Clock

_UNITS = 1_000_000  # micro-tokens per token; time is kept in microseconds


@dataclass(frozen=True)
class Decision:
    """The answer of ``try_take``/``peek``. Times are in seconds."""

    allowed: bool
    remaining: float
    retry_after: float
    reset: float

    @property
    def possible(self) -> bool:
        """False when waiting will never help: the cost exceeds the capacity (or the
        bucket does not refill at all)."""
        return math.isfinite(self.retry_after)


def _to_us(seconds: float) -> int:
    return round(seconds * 1_000_000)


class TokenBucket:
    """Capacity ``capacity`` tokens, refilled at ``rate`` tokens per second; starts full."""

    __slots__ = ("_cap", "_capacity", "_clock", "_last_us", "_p", "_q", "_rate", "_rem",
                 "_units")

    def __init__(self, capacity: int, rate: float | Fraction, clock: Clock) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if rate < 0:
            raise ValueError("rate must not be negative")
        exact = rate if isinstance(rate, Fraction) else Fraction(rate).limit_denominator(
            _UNITS)
        self._capacity = capacity
        self._rate = exact
        self._clock = clock
        # micro-tokens per microsecond == tokens per second: the rate is p/q as integers.
        self._p = exact.numerator
        self._q = exact.denominator
        self._cap = capacity * _UNITS
        self._units = self._cap
        self._rem = 0  # fraction of a micro-token not yet credited, times q
        self._last_us = _to_us(clock())

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def rate(self) -> Fraction:
        """Tokens per second."""
        return self._rate

    def tokens(self, now: float | None = None) -> float:
        """Tokens in the bucket now."""
        self._advance(now)
        return self._units / _UNITS

    def peek(self, cost: int, now: float | None = None) -> Decision:
        """Would ``cost`` tokens be granted now? Takes nothing."""
        self._advance(now)
        return self._decide(cost, take=False)

    def try_take(self, cost: int, now: float | None = None) -> Decision:
        """Take ``cost`` tokens if they are all there; otherwise take nothing."""
        self._advance(now)
        return self._decide(cost, take=True)

    def fits(self, cost: int, now: float | None = None) -> bool:
        """``peek(cost).allowed`` without building a ``Decision`` (the hot path)."""
        self._advance(now)
        return 0 <= cost * _UNITS <= self._units

    def take(self, cost: int, now: float | None = None) -> bool:
        """``try_take(cost).allowed`` without building a ``Decision`` (the hot path)."""
        self._advance(now)
        need = cost * _UNITS
        if 0 <= need <= self._units:
            self._units -= need
            return True
        return False

    def refund(self, amount: int, now: float | None = None) -> None:
        """Give back ``amount`` tokens (say, unused ones), never above capacity."""
        if amount < 0:
            raise ValueError("refund must not be negative")
        self._advance(now)
        units = self._units + amount * _UNITS
        if units >= self._cap:
            units = self._cap
            self._rem = 0
        self._units = units

    def charge(self, amount: int, now: float | None = None) -> None:
        """Take ``amount`` tokens whether or not they are there (the bucket may go below
        zero): what a request used beyond its reservation is owed, and the next requests
        wait until the refill has paid it back."""
        if amount < 0:
            raise ValueError("a charge must not be negative")
        self._advance(now)
        self._units -= amount * _UNITS

    def _decide(self, cost: int, take: bool) -> Decision:
        if cost < 0:
            raise ValueError("cost must not be negative")
        need = cost * _UNITS
        if need <= self._units:
            if take:
                self._units -= need
            return Decision(True, self._units / _UNITS, 0.0, self._wait(self._cap))
        retry = math.inf if need > self._cap else self._wait(need)
        return Decision(False, self._units / _UNITS, retry, self._wait(self._cap))

    def _wait(self, target_units: int) -> float:
        """Seconds until the bucket holds ``target_units``."""
        deficit = target_units - self._units
        if deficit <= 0:
            return 0.0
        if self._p == 0:
            return math.inf
        # smallest dt (us) with (dt * p + rem) // q >= deficit
        dt = -(-(deficit * self._q - self._rem) // self._p)
        return dt / 1_000_000

    def _advance(self, now: float | None) -> None:
        now_us = round((self._clock() if now is None else now) * 1_000_000)
        dt = now_us - self._last_us
        if dt <= 0:
            return
        self._last_us = now_us
        if self._units >= self._cap:
            self._rem = 0
            return
        added, self._rem = divmod(dt * self._p + self._rem, self._q)
        units = self._units + added
        if units >= self._cap:
            units = self._cap
            self._rem = 0
        self._units = units
