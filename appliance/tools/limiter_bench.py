"""Micro-benchmark: microseconds per ``RateLimiter.admit`` (+ ``settle``). Not a test.

    python -m appliance.tools.limiter_bench
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.admission.bucket import TokenBucket
from appliance.admission.limiter import RateLimiter


@dataclass(frozen=True)
class _Key:
    name: str
    rpm: int | None
    tpm: int | None
    burst_requests: int | None
    burst_tokens: int | None


def _per_call_us(n: int, call: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def main(n: int = 50_000) -> None:
    limiter = RateLimiter(time.monotonic)
    limited = _Key("bench", rpm=10**9, tpm=10**12, burst_requests=10**9, burst_tokens=10**12)
    unlimited = _Key("free", rpm=None, tpm=None, burst_requests=None, burst_tokens=None)
    bucket = TokenBucket(10**9, 10**6, time.monotonic)

    def admit_settle() -> None:
        limiter.admit(limited, 100, 200).settle(150)

    def admit_only() -> None:
        limiter.admit(limited, 100, 200)

    def admit_unlimited() -> None:
        limiter.admit(unlimited, 100, 200)

    def take() -> None:
        bucket.try_take(1)

    print(f"admit (rpm+tpm limits):          {_per_call_us(n, admit_only):6.2f} us/admit")
    print(f"admit + settle:                  {_per_call_us(n, admit_settle):6.2f} us")
    print(f"admit (unlimited key):           {_per_call_us(n, admit_unlimited):6.2f} us/admit")
    print(f"TokenBucket.try_take:            {_per_call_us(n, take):6.2f} us")
    headers_us = _per_call_us(n // 10, lambda: limiter.headers(limited))
    print(f"limiter.headers:                 {headers_us:6.2f} us")


if __name__ == "__main__":
    main()
