"""Sequence slots and prefix reuse: which slot a new prompt goes to, and what it keeps.

Pure bookkeeping over token lists (no llama.cpp calls), so it is tested on its own.
Each slot is one llama.cpp ``seq_id``; ``tokens`` mirrors exactly what that sequence holds
in the KV cache. A prompt that shares nothing worth keeping goes to the lowest-numbered
free slot, so busy slots stay packed from 0: with one KV stream per sequence, llama.cpp
computes a batch in one go only over consecutive seq ids (each gap costs another graph
computation at every step, 2-3x the step time at 4 and 16 sequences). A free slot whose
cache shares at least ``min_copy`` tokens with the prompt is used where it lies; when
another slot (busy or not) shares a longer prefix, its KV stream is copied (a memory
copy, no compute) into the lowest free slot of no use to the prompt and trimmed to the
shared part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False


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
    Without ``reuse`` nothing cached is kept.
    """
    free = [s for s in slots if not s.busy]
    if not free:
        return None
    lowest = min(free, key=lambda s: s.seq_id)
    if not reuse:
        return Placement(slot=lowest, keep=0, copy_from=None)
    limit = max(len(prompt) - 1, 0)
    lcp = {s.seq_id: min(common_prefix(s.tokens, prompt), limit) for s in slots}
    best_free = max(free, key=lambda s: (lcp[s.seq_id], -s.seq_id))
    own = lcp[best_free.seq_id]
    if can_copy:
        donor = max(slots, key=lambda s: (lcp[s.seq_id], -s.seq_id))
        gain = lcp[donor.seq_id]
        if donor is not best_free and gain >= min_copy and gain > own:
            # Into the lowest free slot that holds nothing of use to this prompt.
            target = min(free, key=lambda s: (lcp[s.seq_id], s.seq_id))
            return Placement(slot=target, keep=gain, copy_from=donor)
    if own >= min_copy:
        # A free slot already holding a long prefix is used where it lies, so nothing
        # another prompt could still reuse is overwritten.
        return Placement(slot=best_free, keep=own, copy_from=None)
    return Placement(slot=lowest, keep=lcp[lowest.seq_id], copy_from=None)
