"""TokenBucket: exact continuous refill, decisions, refunds; hypothesis properties."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.admission import ManualClock, TokenBucket


def test_the_specified_burst_scenario_is_exact() -> None:
    clock = ManualClock(0.0)
    bucket = TokenBucket(50, 10, clock)
    assert all(bucket.try_take(1).allowed for _ in range(50))
    assert bucket.tokens() == 0
    clock.now = 0.1
    first = bucket.try_take(1)
    assert first.allowed
    assert first.remaining == 0
    second = bucket.try_take(1)
    assert not second.allowed
    assert second.retry_after == pytest.approx(0.1, abs=1e-9)
    clock.advance(5.0)
    assert bucket.tokens() == 50
    assert all(bucket.try_take(1).allowed for _ in range(50))
    assert not bucket.try_take(1).allowed


def test_retry_after_is_when_the_cost_fits_and_reset_is_when_full() -> None:
    clock = ManualClock(100.0)
    bucket = TokenBucket(50, 10, clock)
    assert bucket.try_take(50).allowed
    refused = bucket.try_take(5)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after == 0.5
    assert refused.reset == 5.0
    clock.advance(0.499999)
    assert not bucket.peek(5).allowed
    clock.advance(0.000001)
    granted = bucket.try_take(5)
    assert granted.allowed
    assert granted.retry_after == 0
    assert granted.reset == 5.0


def test_peek_and_fits_take_nothing() -> None:
    bucket = TokenBucket(3, 1, ManualClock())
    assert bucket.peek(3).allowed
    assert bucket.fits(3)
    assert bucket.tokens() == 3
    assert bucket.take(2)
    assert not bucket.take(2)
    assert bucket.tokens() == 1


def test_cost_above_capacity_is_never_possible_and_takes_nothing() -> None:
    bucket = TokenBucket(10, 1, ManualClock())
    decision = bucket.try_take(11)
    assert not decision.allowed
    assert decision.retry_after == math.inf
    assert not decision.possible
    assert bucket.tokens() == 10
    assert bucket.try_take(10).possible


def test_refund_never_exceeds_capacity() -> None:
    clock = ManualClock()
    bucket = TokenBucket(10, 1, clock)
    bucket.try_take(4)
    bucket.refund(3)
    assert bucket.tokens() == 9
    bucket.refund(100)
    assert bucket.tokens() == 10
    clock.advance(60)
    assert bucket.tokens() == 10
    with pytest.raises(ValueError):
        bucket.refund(-1)


def test_per_minute_rates_are_exact() -> None:
    clock = ManualClock()
    bucket = TokenBucket(3, Fraction(100, 60), clock)  # 100 rpm
    assert bucket.try_take(3).allowed
    refused = bucket.try_take(1)
    assert refused.retry_after == 0.6
    clock.advance(0.6)
    assert bucket.try_take(1).allowed
    assert bucket.tokens() == 0
    clock.advance(1.8)  # 3 tokens, exactly
    assert bucket.tokens() == 3


def test_clock_going_backwards_refills_nothing() -> None:
    clock = ManualClock(10.0)
    bucket = TokenBucket(5, 1, clock)
    bucket.try_take(5)
    clock.now = 5.0
    assert bucket.tokens() == 0
    clock.now = 10.5
    assert bucket.tokens() == 0.5


def test_zero_rate_never_refills() -> None:
    bucket = TokenBucket(2, 0, ManualClock())
    bucket.try_take(2)
    assert bucket.try_take(1).retry_after == math.inf


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1, ManualClock())
    with pytest.raises(ValueError):
        TokenBucket(1, -1, ManualClock())
    with pytest.raises(ValueError):
        TokenBucket(1, 1, ManualClock()).try_take(-1)


# -- properties -----------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3_000),  # ms since the previous operation
        st.integers(min_value=0, max_value=60),  # cost (may exceed capacity)
        st.booleans(),  # refund instead of take
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, database=None)
@given(capacity=st.integers(1, 50),
       rate=st.fractions(min_value=0, max_value=20, max_denominator=60),
       ops=_ops)
def test_bucket_never_goes_negative_or_above_capacity(
    capacity: int, rate: Fraction, ops: list[tuple[int, int, bool]]
) -> None:
    clock = ManualClock(1000.0)
    bucket = TokenBucket(capacity, rate, clock)
    elapsed_ms = 0
    for gap_ms, cost, refund in ops:
        elapsed_ms += gap_ms
        clock.now = 1000.0 + elapsed_ms / 1000
        if refund:
            bucket.refund(cost)
        else:
            before = bucket.tokens()
            decision = bucket.try_take(cost)
            assert decision.allowed == (cost <= before)
            expected = before - cost if decision.allowed else before
            assert decision.remaining == pytest.approx(expected, abs=1e-9)
            if rate > 0:
                assert decision.possible == (cost <= capacity)
        assert 0 <= bucket.tokens() <= capacity


@settings(max_examples=150, deadline=None, database=None)
@given(capacity=st.integers(1, 50),
       rate=st.fractions(min_value=Fraction(1, 60), max_value=20, max_denominator=60),
       ops=st.lists(st.tuples(st.integers(0, 3_000), st.integers(0, 50)), max_size=60))
def test_admitted_cost_bounded_by_capacity_plus_refill(
    capacity: int, rate: Fraction, ops: list[tuple[int, int]]
) -> None:
    clock = ManualClock()
    bucket = TokenBucket(capacity, rate, clock)
    elapsed_ms = 0
    admitted = 0
    for gap_ms, cost in ops:
        elapsed_ms += gap_ms
        clock.now = elapsed_ms / 1000
        if bucket.take(cost):
            admitted += cost
        assert admitted <= capacity + rate * Fraction(elapsed_ms, 1000)


@settings(max_examples=150, deadline=None, database=None)
@given(capacity=st.integers(1, 50),
       rate=st.fractions(min_value=Fraction(1, 60), max_value=20, max_denominator=60),
       drained=st.integers(0, 50), cost=st.integers(1, 50))
def test_retry_after_is_exact_to_the_microsecond(
    capacity: int, rate: Fraction, drained: int, cost: int
) -> None:
    clock = ManualClock()
    bucket = TokenBucket(capacity, rate, clock)
    bucket.try_take(min(drained, capacity))
    decision = bucket.peek(cost)
    if decision.allowed or not decision.possible:
        return
    wait_us = round(decision.retry_after * 1_000_000)
    clock.now = (wait_us - 1) / 1_000_000
    assert not bucket.peek(cost).allowed
    clock.now = wait_us / 1_000_000
    assert bucket.peek(cost).allowed
