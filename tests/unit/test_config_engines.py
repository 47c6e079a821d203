"""The [[engines]] tables and --upstream: parsed, validated and documented like settings."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from appliance import config
from appliance.config_engines import ENGINE_FIELDS
from appliance.errors import ConfigError


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None,
          argv: list[str] | None = None) -> config.Settings:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    return config.load(_args(["--config", str(cfg), *(argv or [])]), env=env or {})


def test_no_table_is_the_embedded_engine_alone() -> None:
    engines = config.load(env={}).engines
    assert [(e.name, e.kind) for e in engines] == [("embedded", "embedded")]


def test_tables_give_upstreams_with_their_fields_and_the_key_from_the_environment(
        tmp_path: Path) -> None:
    s = _load(tmp_path, """
[[engines]]
kind = "embedded"

[[engines]]
name = "gpu-box"
kind = "openai"
url = "http://10.0.0.5:8000/v1/"
api_key_env = "GPU_KEY"
models = ["llama-70b", "llama-8b"]
max_concurrent = 32
read_timeout_s = 12.5

[[engines]]
kind = "openai"
url = "https://other.example:9000/api"
""", env={"GPU_KEY": "sk-secret-123"})
    embedded, gpu, other = s.engines
    assert embedded.kind == "embedded"
    assert (gpu.name, gpu.url, gpu.models, gpu.max_concurrent, gpu.read_timeout_s) == (
        "gpu-box", "http://10.0.0.5:8000", ("llama-70b", "llama-8b"), 32, 12.5)
    assert gpu.api_key == "sk-secret-123" and gpu.api_key_env == "GPU_KEY"
    assert "sk-secret-123" not in repr(s) and "sk-secret-123" not in repr(gpu)
    assert (other.name, other.url, other.models) == (
        "upstream-2", "https://other.example:9000/api", ())


@pytest.mark.parametrize(("table", "message"), [
    ('kind = "openai"', "needs a url"),
    ('kind = "openai"\nurl = "ftp://x"', "url must be http"),
    ('kind = "openai"\nurl = "http://u:p@host:1"', "must not carry"),
    ('kind = "openai"\nurl = "http://h:1"\napi_key_env = "NOPE"', "NOPE .* is not set"),
    ('kind = "embedded"\nurl = "http://h:1"', "embedded engine takes no url"),
    ('kind = "vllm"', "must be one of embedded, openai"),
    ('kind = "openai"\nurl = "http://h:1"\nmax_concurrent = 0', "must be >= 1"),
    ('kind = "openai"\nurl = "http://h:1"\nmodels = "a"\nmodles = 1', "unknown field 'modles'"),
    ('kind = "openai"\nurl = "http://h:1"\nmodels = [1]', "expects a list of strings"),
])
def test_bad_tables_are_refused_with_the_field_named(tmp_path: Path, table: str,
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, "[[engines]]\n" + table + "\n")


def test_names_are_unique_and_one_embedded_at_most(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names must be unique"):
        _load(tmp_path, '[[engines]]\nname = "a"\nkind = "openai"\nurl = "http://h:1"\n'
                        '[[engines]]\nname = "a"\nkind = "openai"\nurl = "http://h:2"\n')
    with pytest.raises(ConfigError, match="at most one embedded"):
        _load(tmp_path, '[[engines]]\nkind = "embedded"\n[[engines]]\nname = "b"\n')


def test_upstream_flags_replace_the_embedded_engine_or_add_to_the_tables(
        tmp_path: Path) -> None:
    s = config.load(_args(["--upstream", "http://a:1", "--upstream", "http://b:2/v1"]), env={})
    assert [(e.kind, e.name, e.url) for e in s.engines] == [
        ("openai", "upstream-1", "http://a:1"), ("openai", "upstream-2", "http://b:2")]
    s = config.load(env={"APPLIANCE_UPSTREAM": "http://a:1, http://b:2"})
    assert [e.url for e in s.engines] == ["http://a:1", "http://b:2"]
    s = _load(tmp_path, '[[engines]]\nkind = "embedded"\n', argv=["--upstream", "http://c:3"])
    assert [e.kind for e in s.engines] == ["embedded", "openai"]


def test_engine_fields_are_documented() -> None:
    docs = (config.REPO_ROOT / "docs" / "CONFIG.md").read_text()
    assert "## Engines" in docs
    for field in ENGINE_FIELDS:
        assert f"| `{field.name}` |" in docs, f"engine field {field.name} is not documented"
