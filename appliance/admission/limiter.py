"""Per-key rate limits: requests per minute and tokens per minute.

Each key gets two token buckets, made on first use and remade when its limits change:

* requests: capacity ``burst_requests`` (default ``rpm``), refilled at ``rpm / 60`` per s;
* tokens:   capacity ``burst_tokens``   (default ``tpm``), refilled at ``tpm / 60`` per s.

A limit of ``None`` means unlimited (that bucket does not exist). Usage::

    reservation = limiter.admit(key, prompt_tokens=120, max_tokens=256)  # or RateLimited
    ...generate...
    reservation.settle(actual_tokens=120 + 37)   # refunds the 219 tokens not used, once
    response.headers.update(limiter.headers(key))

``admit`` charges 1 request and ``prompt_tokens + max_tokens`` tokens atomically: if
either bucket refuses, neither is charged, and it raises ``RateLimited`` whose
``retry_after`` is when both would accept (the larger of the two waits). A request that
needs more tokens than ``burst_tokens`` can never pass: ``RateLimited`` with
``retry_after=None`` and a message saying so.

``headers(key)`` gives the OpenAI-style ``x-ratelimit-{limit,remaining,reset}-{requests,
tokens}`` for any response (limit = bucket capacity, remaining = whole tokens left, reset =
time until full, formatted like ``"1s"``, ``"6m0s"``, ``"250ms"``); nothing for an
unlimited dimension. ``retry_after_header(err.retry_after)`` gives ``Retry-After``.

Any object with ``name``, ``rpm``, ``tpm``, ``burst_requests`` and ``burst_tokens``
(``LimitedKey``) can be limited; ``KeyRecord`` is one. Not thread-safe: call it from the
event loop only (it never awaits, so ``admit`` is atomic there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from appliance.admission.bucket import Decision, TokenBucket
from appliance.admission.clock import Clock
from appliance.errors import RateLimited


class LimitedKey(Protocol):
    """What the limiter needs to know about a key (``KeyRecord`` satisfies it)."""

    @property
    def name(self) -> str: ...
    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def burst_requests(self) -> int | None: ...
    @property
    def burst_tokens(self) -> int | None: ...


class Reservation:
    """Tokens charged for one admitted request; ``settle`` refunds what was not used."""

    __slots__ = ("_bucket", "_settled", "charged_tokens", "key_name")

    def __init__(self, key_name: str, charged_tokens: int, bucket: TokenBucket | None) -> None:
        self.key_name = key_name
        self.charged_tokens = charged_tokens
        self._bucket = bucket
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def settle(self, actual_tokens: int) -> int:
        """Refund ``charged - actual`` tokens, or charge what was used beyond the
        reservation (an upstream's prompt counted by its own tokenizer may exceed the
        estimate); return the refund. Only the first call settles; later calls return 0.
        Pass ``0`` for a request that failed early."""
        if self._settled:
            return 0
        self._settled = True
        owed = max(0, actual_tokens) - self.charged_tokens
        if owed > 0:
            if self._bucket is not None:
                self._bucket.charge(owed)
            return 0
        refund = max(0, self.charged_tokens - max(0, actual_tokens))
        if self._bucket is not None and refund:
            self._bucket.refund(refund)
        return refund if self._bucket is not None else 0


@dataclass
class _KeyBuckets:
    limits: tuple[int | None, int | None, int | None, int | None]
    requests: TokenBucket | None
    tokens: TokenBucket | None


def _bucket(per_minute: int | None, burst: int | None, clock: Clock) -> TokenBucket | None:
    if per_minute is None:
        return None
    capacity = burst if burst is not None else per_minute
    return TokenBucket(max(1, capacity), Fraction(per_minute, 60), clock)


class RateLimiter:
    """Two token buckets per key name; see the module docstring."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[str, _KeyBuckets] = {}

    def admit(self, key: LimitedKey, prompt_tokens: int, max_tokens: int) -> Reservation:
        """Charge 1 request and ``prompt_tokens + max_tokens`` tokens, or raise."""
        cost = prompt_tokens + max_tokens
        if cost < 0:
            raise ValueError("token counts must not be negative")
        entry = self._entry(key)
        requests, tokens = entry.requests, entry.tokens
        if requests is None and tokens is None:
            return Reservation(key.name, cost, None)
        now = self._clock()
        if requests is None or requests.take(1, now):
            if tokens is None or tokens.take(cost, now):
                return Reservation(key.name, cost, tokens)
            if requests is not None:
                requests.refund(1, now)  # exact: restores the state before the take
        by_requests = requests.peek(1, now) if requests is not None else None
        by_tokens = tokens.peek(cost, now) if tokens is not None else None
        raise _refusal(key, cost, by_requests, by_tokens)

    def headers(self, key: LimitedKey) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for ``key`` now (empty when unlimited)."""
        entry = self._entry(key)
        now = self._clock()
        out: dict[str, str] = {}
        for suffix, bucket in (("requests", entry.requests), ("tokens", entry.tokens)):
            if bucket is None:
                continue
            state = bucket.peek(0, now)
            out[f"x-ratelimit-limit-{suffix}"] = str(bucket.capacity)
            out[f"x-ratelimit-remaining-{suffix}"] = str(max(0, math.floor(state.remaining)))
            out[f"x-ratelimit-reset-{suffix}"] = format_reset(state.reset)
        return out

    def forget(self, name: str) -> None:
        """Drop a key's buckets (say, after it is revoked)."""
        self._keys.pop(name, None)

    def _entry(self, key: LimitedKey) -> _KeyBuckets:
        limits = (key.rpm, key.tpm, key.burst_requests, key.burst_tokens)
        entry = self._keys.get(key.name)
        if entry is None or entry.limits != limits:
            entry = _KeyBuckets(
                limits,
                _bucket(key.rpm, key.burst_requests, self._clock),
                _bucket(key.tpm, key.burst_tokens, self._clock),
            )
            self._keys[key.name] = entry
        return entry


def _refusal(
    key: LimitedKey, cost: int, by_requests: Decision | None, by_tokens: Decision | None
) -> RateLimited:
    if by_tokens is not None and not by_tokens.possible:
        err = RateLimited(
            f"Request too large for API key {key.name!r} on tokens per min (TPM): "
            f"Limit {key.burst_tokens or key.tpm}, Requested {cost}. Lower max_tokens or "
            "the prompt's length.",
            retry_after=None,
        )
        err.kind = "tokens"
        return err
    waits = [d.retry_after for d in (by_requests, by_tokens) if d is not None]
    retry = max(waits)
    what = [
        label
        for label, d in (("requests per min (RPM)", by_requests), ("tokens per min (TPM)",
                                                                   by_tokens))
        if d is not None and not d.allowed
    ]
    err = RateLimited(
        f"Rate limit reached for API key {key.name!r} on {' and '.join(what)}. "
        f"Please try again in {format_reset(retry)}.",
        retry_after=retry,
    )
    if by_requests is None or by_requests.allowed:
        err.kind = "tokens"
    return err


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it:
    ``"0s"``, ``"250ms"``, ``"1s"``, ``"8.64s"``, ``"6m0s"``, ``"1h2m3s"`` (rounded up to ms)."""
    if not math.isfinite(seconds):
        return "inf"
    us = round(seconds * 1_000_000)
    ms = -(-us // 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:.3f}".rstrip("0") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def retry_after_header(seconds: float | None) -> str | None:
    """``Retry-After`` value: whole seconds rounded up, at least 1; ``None`` when retrying
    cannot help (``None`` or infinite)."""
    if seconds is None or not math.isfinite(seconds):
        return None
    us = round(seconds * 1_000_000)
    return str(max(1, -(-us // 1_000_000)))
