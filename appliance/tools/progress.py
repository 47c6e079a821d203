"""A one-line progress bar on a text stream (stderr), for long checks like `models verify`.

Drawn only when asked or when the stream is a terminal, so logs and pipes stay clean.
"""

from __future__ import annotations

import time
from typing import TextIO

_WIDTH = 30


class ProgressBar:
    """``advance(n)`` as bytes are processed; ``close()`` ends the line."""

    def __init__(self, total: int, label: str, stream: TextIO, *, enabled: bool,
                 min_interval: float = 0.1) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.done = 0
        self._min_interval = min_interval
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= self._min_interval or self.done >= self.total):
            self._last = now
            self._draw()

    def _draw(self) -> None:
        frac = min(self.done / self.total, 1.0)
        filled = int(frac * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        self.stream.write(f"\r{self.label[:40]:40} [{bar}] {frac * 100:5.1f}% "
                          f"{self.done / 2**20:8.1f}/{self.total / 2**20:.1f} MiB")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
