"""Sequence slots and prefix reuse: which slot a new prompt goes to, and what it keeps.

Pure bookkeeping over token lists (no llama.cpp calls), so it is tested on its own.
Each slot is one llama.cpp ``seq_id``; ``tokens`` mirrors exactly what that sequence holds
in the KV cache. A new prompt goes to the lowest-numbered free slot, so busy slots stay
packed from 0: with one KV stream per sequence, llama.cpp computes a batch in one go only
over consecutive seq ids (each gap costs another graph computation at every step, 2-3x
the step time at 4 and 16 sequences). When another slot (busy or not) shares a longer
prefix with the prompt than the chosen slot's own cache, that slot's KV stream is copied
in (a memory copy, no compute) and trimmed to the shared part.
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
    """Choose a free slot for ``prompt`` (the lowest-numbered); None when all are busy.

    At least one prompt token is always left to decode, so the new sequence gets logits.
    Without ``reuse`` nothing cached is kept.
    """
    free = [s for s in slots if not s.busy]
    if not free:
        return None
    target = min(free, key=lambda s: s.seq_id)
    if not reuse:
        return Placement(slot=target, keep=0, copy_from=None)
    limit = max(len(prompt) - 1, 0)
    lcp = {s.seq_id: min(common_prefix(s.tokens, prompt), limit) for s in slots}
    own = lcp[target.seq_id]
    if can_copy:
        donor = max(slots, key=lambda s: (lcp[s.seq_id], -s.seq_id))
        gain = lcp[donor.seq_id]
        if donor is not target and gain >= min_copy and gain > own:
            return Placement(slot=target, keep=gain, copy_from=donor)
    return Placement(slot=target, keep=own, copy_from=None)
