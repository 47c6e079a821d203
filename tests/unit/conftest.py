"""The default GGUF model, loaded once for the unit tests that need llama.cpp's own samplers
or grammar engine (``structured/``, ``test_draw.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance import config
from appliance.engine.models import ModelStore
from appliance.engine.native import LlamaModel


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaModel]:
    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    model = LlamaModel(store.verify(store.resolve(settings.model)).path)
    yield model
    model.close()
