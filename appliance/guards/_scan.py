"""What every PII detector scans: a text with the figures its cheap gates look at.

A detector takes a :class:`ScanText` and yields :data:`Candidates`, the ``(start, end)``
spans it found; :func:`appliance.guards.pii.find_pii` ranks and merges them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

Candidates = Iterator[tuple[int, int]]


@dataclass(frozen=True)
class ScanText:
    """A text with what the detectors' cheap gates look at, computed once."""

    text: str
    low: str  # lower-cased, same length (U+0130 is the one letter that would grow)
    digits: int

    @classmethod
    def of(cls, text: str) -> ScanText:
        low = text.replace("\u0130", "I").lower()
        return cls(text, low, sum(map(text.count, "0123456789")))
