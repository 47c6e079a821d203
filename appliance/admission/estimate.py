"""What the admission queue expects of the near future, and what ``/health`` sees of it.

The drain rate is the number of permits released per second while every slot is busy:
``slots / hold``, where ``hold`` is an exponentially weighted mean (weight ``ALPHA`` per
release) of how long permits are held. A newcomer's estimated wait is its position (the
waiters that fairness serves before it) divided by the drain rate. Until a permit has been
released there is no history: the wait estimate does not refuse anybody and
``Retry-After`` falls back to ``fallback_hold_s`` per permit.

:class:`QueueStats` is the queue at one instant (running, queued, slots, depth,
utilisation, drain rate, draining; ``degraded`` when utilisation > 0.8 or all slots are
busy) for ``/health`` and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.2  # weight of the newest hold time in the moving average
DEGRADED_UTILISATION = 0.8
_MIN_HOLD_S = 0.001


@dataclass(frozen=True)
class QueueStats:
    running: int
    queued: int
    slots: int
    depth: int
    drain_rate: float | None  # permits released per second when saturated; None: no history
    draining: bool

    @classmethod
    def total(cls, parts: list[QueueStats]) -> QueueStats:
        """Several queues (one per engine) seen as one."""
        rates = [p.drain_rate for p in parts if p.drain_rate is not None]
        return cls(running=sum(p.running for p in parts), queued=sum(p.queued for p in parts),
                   slots=sum(p.slots for p in parts), depth=sum(p.depth for p in parts),
                   drain_rate=sum(rates) if rates else None,
                   draining=any(p.draining for p in parts))

    @property
    def utilisation(self) -> float:
        """Queued waiters as a fraction of ``depth`` (1.0 for a full queue)."""
        if self.depth == 0:
            return 1.0 if self.running >= self.slots else 0.0
        return self.queued / self.depth

    @property
    def degraded(self) -> bool:
        return self.utilisation > DEGRADED_UTILISATION or self.running >= self.slots


class DrainEstimate:
    """How long ``slots`` permits are held, learnt from each release; see the module doc."""

    def __init__(self, slots: int, fallback_hold_s: float) -> None:
        self._slots = slots
        self._fallback_hold_s = fallback_hold_s
        self._hold_s: float | None = None

    @property
    def known(self) -> bool:
        """Whether a permit has been released yet (before that, estimates refuse nobody)."""
        return self._hold_s is not None

    def observe(self, held_s: float) -> None:
        """A permit was released after ``held_s`` seconds."""
        hold = max(_MIN_HOLD_S, held_s)
        self._hold_s = hold if self._hold_s is None else self._hold_s + ALPHA * (
            hold - self._hold_s)

    def hold(self) -> float:
        """The expected time for one permit to be released."""
        return self._fallback_hold_s if self._hold_s is None else self._hold_s

    def wait_for(self, position: int) -> float:
        """Expected wait of the waiter served ``position``-th from now."""
        return max(1, position) * self.hold() / self._slots

    def drain_rate(self) -> float | None:
        return None if self._hold_s is None else self._slots / self._hold_s
