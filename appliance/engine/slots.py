"""Sequence slots and prefix reuse: which slot a new prompt goes to, and what it keeps.

Pure bookkeeping over token lists (no llama.cpp calls), so it is tested on its own.
Each slot is one llama.cpp ``seq_id``; ``tokens`` mirrors exactly what that sequence holds
in the KV cache. A new prompt goes to the free slot whose cache shares the longest prefix
with it; when a different slot (busy or not) shares a longer prefix, its KV stream is
copied (a memory copy, no compute) and trimmed to the shared part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: int = 0  # a step counter, for least-recently-used choice


@dataclass(frozen=True)
class Placement:
    slot: Slot
    keep: int  # prompt tokens whose KV is reused
    copy_from: Slot | None  # another slot whose first `keep` cells are copied in


def common_prefix(a: list[int], b: tuple[int, ...] | list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x = np.asarray(a[:n], dtype=np.int64)
    y = np.asarray(b[:n], dtype=np.int64)
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if diff.size else n


def place(slots: list[Slot], prompt: tuple[int, ...], *, min_copy: int,
          can_copy: bool, reuse: bool = True) -> Placement | None:
    """Choose a free slot for ``prompt``; None when every slot is busy.

    At least one prompt token is always left to decode, so the new sequence gets logits.
    Without ``reuse`` nothing cached is kept: the least recently used free slot is taken.
    """
    free = [s for s in slots if not s.busy]
    if not free:
        return None
    if not reuse:
        return Placement(slot=min(free, key=lambda s: s.last_used), keep=0, copy_from=None)
    limit = max(len(prompt) - 1, 0)
    lcp = {s.seq_id: min(common_prefix(s.tokens, prompt), limit) for s in slots}
    best_free = max(free, key=lambda s: (lcp[s.seq_id], -s.last_used))
    own = lcp[best_free.seq_id]
    if can_copy:
        donor = max(slots, key=lambda s: lcp[s.seq_id])
        gain = lcp[donor.seq_id]
        if donor is not best_free and gain >= min_copy and gain > own:
            # Overwrite the least valuable free slot rather than one with a useful cache.
            target = min(free, key=lambda s: (lcp[s.seq_id], s.last_used))
            return Placement(slot=target, keep=gain, copy_from=donor)
    if own == 0:
        best_free = min(free, key=lambda s: s.last_used)
    return Placement(slot=best_free, keep=own, copy_from=None)
