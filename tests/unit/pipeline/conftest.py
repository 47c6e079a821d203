"""Real parts for the pipeline's stage tests: the default GGUF model (its tokenizer and
template), the shipped encoder and guard heads, SQLite files in a temporary directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import config
from appliance.admission.gate import Gate
from appliance.admission.keys import KeyStore
from appliance.admission.limiter import RateLimiter
from appliance.admission.queue import AdmissionQueue
from appliance.encoder.sentence import Encoder
from appliance.engine.engine import Engine
from appliance.engine.models import ModelStore, ServedModel
from appliance.engine.native import LlamaModel
from appliance.engine.tokenizer import Tokenizer
from appliance.guards.rails import Guards
from appliance.guards.readiness import GuardsState
from appliance.store.db import Database


@dataclass
class Loaded:
    """The engine's loading state around a model loaded here (no engine thread needed)."""

    model: LlamaModel | None
    state: str = "ready"
    error: str | None = None


@pytest.fixture(scope="session")
def served() -> ServedModel:
    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    return ServedModel(store.verify(store.resolve(settings.model)), store.specs)


@pytest.fixture(scope="session")
def llama(served: ServedModel) -> Iterator[LlamaModel]:
    model = LlamaModel(served.model.path)
    yield model
    model.close()


@pytest.fixture(scope="session")
def tokenizer(llama: LlamaModel, served: ServedModel) -> Tokenizer:
    return Tokenizer(Loaded(llama), model_id=served.id, use_template=True)


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder.from_manifest()


@pytest.fixture(scope="session")
def guards(encoder: Encoder) -> Iterator[GuardsState]:
    state = GuardsState(enabled=True)
    loaded = Guards.load(encoder=encoder)
    state.loaded(loaded)
    yield state
    loaded.close()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "appliance.db")
    yield database
    await database.aclose()


async def started(engine: Engine) -> Engine:
    """``engine`` started on the running loop, once its thread has loaded the model and
    decoded once."""
    engine.start(asyncio.get_running_loop())
    for _ in range(600):
        if engine.state in ("ready", "failed"):
            break
        await asyncio.sleep(0.1)
    assert engine.ready, engine.error
    return engine


def make_gate(db: Database, *, slots: int = 2, depth: int = 4) -> Gate:
    return Gate(KeyStore(db), RateLimiter(),
                {"embedded": AdmissionQueue(slots=slots, depth=depth, timeout_s=30.0)},
                open_access=True)
