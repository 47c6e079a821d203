"""The admission gate as the pipeline sees it: admit() as a context manager, charge, stats."""

from __future__ import annotations

import asyncio

import pytest

from appliance.admission.keys import KeyStore
from appliance.errors import Overloaded, RateLimited
from appliance.store.db import Database
from tests.unit.pipeline.conftest import make_gate


async def test_admit_holds_a_slot_and_settles_to_what_was_used(db: Database) -> None:
    gate = make_gate(db, slots=1, depth=1)
    key = (await KeyStore(db).create("k", tpm=600, burst_tokens=600)).record
    async with gate.admit(key, 100, 400) as ticket:
        assert gate.stats().running == 1
        ticket.use(150)
    assert gate.stats().running == 0
    # 600 - 150 left: a request asking for 100 + 400 fits, one asking 100 + 500 does not
    async with gate.admit(key, 100, 300):
        pass
    with pytest.raises(RateLimited):
        async with gate.admit(key, 100, 500):
            pass


async def test_a_full_queue_is_refused_fast_and_a_refusal_costs_nothing(
        db: Database) -> None:
    gate = make_gate(db, slots=1, depth=0)
    key = (await KeyStore(db).create("k", tpm=1000, burst_tokens=1000)).record
    async with gate.admit(key, 10, 10):
        with pytest.raises(Overloaded):
            gate.check_capacity()
        with pytest.raises(Overloaded):
            async with gate.admit(key, 10, 900):
                pass
    async with gate.admit(key, 10, 900):  # the refused request was refunded
        pass


async def test_charge_and_drain(db: Database) -> None:
    gate = make_gate(db, slots=1, depth=2)
    key = (await KeyStore(db).create("k", tpm=100, burst_tokens=100)).record
    gate.charge(key, 80)
    with pytest.raises(RateLimited):
        gate.charge(key, 80)
    gate.close()
    assert gate.stats().draining
    with pytest.raises(Overloaded):
        gate.check_capacity()
    assert await asyncio.wait_for(gate.wait_idle(1.0), 2.0)
