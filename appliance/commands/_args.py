"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable


def date_arg(flag: str, example: str) -> Callable[[str], float]:
    """An argparse type for ``flag``: an ISO date or date-time (local time when no zone is
    given, as an operator would mean it) as a POSIX timestamp."""
    def parse(value: str) -> float:
        try:
            when = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes a date like {example} or {example}T08:00, not {value!r}"
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()
        return when.timestamp()

    return parse
