"""The GGUF metadata reader, on the real default model and on broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config
from appliance.engine.gguf import model_shape, read_metadata
from appliance.engine.models import ModelStore
from appliance.errors import ModelError


def default_model() -> Path:
    s = config.load(env={})
    store = ModelStore(s.manifest, s.models_dir)
    return store.location(store.resolve("smollm2-135m-instruct"))


def test_reads_the_default_models_metadata() -> None:
    meta = read_metadata(default_model())
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 30
    shape = model_shape(default_model())
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dimensions.
    assert (shape.n_layer, shape.n_embd_k, shape.n_embd_v) == (30, 192, 192)
    assert shape.kv_bytes(1000) == 30 * 384 * 1000 * 2


def test_rejects_what_is_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ModelError, match="not a GGUF"):
        read_metadata(bad)
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(default_model().read_bytes()[:64])
    with pytest.raises(ModelError, match="truncated"):
        read_metadata(truncated)
