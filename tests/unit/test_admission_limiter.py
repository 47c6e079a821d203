"""RateLimiter: atomic two-bucket charges, refunds, headers, Retry-After."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.admission import (
    ManualClock,
    RateLimiter,
    format_reset,
    retry_after_header,
)
from appliance.errors import RateLimited


@dataclass(frozen=True)
class Key:
    name: str = "k"
    rpm: int | None = None
    tpm: int | None = None
    burst_requests: int | None = None
    burst_tokens: int | None = None


def test_unlimited_key_is_always_admitted_without_headers() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key()
    for _ in range(1000):
        limiter.admit(key, 10_000, 10_000).settle(0)
    assert limiter.headers(key) == {}


def test_requests_bucket_refuses_with_retry_after_and_headers() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    key = Key(rpm=60, burst_requests=2)
    limiter.admit(key, 1, 1)
    limiter.admit(key, 1, 1)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(key, 1, 1)
    err = refused.value
    assert err.status == 429
    assert err.retry_after == 1.0
    assert "requests per min" in err.message
    assert retry_after_header(err.retry_after) == "1"
    assert limiter.headers(key) == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }
    clock.advance(1.0)
    limiter.admit(key, 1, 1)


def test_burst_defaults_to_the_per_minute_limit() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key(rpm=3, tpm=100)
    for _ in range(3):
        limiter.admit(key, 10, 10)
    with pytest.raises(RateLimited):
        limiter.admit(key, 1, 1)
    assert limiter.headers(key)["x-ratelimit-limit-tokens"] == "100"
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "40"


def test_token_refusal_charges_no_request() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key(rpm=60, burst_requests=5, tpm=600, burst_tokens=100)
    limiter.admit(key, 50, 30)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(key, 20, 10)
    assert "tokens per min" in refused.value.message
    assert refused.value.retry_after == 1.0  # 10 tokens missing at 10 tokens/s
    headers = limiter.headers(key)
    assert headers["x-ratelimit-remaining-requests"] == "4"
    assert headers["x-ratelimit-remaining-tokens"] == "20"


def test_request_refusal_charges_no_tokens() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key(rpm=60, burst_requests=1, tpm=600, burst_tokens=100)
    limiter.admit(key, 5, 5)
    with pytest.raises(RateLimited):
        limiter.admit(key, 40, 40)
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "90"


def test_retry_after_is_the_longer_of_the_two_waits() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key(rpm=60, burst_requests=1, tpm=60, burst_tokens=10)  # 1 req/s, 1 token/s
    limiter.admit(key, 5, 5)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(key, 2, 2)
    assert refused.value.retry_after == 4.0  # requests need 1 s, tokens 4 s
    assert "requests per min (RPM) and tokens per min (TPM)" in refused.value.message


def test_request_larger_than_the_token_burst_can_never_pass() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key(tpm=1000, burst_tokens=100)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(key, 60, 60)
    assert refused.value.retry_after is None
    assert "Request too large" in refused.value.message
    assert retry_after_header(refused.value.retry_after) is None
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "100"


def test_settle_refunds_unused_tokens_once() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key(tpm=6000, burst_tokens=1000)
    reservation = limiter.admit(key, 100, 400)
    assert reservation.charged_tokens == 500
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "500"
    assert reservation.settle(150) == 350
    assert reservation.settled
    assert reservation.settle(0) == 0
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "850"


def test_settle_with_more_than_charged_charges_the_rest() -> None:
    """An upstream's own count can exceed the estimate reserved: the key pays what was
    used, going into debt that the refill pays back before the next request passes."""
    clock = ManualClock()
    limiter = RateLimiter(clock)
    key = Key(tpm=6000, burst_tokens=1000)  # 100 tokens a second
    assert limiter.admit(key, 100, 100).settle(999) == 0
    assert limiter.headers(key)["x-ratelimit-remaining-tokens"] == "1"
    reservation = limiter.admit(key, 1, 0)
    assert reservation.settle(101) == 0  # 100 owed: the bucket is 100 tokens below zero
    with pytest.raises(RateLimited):
        limiter.admit(key, 10, 0)
    clock.advance(1.1)  # 110 refilled: 10 in the bucket
    limiter.admit(key, 10, 0).settle(10)


def test_changed_limits_take_effect() -> None:
    limiter = RateLimiter(ManualClock())
    key = Key(rpm=60, burst_requests=1)
    limiter.admit(key, 0, 0)
    with pytest.raises(RateLimited):
        limiter.admit(key, 0, 0)
    limiter.admit(replace(key, burst_requests=5), 0, 0)
    assert limiter.headers(replace(key, burst_requests=5))["x-ratelimit-limit-requests"] == "5"


def test_keys_are_limited_independently_and_forget_resets() -> None:
    limiter = RateLimiter(ManualClock())
    a, b = Key("a", rpm=60, burst_requests=1), Key("b", rpm=60, burst_requests=1)
    limiter.admit(a, 0, 0)
    limiter.admit(b, 0, 0)
    with pytest.raises(RateLimited):
        limiter.admit(a, 0, 0)
    limiter.forget("a")
    limiter.admit(a, 0, 0)


def test_reset_header_counts_down_with_the_clock() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    key = Key(tpm=6000, burst_tokens=6000)  # 100 tokens/s
    limiter.admit(key, 36_000 // 10, 2400)  # empties it: 60 s to refill
    assert limiter.headers(key)["x-ratelimit-reset-tokens"] == "1m0s"
    clock.advance(59.75)
    assert limiter.headers(key)["x-ratelimit-reset-tokens"] == "250ms"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (0.0001, "1ms"), (0.9999, "1s"), (1, "1s"), (1.5, "1.5s"),
     (8.64, "8.64s"), (60, "1m0s"), (360, "6m0s"), (3723, "1h2m3s"), (3600.5, "1h0m0.5s"),
     (math.inf, "inf")],
)
def test_format_reset_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0, "1"), (0.1, "1"), (1.0, "1"), (1.000001, "2"), (59.5, "60"), (None, None),
     (math.inf, None)],
)
def test_retry_after_header_is_whole_seconds_rounded_up(
    seconds: float | None, header: str | None
) -> None:
    assert retry_after_header(seconds) == header


@settings(max_examples=100, deadline=None, database=None)
@given(rpm=st.integers(1, 600), tpm=st.integers(1, 10_000),
       calls=st.lists(st.tuples(st.integers(0, 2_000), st.integers(0, 300), st.integers(0, 300)),
                      max_size=40))
def test_admissions_never_exceed_either_limit(
    rpm: int, tpm: int, calls: list[tuple[int, int, int]]
) -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock)
    key = Key(rpm=rpm, tpm=tpm)
    elapsed_ms = requests = tokens = 0
    for gap_ms, prompt, max_tokens in calls:
        elapsed_ms += gap_ms
        clock.now = elapsed_ms / 1000
        try:
            limiter.admit(key, prompt, max_tokens)
        except RateLimited as err:
            assert err.retry_after is None or err.retry_after > 0
            continue
        requests += 1
        tokens += prompt + max_tokens
        minutes = elapsed_ms / 60_000
        assert requests <= rpm + rpm * minutes + 1e-9
        assert tokens <= tpm + tpm * minutes + 1e-9
