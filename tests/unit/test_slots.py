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


def test_free_slot_with_a_long_prefix_is_used_where_it_lies() -> None:
    slots = [Slot(0, [9, 9, 9], busy=True), Slot(1, [9, 9]), Slot(2, [1, 2, 3, 4]),
             Slot(3, [1, 2])]
    p = place(slots, (1, 2, 3, 4), min_copy=2, can_copy=True)
    assert p is not None
    assert p.slot.seq_id == 2 and p.copy_from is None and p.keep == 3


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
