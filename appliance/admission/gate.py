"""The admission gate: who is calling (API key), may they (scope, rate), and when (queue).

    gate = Gate(keys, limiter, {"embedded": queue}, open_access=host_is_loopback)
    key = await gate.authenticate(request.headers.get("Authorization"))
    gate.require(key, Scope.CHAT)
    gate.check_capacity()                          # a fast 503 before the body is read
    async with gate.admit(key, prompt_tokens=120, max_tokens=64,
                          lane="embedded") as ticket:                         # 429 / 503
        ...generate, calling ticket.use(120 + n) as tokens are produced...
        await gate.transfer(ticket, "gpu-box")     # failover: a slot there, this one freed
    # on exit: the slot is freed and the key's token bucket refunded to what was used

Lanes: one admission queue per engine (its slots: the embedded engine's ``parallel``, an
upstream's ``max_concurrent``), each bounded and fair on its own; the key's buckets and its
``max_concurrent`` count across all of them. ``lane=None`` is the first lane (work that is
not generation, such as embeddings, takes its slot there).

With no active keys in the database the appliance is in *open access*: it serves anyone,
and only on a loopback bind (the CLI refuses a non-loopback bind without keys). Callers
get the ``anonymous`` key, which has no limits (the queue still bounds them). As soon as
one key exists every request must carry a valid ``Authorization: Bearer`` key.

Callers see only this class: the key store, the limiter and the queue behind it are its
own collaborators.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

from appliance.admission.clock import Clock
from appliance.admission.estimate import QueueStats
from appliance.admission.keys import KeyRecord, KeyStore, Scope, require_scope
from appliance.admission.limiter import RateLimiter, Reservation
from appliance.admission.queue import AdmissionQueue, Permit
from appliance.errors import AuthenticationError, Overloaded, RateLimited

ANONYMOUS = KeyRecord(
    id=0, name="anonymous", hint="", scopes=frozenset(Scope), rpm=None, tpm=None,
    burst_requests=None, burst_tokens=None, max_concurrent=None, priority=0,
    created_at=0.0, expires_at=None, revoked_at=None,
)


class Ticket:
    """An admitted request: its token reservation and its decoding slot. ``use(n)`` records
    how many tokens it has consumed so far; that is what the key is charged on exit."""

    def __init__(self, reservation: Reservation, permit: Permit, tokens: int,
                 key: KeyRecord, lane: str) -> None:
        self._reservation = reservation
        self._permit = permit
        self.tokens = tokens
        self.key = key
        self.lane = lane

    @property
    def queue_seconds(self) -> float:
        return self._permit.waited_s

    def use(self, tokens: int) -> None:
        self.tokens = tokens

    def _release(self) -> None:
        self._permit.release()
        self._reservation.settle(self.tokens)


class Gate:
    def __init__(self, keys: KeyStore, limiter: RateLimiter,
                 lanes: Mapping[str, AdmissionQueue], *, open_access: bool,
                 clock: Clock = time.monotonic, key_count_ttl_s: float = 5.0) -> None:
        if not lanes:
            raise ValueError("a gate needs at least one lane")
        self._keys = keys
        self._limiter = limiter
        self._lanes = dict(lanes)
        self._first = next(iter(self._lanes))
        self._open_access = open_access
        self._clock = clock
        self._ttl = key_count_ttl_s
        self._has_keys: tuple[float, bool] | None = None

    async def has_keys(self) -> bool:
        now = self._clock()
        if self._has_keys is None or now - self._has_keys[0] > self._ttl:
            active = await self._keys.list(include_revoked=False)
            self._has_keys = (now, bool(active))
        return self._has_keys[1]

    async def authenticate(self, authorization: str | None) -> KeyRecord:
        if not await self.has_keys():
            if self._open_access:
                return ANONYMOUS
            raise AuthenticationError("this server has no API keys and is not bound to "
                                      "loopback; create one with `appliance keys create`")
        if not authorization:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AuthenticationError("malformed Authorization header: expected "
                                      "'Bearer <key>'")
        return await self._keys.authenticate(secret.strip())

    @staticmethod
    def require(key: KeyRecord, scope: Scope) -> None:
        require_scope(key, scope)

    def check_capacity(self) -> None:
        """A fast 503 (every lane full, or draining) before any work is done for a request
        (whose engine is not known yet); :meth:`admit` decides for the request's lane."""
        refusal: Overloaded | None = None
        for queue in self._lanes.values():
            try:
                queue.check_capacity()
                return
            except Overloaded as exc:
                if refusal is None or (exc.retry_after or 0) < (refusal.retry_after or 0):
                    refusal = exc
        assert refusal is not None
        raise refusal

    @contextlib.asynccontextmanager
    async def admit(self, key: KeyRecord, prompt_tokens: int, max_tokens: int,
                    lane: str | None = None) -> AsyncIterator[Ticket]:
        """Charge the key's buckets, then wait for a slot of ``lane`` (bounded and fair). A
        refusal by the queue refunds the charge: nothing ran. On exit the slot is freed and
        the charge settled to what the ticket says was used."""
        name = lane or self._first
        queue = self._lanes[name]
        self._check_concurrency(key, queue)
        reservation = self._limiter.admit(key, prompt_tokens, max_tokens)
        try:
            permit = await queue.acquire_permit(key.name, key.priority, key.max_concurrent)
        except BaseException:
            reservation.settle(0)
            raise
        ticket = Ticket(reservation, permit, prompt_tokens, key, name)
        try:
            yield ticket
        finally:
            ticket._release()

    async def transfer(self, ticket: Ticket, lane: str) -> None:
        """Move an admitted request to a slot of ``lane`` (its engine failed before
        producing anything): wait there like a newcomer, then free the old slot."""
        key = ticket.key
        permit = await self._lanes[lane].acquire_permit(key.name, key.priority, None)
        ticket._permit.release()
        ticket._permit, ticket.lane = permit, lane

    def _check_concurrency(self, key: KeyRecord, queue: AdmissionQueue) -> None:
        """A key's ``max_concurrent`` counts across lanes (each lane checks its own)."""
        if key.max_concurrent is None or len(self._lanes) == 1:
            return
        held = sum(q.held(key.name) for q in self._lanes.values())
        if held >= key.max_concurrent:
            err = RateLimited(
                f"API key {key.name!r} already has {held} requests running or queued, its "
                f"concurrency limit ({key.max_concurrent}).",
                retry_after=queue.expected_hold())
            err.kind = "concurrency"
            raise err

    def charge(self, key: KeyRecord, tokens: int) -> None:
        """Charge work done without a slot (an answer replayed from the cache) to the key's
        buckets, like a generation of that size."""
        self._limiter.admit(key, tokens, 0).settle(tokens)

    def rate_headers(self, key: KeyRecord) -> dict[str, str]:
        return self._limiter.headers(key)

    def stats(self, lane: str | None = None) -> QueueStats:
        """One lane's queue, or all of them added up (None)."""
        if lane is not None:
            return self._lanes[lane].stats()
        return QueueStats.total([q.stats() for q in self._lanes.values()])

    def outstanding(self, lane: str) -> int:
        """Requests running on or waiting for ``lane``'s engine (for routing)."""
        stats = self._lanes[lane].stats()
        return stats.running + stats.queued

    def close(self) -> None:
        """Start draining: queued and new requests are refused, running ones finish."""
        for queue in self._lanes.values():
            queue.close()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        waits = [q.wait_idle(timeout) for q in self._lanes.values()]
        return all(await asyncio.gather(*waits))
