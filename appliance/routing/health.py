"""Whether an engine takes requests: ejected after consecutive failures, back after a back-off.

    up --(eject_after failures in a row)--> ejected --(back-off elapsed)--> probation
    probation --(a success)--> up          probation --(a failure)--> ejected, back-off x2

Failures are requests that could not reach the engine or that it failed, and failed health
probes; a success resets the count. While ejected the engine gets no requests, and a
success seen during the back-off does not shorten it. The back-off doubles with every
ejection in a row (probation failed again), up to ``MAX_FACTOR`` times the first.
The clock is injected, so tests move time by hand.
"""

from __future__ import annotations

import time
from typing import Literal

from appliance.admission.clock import Clock

MAX_FACTOR = 32
HealthState = Literal["up", "ejected", "probation"]


class Health:
    def __init__(self, *, eject_after: int, backoff_s: float,
                 clock: Clock = time.monotonic) -> None:
        if eject_after < 1 or backoff_s <= 0:
            raise ValueError("eject_after must be >= 1 and backoff_s > 0")
        self._eject_after = eject_after
        self._backoff_s = backoff_s
        self._clock = clock
        self.failures = 0  # in a row
        self.ejections = 0  # in a row (probation failed again)
        self.total_failures = 0  # since start (metrics)
        self.total_ejections = 0
        self._until: float | None = None  # ejected until (then probation)

    @property
    def state(self) -> HealthState:
        if self._until is None:
            return "up"
        return "ejected" if self._clock() < self._until else "probation"

    @property
    def available(self) -> bool:
        return self.state != "ejected"

    def retry_after(self) -> float:
        """Seconds until an ejected engine is tried again (0 when it is not ejected)."""
        return 0.0 if self._until is None else max(0.0, self._until - self._clock())

    def success(self) -> None:
        if self.state == "ejected":
            return  # the back-off runs its course
        self.failures = self.ejections = 0
        self._until = None

    def failure(self) -> bool:
        """Count one failure; True when it ejects the engine (now)."""
        state = self.state
        if state == "ejected":
            return False
        self.failures += 1
        self.total_failures += 1
        if state == "probation" or self.failures >= self._eject_after:
            factor = min(2 ** self.ejections, MAX_FACTOR)
            self._until = self._clock() + self._backoff_s * factor
            self.ejections += 1
            self.total_ejections += 1
            self.failures = 0
            return True
        return False
