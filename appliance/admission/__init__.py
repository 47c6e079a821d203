"""Admission control: API keys, per-key rate limits, and the bounded fair queue.

Callers see only ``gate.Gate``; behind it the parts run in this order::

    record = await keys.authenticate(secret)                  # 401 AuthenticationError
    require_scope(record, Scope.CHAT)                         # 403 PermissionDenied
    reservation = limiter.admit(record, prompt_tokens, max_tokens)        # 429 RateLimited
    try:
        async with queue.acquire(record.name, record.priority,
                                 record.max_concurrent):      # 429 RateLimited / 503 Overloaded
            ...generate...
    finally:
        reservation.settle(actual_tokens)
    headers = limiter.headers(record)                         # x-ratelimit-* on every answer
    retry_after_header(err.retry_after)                       # Retry-After on 429/503

Modules: ``gate`` (Gate, Ticket), ``keys`` (KeyStore, KeyRecord, Scope), ``bucket``
(TokenBucket, Decision), ``limiter`` (RateLimiter, Reservation, header helpers), ``queue``
(AdmissionQueue, Permit), ``fairness`` (the order waiters are granted in), ``estimate``
(QueueStats, the drain-rate estimate), ``clock`` (Clock, ManualClock). None of them imports
aiohttp.
"""

from appliance.admission.bucket import Decision, TokenBucket
from appliance.admission.clock import Clock, ManualClock
from appliance.admission.estimate import QueueStats
from appliance.admission.keys import (
    DEFAULT_SCOPES,
    SECRET_PREFIX,
    CreatedKey,
    KeyRecord,
    KeyStore,
    Scope,
    require_scope,
)
from appliance.admission.limiter import (
    LimitedKey,
    RateLimiter,
    Reservation,
    format_reset,
    retry_after_header,
)
from appliance.admission.queue import AdmissionQueue, Permit

__all__ = [
    "DEFAULT_SCOPES",
    "SECRET_PREFIX",
    "AdmissionQueue",
    "Clock",
    "CreatedKey",
    "Decision",
    "KeyRecord",
    "KeyStore",
    "LimitedKey",
    "ManualClock",
    "Permit",
    "QueueStats",
    "RateLimiter",
    "Reservation",
    "Scope",
    "TokenBucket",
    "format_reset",
    "require_scope",
    "retry_after_header",
]
