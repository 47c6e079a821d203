"""Slot choice and prefix reuse (pure bookkeeping)."""

from __future__ import annotations

from appliance.engine.slots import Slot, common_prefix, place


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], (1, 2, 4)) == 2
    assert common_prefix([1, 2], (1, 2, 3)) == 2
    assert common_prefix([], (1,)) == 0
    assert common_prefix([5], (1,)) == 0


def test_lowest_free_slot_keeps_its_own_prefix_and_one_token_left_to_decode() -> None:
    slots = [Slot(0, [1, 2, 3, 4]), Slot(1, [1, 2, 3, 4])]
    p = place(slots, (1, 2, 3, 4), min_copy=2, can_copy=True)
    assert p is not None
    assert p.slot.seq_id == 0
    assert p.keep == 3  # the last prompt token is decoded again to get logits
    assert p.copy_from is None


def test_an_idle_slots_prefix_is_copied_into_the_lowest_free_slot() -> None:
    slots = [Slot(0, [9, 9, 9], busy=True), Slot(1, [9, 9]), Slot(2, [1, 2, 3, 4]),
             Slot(3, [1, 2])]
    p = place(slots, (1, 2, 3, 4), min_copy=2, can_copy=True)
    assert p is not None
    # Busy slots stay packed from 0: the prompt runs in slot 1, with slot 2's cache.
    assert p.slot.seq_id == 1 and p.copy_from is slots[2] and p.keep == 3
    assert p.park_to is None  # slot 1's two tokens are not worth saving (min_copy 2 > 2-0)


def test_short_own_prefix_does_not_scatter_the_slots() -> None:
    slots = [Slot(0, [9], busy=True), Slot(1, [7]), Slot(2, [1, 2])]
    p = place(slots, (1, 2, 3, 4), min_copy=16, can_copy=True)
    assert p is not None and p.slot.seq_id == 1 and p.keep == 0


def test_busy_slot_prefix_is_copied_into_the_lowest_free_slot() -> None:
    system = list(range(100, 140))
    slots = [Slot(0, [*system, 7, 8], busy=True), Slot(1, [5, 5]), Slot(2, [6])]
    p = place(slots, (*system, 1, 2, 3), min_copy=16, can_copy=True)
    assert p is not None
    assert p.copy_from is not None and p.copy_from.seq_id == 0
    assert p.keep == len(system)
    assert p.slot.seq_id == 1


def test_short_shared_prefix_is_not_worth_a_copy() -> None:
    slots = [Slot(0, [1, 2, 3], busy=True), Slot(1, [])]
    p = place(slots, (1, 2, 3, 4, 5), min_copy=16, can_copy=True)
    assert p is not None and p.copy_from is None and p.keep == 0


def test_all_busy_gives_none() -> None:
    assert place([Slot(0, busy=True)], (1, 2), min_copy=1, can_copy=True) is None


def test_lowest_free_slot_when_nothing_is_shared() -> None:
    slots = [Slot(0, [4], busy=True), Slot(1, [5], busy=True), Slot(2, [6]), Slot(3, [7])]
    p = place(slots, (1, 2, 3), min_copy=1, can_copy=True)
    assert p is not None and p.slot.seq_id == 2 and p.keep == 0 and p.copy_from is None


def test_reuse_off_keeps_nothing_even_from_a_matching_slot() -> None:
    system = list(range(100, 140))
    slots = [Slot(0, [*system, 7], busy=True), Slot(1, [6]), Slot(2, [*system, 1])]
    p = place(slots, (*system, 1, 2), min_copy=1, can_copy=True, reuse=False)
    assert p is not None and p.keep == 0 and p.copy_from is None
    assert p.slot.seq_id == 1  # the lowest free slot, not the one sharing a prefix


def test_the_overwritten_slots_cache_is_parked_in_an_empty_slot() -> None:
    system = list(range(100, 120))
    old = [*system, 1, 2, 3, 4, 5, 6]
    slots = [Slot(0, old, used=1), Slot(1, []), Slot(2, [])]
    p = place(slots, (*system, 7, 8), min_copy=4, can_copy=True)
    assert p is not None
    assert p.slot is slots[0] and p.keep == len(system)  # its own prefix, where it lies
    assert p.park_to is slots[1]  # the six tokens it would lose are saved first


def test_parking_evicts_only_the_least_recently_used_and_never_a_fresher_cache() -> None:
    a, b, c = ([n] * 10 for n in (1, 2, 3))
    slots = [Slot(0, a, used=5), Slot(1, b, used=3), Slot(2, c, used=4)]
    p = place(slots, (9, 9, 9), min_copy=4, can_copy=True)
    assert p is not None and p.slot is slots[0] and p.park_to is slots[1]  # b is the oldest
    slots = [Slot(0, a, used=2), Slot(1, b, used=3), Slot(2, c, used=4)]
    p = place(slots, (9, 9, 9), min_copy=4, can_copy=True)
    assert p is not None and p.park_to is None  # everything else is fresher than slot 0


def test_a_cache_held_elsewhere_is_not_parked_twice() -> None:
    held = [5] * 12
    slots = [Slot(0, held, used=2), Slot(1, []), Slot(2, list(held), busy=True)]
    p = place(slots, (9, 9), min_copy=4, can_copy=True)
    assert p is not None and p.slot is slots[0] and p.park_to is None


def test_requests_one_at_a_time_find_their_prompt_again() -> None:
    """Eight prompts cycling through one busy slot at a time: with parking, each comes back
    to its own cached prefix (without it, slot 0 would hold only the last one)."""
    system = list(range(100, 124))
    prompts = [(*system, 1000 + i, 1001 + i, 1002 + i, 1003 + i, 1004 + i, 1005 + i)
               for i in range(8)]
    slots = [Slot(i) for i in range(16)]
    kept = []
    for n, prompt in enumerate(prompts * 3):
        p = place(slots, prompt, min_copy=4, can_copy=True)
        assert p is not None and p.slot is slots[0]
        if p.park_to is not None:
            p.park_to.tokens, p.park_to.used = list(p.slot.tokens), p.slot.used
        p.slot.tokens = [*prompt, 7, 7, 7]  # prompt + generated tokens, then it finishes
        p.slot.used = n + 1
        kept.append(p.keep)
    assert kept[:8] == [0] + [len(system)] * 7  # first round: the shared system prompt
    assert kept[8:] == [len(prompts[0]) - 1] * 16  # then each prompt's whole prefix
