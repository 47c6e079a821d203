"""The engine and the checks its text sets off take turns: with a request marked ``checked``,
each check the consumer queues for a step's text runs before the engine's next decode, never
beside it (real model, real engine thread, CPU turns as the server wires them)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator

import pytest

from appliance.engine.cpu_turns import CpuTurns, Reserving
from appliance.engine.engine import Engine
from appliance.engine.engine_config import EngineConfig
from appliance.engine.models import ServedModel
from appliance.engine.stream import Stream
from appliance.engine.types import Finished, GenerationRequest, SamplingParams, TextDelta
from tests.unit.pipeline.conftest import started

CHECK_S = 0.015  # longer than a decode step of two sequences of this model here
# What the loop does with a step's text before it queues the check (the rail's rules, the
# chunks of other streams): an engine that does not wait for the loop has begun its next
# decode by then.
LOOP_WORK_S = 0.003


@pytest.fixture
async def engine(served: ServedModel) -> AsyncIterator[tuple[Engine, CpuTurns]]:
    turns = CpuTurns()
    engine = await started(Engine(EngineConfig(
        model_path=served.model.path, parallel=2, ctx_size=256, batch_size=256, n_threads=2,
        default_seed=7), turns=turns))
    yield engine, turns
    await asyncio.to_thread(engine.stop)


async def _steps_during_checks(engine: Engine, turns: CpuTurns) -> list[int]:
    """Two streams; a check of ``CHECK_S`` for every text delta, queued as the output rail
    queues its own. Returns, per check, how many decode steps ended while it ran."""
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(2)
    checks = Reserving(pool, turns)
    overlaps: list[int] = []

    def check() -> None:
        before = engine.stats.steps
        time.sleep(CHECK_S)
        overlaps.append(engine.stats.steps - before)

    async def consume(stream: Stream) -> None:
        pending = []
        async for event in stream:
            if isinstance(event, TextDelta):
                time.sleep(LOOP_WORK_S)  # the loop's own work on the text, before the check
                pending.append(loop.run_in_executor(checks, check))
            if isinstance(event, Finished):
                break
        await asyncio.gather(*pending)

    request = GenerationRequest(prompt_tokens=(1, 2, 3, 4, 5), max_tokens=12,
                                sampling=SamplingParams(temperature=0.0), ignore_eos=True,
                                checked=True)
    try:
        await asyncio.gather(*(consume(engine.submit(request)) for _ in range(2)))
    finally:
        pool.shutdown()
    assert len(overlaps) >= 12
    return overlaps


async def test_checks_of_checked_text_run_between_steps(
        engine: tuple[Engine, CpuTurns]) -> None:
    # An engine that does not wait for the loop has begun its next decode while the loop
    # still works on the text, and steps end during the checks (seen here with the wait
    # taken out: 3 runs of 3 failed).
    assert set(await _steps_during_checks(*engine)) == {0}
