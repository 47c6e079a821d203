"""Sequence slots and prefix reuse: which slot a new prompt goes to, and what it keeps.

Pure bookkeeping over token lists (no llama.cpp calls), so it is tested on its own.
Each slot is one llama.cpp ``seq_id``; ``tokens`` mirrors exactly what that sequence holds
in the KV cache.

- A new sequence always goes to the lowest-numbered free slot, so busy slots stay packed
  from 0: with one KV stream per sequence, llama.cpp computes a batch in one go only over
  consecutive seq ids (each gap costs another graph computation at every step, 2-3x the
  step time at 4 and 16 sequences).
- When another slot (busy or not) shares a longer prefix with the prompt than that slot
  does (at least ``min_copy`` tokens), its KV stream is copied in (a memory copy, no
  compute) and trimmed to the shared part.
- Before the lowest free slot is overwritten, its cache is *parked*: copied into a free
  slot that holds nothing (else the least recently used one), unless another slot already
  holds it. So idle slots keep the most recent distinct conversations and prompts, and a
  prompt that comes back (the next turn of a chat, the same template with a new question)
  finds its prefix even when requests arrive one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    used: int = 0  # when it last got a sequence (an admission count): parking evicts the oldest


@dataclass(frozen=True)
class Placement:
    slot: Slot
    keep: int  # prompt tokens whose KV is reused
    copy_from: Slot | None  # another slot whose first `keep` cells are copied in
    park_to: Slot | None = None  # first copy ``slot``'s old cache here (before copy_from)


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
    Without ``reuse`` nothing cached is kept (nor parked).
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
    if not can_copy:
        return Placement(slot=target, keep=own, copy_from=None)
    donor = max(slots, key=lambda s: (lcp[s.seq_id], s is target, -s.seq_id))
    gain = lcp[donor.seq_id]
    copy = donor is not target and gain >= min_copy and gain > own
    park = _park_to(slots, free, target, donor if copy else None, own, min_copy)
    if copy:
        return Placement(slot=target, keep=gain, copy_from=donor, park_to=park)
    return Placement(slot=target, keep=own, copy_from=None, park_to=park)


def _park_to(slots: list[Slot], free: list[Slot], target: Slot, donor: Slot | None,
             keep: int, min_copy: int) -> Slot | None:
    """Where ``target``'s cache is saved before it is overwritten (None: not worth it)."""
    if len(target.tokens) - keep < min_copy:
        return None  # what would be lost is short, or the new prompt keeps it
    others = [s for s in slots if s is not target]
    held = max((common_prefix(s.tokens, target.tokens) for s in others), default=0)
    if len(target.tokens) - held < min_copy:
        return None  # another slot holds (nearly) the same
    places = [s for s in free if s is not target and s is not donor]
    if not places:
        return None
    spot = min(places, key=lambda s: (bool(s.tokens), s.used, s.seq_id))
    if spot.tokens and spot.used > target.used:
        return None  # only ever evict something older
    return spot
