"""Settings: one table, four sources, clear errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from appliance import config
from appliance.errors import ConfigError


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_bind_loopback() -> None:
    s = config.load(env={})
    assert s.host == "127.0.0.1"
    assert s.port == 8080
    assert s.models_dir == s.data_dir / "models"


def test_precedence_toml_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text('port = 9000\nparallel = 3\nctx_size = 4096\n[guards]\nx = 1\n')
    env = {"APPLIANCE_PARALLEL": "5", "APPLIANCE_CONFIG": str(cfg)}
    s = config.load(_args(["--ctx-size", "512"]), env=env)
    assert (s.port, s.parallel, s.ctx_size) == (9000, 5, 512)


def test_appliance_table_in_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "b.toml"
    cfg.write_text('[appliance]\nthreads = 1\ndata-dir = "/tmp/x"\n')
    s = config.load(_args(["--config", str(cfg)]), env={})
    assert s.threads == 1 and s.data_dir == Path("/tmp/x")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"APPLIANCE_PORT": "eighty"}, "expects int"),
        ({"APPLIANCE_PARALLEL": "0"}, "must be >= 1"),
        ({"APPLIANCE_LOG_LEVEL": "loud"},
         r"'log_level' must be one of debug, info, warning, error; got 'loud'"),
        ({"APPLIANCE_SPLIT_MODE": "rows"},
         r"'split_mode' must be one of layer, row, none; got 'rows'"),
        ({"APPLIANCE_MAIN_GPU": "-1"}, "must be >= 0"),
    ],
)
def test_bad_values_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(env=env)


def test_queue_timeout_flag_name() -> None:
    s = config.load(_args(["--queue-timeout", "2.5", "--queue-depth", "3"]), env={})
    assert (s.queue_timeout_s, s.queue_depth) == (2.5, 3)


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("paralel = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'paralel'"):
        config.load(_args(["--config", str(cfg)]), env={})


def test_every_setting_is_documented() -> None:
    docs = (config.REPO_ROOT / "docs" / "CONFIG.md").read_text()
    for s in config.SETTINGS:
        assert f"`{s.name}`" in docs, f"setting {s.name} missing from docs/CONFIG.md"
        assert f"`{s.option}`" in docs
    sys.path.insert(0, str(config.REPO_ROOT / "scripts"))
    try:
        import gen_config_docs
    finally:
        sys.path.pop(0)
    assert docs == gen_config_docs.render(), "run python scripts/gen_config_docs.py"


def test_split_mode_from_each_source_reaches_llama_cpp_params(tmp_path: Path) -> None:
    import llama_cpp

    from appliance.engine.native import SPLIT_MODES, model_params

    # the setting's choices are exactly the modes the engine can pass to llama.cpp
    assert set(config._BY_NAME["split_mode"].choices) == set(SPLIT_MODES)

    cfg = tmp_path / "g.toml"
    cfg.write_text('split_mode = "none"\nmain_gpu = 1\n')
    s = config.load(_args(["--config", str(cfg)]), env={})
    assert (s.split_mode, s.main_gpu) == ("none", 1)
    assert config.load(_args(["--split-mode", "row"]), env={}).split_mode == "row"
    with pytest.raises(ConfigError, match="must be one of"):
        config.load(_args(["--split-mode", "ROW"]), env={})
    params = model_params(-1, s.split_mode, s.main_gpu)
    assert params.split_mode == llama_cpp.LLAMA_SPLIT_MODE_NONE and params.main_gpu == 1
    assert params.n_gpu_layers == 2**31 - 1  # -1: every layer
    params = model_params(12, "row", 0)
    assert params.split_mode == llama_cpp.LLAMA_SPLIT_MODE_ROW and params.n_gpu_layers == 12
    assert model_params(0, "layer", 0).split_mode == llama_cpp.LLAMA_SPLIT_MODE_LAYER
