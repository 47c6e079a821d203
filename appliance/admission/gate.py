"""The admission gate: who is calling (API key), may they (scope, rate), and when (queue).

    gate = Gate(keys, limiter, queue, open_access=host_is_loopback)
    key = await gate.authenticate(request.headers.get("Authorization"))
    gate.require(key, Scope.CHAT)
    ticket = await gate.admit(key, prompt_tokens=120, max_tokens=64)   # 429 / 503 here
    try: ...generate...
    finally: ticket.release(actual_tokens=120 + 37)

With no active keys in the database the appliance is in *open access*: it serves anyone,
and only on a loopback bind (the CLI refuses a non-loopback bind without keys). Callers
get the ``anonymous`` key, which has no limits (the queue still bounds them). As soon as
one key exists every request must carry a valid ``Authorization: Bearer`` key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from appliance.admission.clock import Clock
from appliance.admission.keys import KeyRecord, KeyStore, Scope, require_scope
from appliance.admission.limiter import RateLimiter, Reservation
from appliance.admission.queue import AdmissionQueue, Permit
from appliance.errors import AuthenticationError

ANONYMOUS = KeyRecord(
    id=0, name="anonymous", hint="", scopes=frozenset(Scope), rpm=None, tpm=None,
    burst_requests=None, burst_tokens=None, max_concurrent=None, priority=0,
    created_at=0.0, expires_at=None, revoked_at=None,
)


@dataclass
class Ticket:
    """An admitted request: its token reservation and its decoding slot."""

    reservation: Reservation
    permit: Permit

    @property
    def queue_seconds(self) -> float:
        return self.permit.waited_s

    def release(self, actual_tokens: int) -> None:
        self.permit.release()
        self.reservation.settle(actual_tokens)


class Gate:
    def __init__(self, keys: KeyStore, limiter: RateLimiter, queue: AdmissionQueue, *,
                 open_access: bool, clock: Clock = time.monotonic,
                 key_count_ttl_s: float = 5.0) -> None:
        self.keys = keys
        self.limiter = limiter
        self.queue = queue
        self.open_access = open_access
        self._clock = clock
        self._ttl = key_count_ttl_s
        self._has_keys: tuple[float, bool] | None = None

    async def has_keys(self) -> bool:
        now = self._clock()
        if self._has_keys is None or now - self._has_keys[0] > self._ttl:
            active = await self.keys.list(include_revoked=False)
            self._has_keys = (now, bool(active))
        return self._has_keys[1]

    def keys_changed(self) -> None:
        self._has_keys = None

    async def authenticate(self, authorization: str | None) -> KeyRecord:
        if not await self.has_keys():
            if self.open_access:
                return ANONYMOUS
            raise AuthenticationError("this server has no API keys and is not bound to "
                                      "loopback; create one with `appliance keys create`")
        if not authorization:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError("malformed Authorization header: expected "
                                      "'Bearer <key>'")
        return await self.keys.authenticate(secret.strip())

    @staticmethod
    def require(key: KeyRecord, scope: Scope) -> None:
        require_scope(key, scope)

    async def admit(self, key: KeyRecord, prompt_tokens: int, max_tokens: int) -> Ticket:
        """Charge the key's buckets, then wait for a decoding slot (bounded and fair).
        A refusal by the queue refunds the charge: nothing ran."""
        reservation = self.limiter.admit(key, prompt_tokens, max_tokens)
        try:
            permit = await self.queue.acquire_permit(key.name, key.priority,
                                                     key.max_concurrent)
        except BaseException:
            reservation.settle(0)
            raise
        return Ticket(reservation, permit)

    def rate_headers(self, key: KeyRecord) -> dict[str, str]:
        return self.limiter.headers(key)
