"""The gate with one lane per engine: slots counted per engine, a key's limits across all,
a failed-over request's slot moved, and capacity refused only when every lane is full."""

from __future__ import annotations

import asyncio

import pytest

from appliance.admission.gate import Gate
from appliance.admission.keys import KeyStore
from appliance.admission.limiter import RateLimiter
from appliance.admission.queue import AdmissionQueue
from appliance.errors import Overloaded, RateLimited
from appliance.store.db import Database


def _gate(db: Database, **slots: int) -> Gate:
    return Gate(KeyStore(db), RateLimiter(),
                {name: AdmissionQueue(slots=n, depth=0, timeout_s=30.0)
                 for name, n in slots.items()}, open_access=True)


async def test_each_lane_counts_its_own_slots_and_a_full_one_is_a_fast_503(
        db: Database) -> None:
    gate = _gate(db, embedded=1, gpu=2)
    key = (await KeyStore(db).create("k")).record
    async with gate.admit(key, 10, 10, lane="gpu"), gate.admit(key, 10, 10, lane="gpu"):
        assert (gate.outstanding("gpu"), gate.outstanding("embedded")) == (2, 0)
        with pytest.raises(Overloaded) as refused:
            async with gate.admit(key, 10, 10, lane="gpu"):
                pass
        assert refused.value.retry_after is not None
        gate.check_capacity()  # the embedded lane still has room
        async with gate.admit(key, 10, 10):  # no lane named: the first one
            assert gate.outstanding("embedded") == 1
            with pytest.raises(Overloaded):
                gate.check_capacity()  # every lane full
            total = gate.stats()
            assert (total.running, total.slots) == (3, 3)
    assert gate.stats().running == 0


async def test_a_keys_concurrency_limit_counts_across_lanes(db: Database) -> None:
    gate = _gate(db, embedded=4, gpu=4)
    key = (await KeyStore(db).create("k", max_concurrent=2)).record
    async with gate.admit(key, 1, 1, lane="embedded"), gate.admit(key, 1, 1, lane="gpu"):
        with pytest.raises(RateLimited) as refused:
            async with gate.admit(key, 1, 1, lane="gpu"):
                pass
        assert refused.value.kind == "concurrency"


async def test_transfer_moves_the_slot_and_keeps_the_charge(db: Database) -> None:
    gate = _gate(db, a=1, b=1)
    key = (await KeyStore(db).create("k", tpm=1000, burst_tokens=1000)).record
    async with gate.admit(key, 100, 100, lane="a") as ticket:
        await gate.transfer(ticket, "b")
        assert ticket.lane == "b"
        assert (gate.outstanding("a"), gate.outstanding("b")) == (0, 1)
        ticket.use(300)
    assert gate.stats().running == 0
    # 1000 - 300 charged: 700 fit, 800 do not
    async with gate.admit(key, 350, 350, lane="a"):
        pass
    with pytest.raises(RateLimited):
        async with gate.admit(key, 400, 400, lane="a"):
            pass


async def test_wait_idle_waits_for_every_lane(db: Database) -> None:
    gate = _gate(db, a=1, b=1)
    key = (await KeyStore(db).create("k")).record
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.admit(key, 1, 1, lane="b"):
            await release.wait()

    task = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    gate.close()
    assert not await gate.wait_idle(0.05)
    release.set()
    assert await gate.wait_idle(5)
    await task
