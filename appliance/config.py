"""Settings, declared once.

Every setting is one row of ``SETTINGS`` (name, type, default, help). The same table
drives the TOML config file, the ``APPLIANCE_*`` environment variables, the CLI flags
of ``appliance serve`` and the settings section of the docs (a test checks that).

Precedence, lowest first: defaults < TOML file < environment < command-line flags.
Only this module reads the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError

ENV_PREFIX = "APPLIANCE_"
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """Where the appliance writes by default: ``$XDG_DATA_HOME/appliance``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "appliance"


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    flag: bool = True  # exposed as a `serve` flag
    minimum: float | None = None
    flag_name: str = ""  # default: --name-with-dashes

    @property
    def option(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address to bind. Loopback by default."),
    Setting("port", int, 8080, "TCP port to listen on.", minimum=0),
    Setting("data_dir", Path, None, "Directory for everything the appliance writes "
            "(databases, indexes, assembled models). Default: $XDG_DATA_HOME/appliance."),
    Setting("manifest", Path, REPO_ROOT / "models" / "manifest.toml",
            "Model manifest (ids, files, sha256 pins, templates)."),
    Setting("models_dir", Path, None, "Directory holding assembled model files. "
            "Default: <data_dir>/models."),
    Setting("model", str, "smollm2-135m-instruct",
            "Model to serve: a manifest id or a path to a .gguf file."),
    Setting("parallel", int, 16, "Sequences decoded together (continuous-batching slots).",
            minimum=1),
    Setting("ctx_size", int, 2048, "Context length of each sequence, in tokens.",
            minimum=64),
    Setting("batch_size", int, 512, "Most tokens submitted to one llama_decode call "
            "(decode tokens of running sequences plus prefill chunks).", minimum=16),
    Setting("n_gpu_layers", int, 0, "Layers to offload to a GPU backend (0 = CPU only; "
            "-1 = all).", minimum=-1),
    Setting("threads", int, 0, "CPU threads for decoding (0 = number of cores).", minimum=0),
    Setting("prefix_reuse_min", int, 16, "Shortest shared prompt prefix (tokens) worth "
            "reusing from another sequence's KV cache. 0 turns prefix reuse off: every "
            "prompt is decoded whole (for comparisons).", minimum=0),
    Setting("chat_template_fallback", str, "",
            "Jinja chat template used when a model's GGUF has none. Empty: such models "
            "refuse chat requests with a clear error (completions still work)."),
    Setting("max_body_bytes", int, 4 * 1024 * 1024, "Largest accepted request body.",
            minimum=1024),
    Setting("queue_depth", int, 64, "Requests that may wait for a decoding slot; beyond "
            "this, new requests get 503 with Retry-After.", minimum=0),
    Setting("queue_timeout_s", float, 30.0, "Longest a request waits for a decoding slot "
            "(seconds) before a 503; requests whose estimated wait is longer are refused at "
            "once.", minimum=0.001, flag_name="--queue-timeout"),
    Setting("drain_timeout", float, 30.0, "On SIGTERM/SIGINT: seconds in-flight requests "
            "may take to finish while new ones get 503, before the server stops.", minimum=0),
    Setting("key_cache_ttl", float, 5.0, "Seconds an API-key lookup is cached in memory. "
            "Revocation is immediate in the server; a key revoked by another process is "
            "refused within this time.", minimum=0),
    Setting("database", Path, None, "SQLite database (keys, and later memory, cache, "
            "audit). Default: <data_dir>/appliance.db."),
    Setting("seed", int, -1, "Seed for requests that give none (-1: random per request).",
            minimum=-1),
    Setting("log_level", str, "info", "Log level: debug, info, warning, error."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    data_dir: Path
    manifest: Path
    models_dir: Path
    model: str
    parallel: int
    ctx_size: int
    batch_size: int
    n_gpu_layers: int
    threads: int
    prefix_reuse_min: int
    chat_template_fallback: str
    max_body_bytes: int
    queue_depth: int
    queue_timeout_s: float
    drain_timeout: float
    key_cache_ttl: float
    database: Path
    seed: int
    log_level: str

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def n_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    try:
        if setting.type is bool:
            if isinstance(value, str):
                out: Any = value.strip().lower() in {"1", "true", "yes", "on"}
            else:
                out = bool(value)
        elif setting.type is Path:
            out = Path(str(value)).expanduser()
        elif setting.type is int:
            if isinstance(value, bool):
                raise ValueError("a boolean is not an integer")
            out = int(value)
        else:
            out = setting.type(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{origin}: setting {setting.name!r} expects {setting.type.__name__}, "
            f"got {value!r}"
        ) from exc
    if setting.minimum is not None and out < setting.minimum:
        raise ConfigError(f"{origin}: setting {setting.name!r} must be >= {setting.minimum}")
    return out


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    table = raw.get("appliance", raw)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            continue  # sections of other components (later issues) are theirs to read
        name = key.replace("-", "_")
        if name not in _BY_NAME:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        out[name] = _coerce(_BY_NAME[name], value, str(path))
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting in SETTINGS:
        key = ENV_PREFIX + setting.name.upper()
        if key in env and env[key] != "":
            out[setting.name] = _coerce(setting, env[key], f"environment {key}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (`--ctx-size`, ...) plus `--config`."""
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML file with settings (top level or an [appliance] table).")
    for s in SETTINGS:
        if not s.flag:
            continue
        parser.add_argument(
            s.option, dest=s.name, default=None, metavar="VALUE",
            help=f"{s.help} (env {ENV_PREFIX}{s.name.upper()}; default {s.default!s})",
        )


def load(
    args: argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings: defaults < TOML (--config or APPLIANCE_CONFIG) < env < flags."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    config_path = getattr(args, "config", None) or env.get(ENV_PREFIX + "CONFIG") or None
    if config_path:
        values.update(_from_toml(Path(config_path)))
    values.update(_from_env(env))
    if args is not None:
        for s in SETTINGS:
            value = getattr(args, s.name, None)
            if value is not None:
                values[s.name] = _coerce(s, value, s.option)
    for name, value in (overrides or {}).items():
        if name not in _BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(_BY_NAME[name], value, "override")
    if values["data_dir"] is None:
        values["data_dir"] = default_data_dir()
    if values["models_dir"] is None:
        values["models_dir"] = Path(values["data_dir"]) / "models"
    if values["database"] is None:
        values["database"] = Path(values["data_dir"]) / "appliance.db"
    if values["log_level"] not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"log_level must be debug, info, warning or error, "
                          f"not {values['log_level']!r}")
    return Settings(**values)


def describe(settings: Sequence[Setting] = SETTINGS) -> str:
    """The settings table as Markdown (for docs/CONFIG.md)."""
    rows = ["| setting | env | flag | default | help |", "|---|---|---|---|---|"]
    for s in settings:
        default = "" if s.default is None else str(s.default)
        if isinstance(s.default, Path):
            default = str(s.default.relative_to(REPO_ROOT)) if s.default.is_relative_to(
                REPO_ROOT) else default
        rows.append(
            f"| `{s.name}` | `{ENV_PREFIX}{s.name.upper()}` | `{s.option}` "
            f"| `{default}` | {s.help} |"
        )
    return "\n".join(rows) + "\n"
