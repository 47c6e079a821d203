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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config_engines import ROUTING_SETTINGS, EngineSettings, resolve_engines
from appliance.errors import ConfigError
from appliance.resources import data_root
from appliance.setting import Setting
from appliance.setting import coerce as _coerce

ENV_PREFIX = "APPLIANCE_"
REPO_ROOT = data_root()  # the repository, or the unpacked data of the frozen executable


def default_data_dir() -> Path:
    """Where the appliance writes by default: ``$XDG_DATA_HOME/appliance``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "appliance"


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
    Setting("split_mode", str, "layer", "With several GPUs, how the offloaded layers are "
            "split: layer (whole layers per GPU), row (each matrix across GPUs), none (main_gpu "
            "only).", choices=("layer", "row", "none")),
    Setting("main_gpu", int, 0, "The GPU that holds the model with split_mode none (and the "
            "small tensors with row).", minimum=0),
    Setting("threads", int, 0, "CPU threads for decoding (0 = number of cores).", minimum=0),
    Setting("prefix_reuse_min", int, 16, "Shortest shared prompt prefix (tokens) worth "
            "reusing from another sequence's KV cache. 0 turns prefix reuse off: every "
            "prompt is decoded whole (for comparisons).", minimum=0),
    Setting("chat_template_fallback", str, "",
            "Jinja chat template used when a model's GGUF has none. Empty: such models "
            "refuse chat requests with a clear error (completions still work)."),
    Setting("max_body_bytes", int, 4 * 1024 * 1024, "Largest accepted request body.",
            minimum=1024),
    Setting("max_n", int, 8, "Most choices (`n`) one request may ask for; each is a sequence "
            "of its own, so at most `parallel`.", minimum=1),
    Setting("cors_origins", str, "", "Browser origins allowed to call the API (CORS), "
            "comma-separated, e.g. `https://app.example.org`; `*` allows any. Empty: CORS off."),
    Setting("queue_depth", int, 64, "Requests that may wait for a decoding slot; beyond "
            "this, new requests get 503 with Retry-After.", minimum=0),
    Setting("queue_timeout_s", float, 120.0, "Longest a request waits for a decoding slot "
            "(seconds) before a 503; requests whose estimated wait is longer are refused at "
            "once. The default lets a full queue (queue_depth) drain on a small CPU box "
            "(about one 64-token answer per second on 2 cores) without refusals.",
            minimum=0.001, flag_name="--queue-timeout"),
    Setting("drain_timeout", float, 30.0, "On SIGTERM/SIGINT: seconds in-flight requests "
            "may take to finish while new ones get 503, before the server stops.", minimum=0),
    Setting("max_connections", int, 1024, "Open client connections at most; a connection "
            "beyond it is answered 503 server_overloaded and closed at once.", minimum=1),
    Setting("idle_timeout_s", float, 30.0, "Seconds a connection may hold no complete "
            "request (headers still arriving, or idle between requests) before it is "
            "closed.", minimum=0.1),
    Setting("body_timeout_s", float, 30.0, "Seconds a client may take to send a request's "
            "body once its headers arrived; slower gets 408.", minimum=0.1),
    Setting("stream_stall_timeout_s", float, 30.0, "Seconds a streamed answer may wait for "
            "a client that reads nothing; then its generation is cancelled and its slot "
            "freed.", minimum=0.1),
    Setting("embeddings_max_tokens", int, 32768, "Tokens (of the encoder) one "
            "/v1/embeddings call may hold, all inputs together.", minimum=1),
    Setting("guard_max_tokens", int, 16384, "Tokens (of the encoder) one /v1/guard call may "
            "hold, all inputs together.", minimum=1),
    Setting("key_cache_ttl", float, 5.0, "Seconds an API-key lookup is cached in memory. "
            "Revocation is immediate in the server; a key revoked by another process is "
            "refused within this time.", minimum=0),
    Setting("database", Path, None, "SQLite database (keys, and later memory, cache, "
            "audit). Default: <data_dir>/appliance.db."),
    Setting("guards", bool, True, "Run the guardrails on inputs and streamed outputs "
            "(off only for benchmarking the bare engine)."),
    Setting("guard_policy", str, "default", "Guard policy for keys that name none: a preset "
            "(default, clinic) or the path of a policy TOML file."),
    Setting("guard_holdback_tokens", int, 32, "Output rail: longest run of tokens held back "
            "with no sentence end (whole-sentence windows, or a sentence held back by a "
            "flag) before it is checked as one window; the policy's [output] window_tokens "
            "sets the small windows.", minimum=1),
    Setting("guard_threads", int, 1, "CPU threads of the guard network and the sentence "
            "encoder (ONNX Runtime).", minimum=1),
    Setting("cpu_turns", bool, True, "The engine and the guard models (guard network; "
            "encoder of cache, memory, embeddings) take turns on the CPU instead of running "
            "at once: on a few cores, running both at once slows both far more than either "
            "costs. Off by itself when layers are offloaded to a GPU (n_gpu_layers != 0)."),
    Setting("seed", int, -1, "Seed for requests that give none (-1: random per request).",
            minimum=-1),
    Setting("log_level", str, "info", "Log level: debug, info, warning, error.",
            choices=("debug", "info", "warning", "error")),
    # -- observability --
    Setting("log_content", bool, False, "Log the request body and the response text in the "
            "access log, after PII redaction (e-mail, phone, card, ... become [EMAIL], ...). "
            "Off by default: logs then hold no prompt or response text."),
    Setting("metrics_access", str, "auto", "Who may read GET /metrics: 'admin' (a key with "
            "the admin scope), 'open' (anyone who reaches the port), or 'auto' (admin once API "
            "keys exist and the bind is not loopback, else open).",
            choices=("auto", "admin", "open")),
    Setting("metrics_key_labels", bool, False, "Label per-key metrics with the API key's "
            "name; off, every key is counted under one label value, so a scrape reveals no "
            "key names."),
    # --- memory and cache ---
    Setting("cache_enabled", bool, True, "Answer repeated requests from the response cache "
            "(exact and semantic tiers, per API key and user)."),
    Setting("cache_ttl_s", float, 3600.0, "Seconds a cached response may be served after it "
            "was stored.", minimum=1),
    Setting("cache_threshold", float, 0.95, "Cosine similarity of the last user turn needed "
            "for a semantic cache hit (1.0: exact tier only, in effect).", minimum=0),
    Setting("cache_max_entries", int, 100_000, "Most cached responses kept; beyond this the "
            "least recently used are evicted.", minimum=1),
    Setting("cache_max_temperature", float, 0.0, "Highest sampling temperature whose "
            "responses are cached (0: only greedy, deterministic answers).", minimum=0),
    Setting("cache_sweep_interval_s", float, 60.0, "Seconds between background sweeps: "
            "cache expiry and size cap, memory retention and garbage collection, saving "
            "the vector indexes.",
            minimum=0.05),
    Setting("memory_enabled", bool, True, "Inject session turns and relevant user/global "
            "memories into chat requests that name a user or a session."),
    Setting("memory_session_ttl_h", float, 24.0, "Hours a session turn is kept after its "
            "last use (pinned entries are kept).", minimum=0),
    Setting("memory_user_ttl_days", float, 90.0, "Days a user memory is kept after its "
            "last use (pinned entries are kept). Global memories never expire.", minimum=0),
    Setting("memory_max_entries", int, 100_000, "Size budget of the memory table; beyond "
            "it the garbage collector drops the least important unpinned entries.",
            minimum=1),
    Setting("memory_inject_max_entries", int, 8, "Most memory entries injected into one "
            "chat request.", minimum=0),
    Setting("memory_inject_tokens", int, 256, "Token budget of the memory injected into "
            "one chat request.", minimum=0),
    Setting("memory_session_turns", int, 8, "Most recent session turns injected verbatim.",
            minimum=0),
    Setting("memory_min_similarity", float, 0.35, "Cosine similarity to the last user turn "
            "a user/global memory needs to be injected.", minimum=0),
    Setting("memory_summary_tokens", int, 500, "When a session's verbatim turns exceed "
            "this many tokens, older turns are summarised by the local model in the "
            "background (digests, then key-fact bullets). 0: never.", minimum=0),
    Setting("vector_m", int, 16, "hnswlib M (graph degree) of the vector indexes.",
            minimum=2),
    Setting("vector_ef_construction", int, 200, "hnswlib ef_construction of the vector "
            "indexes.", minimum=8),
    Setting("vector_ef_search", int, 64, "hnswlib ef at query time (recall against speed).",
            minimum=1),
    # --- the web console ---
    Setting("console", bool, None, "Serve the built-in web console (chat and operations "
            "pages) under /. Default: on when bound to a loopback address, off otherwise "
            "(set it to true to serve it on a network bind; it signs in with an API key)."),
    # --- engines and routing (the [[engines]] tables: see docs/CONFIG.md) ---
    *ROUTING_SETTINGS,
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
    split_mode: str
    main_gpu: int
    threads: int
    prefix_reuse_min: int
    chat_template_fallback: str
    max_body_bytes: int
    max_n: int
    cors_origins: str
    queue_depth: int
    queue_timeout_s: float
    drain_timeout: float
    max_connections: int
    idle_timeout_s: float
    body_timeout_s: float
    stream_stall_timeout_s: float
    embeddings_max_tokens: int
    guard_max_tokens: int
    key_cache_ttl: float
    database: Path
    guards: bool
    guard_policy: str
    guard_holdback_tokens: int
    guard_threads: int
    cpu_turns: bool
    seed: int
    log_level: str
    # -- observability --
    log_content: bool
    metrics_access: str
    metrics_key_labels: bool
    # memory and cache
    cache_enabled: bool
    cache_ttl_s: float
    cache_threshold: float
    cache_max_entries: int
    cache_max_temperature: float
    cache_sweep_interval_s: float
    memory_enabled: bool
    memory_session_ttl_h: float
    memory_user_ttl_days: float
    memory_max_entries: int
    memory_inject_max_entries: int
    memory_inject_tokens: int
    memory_session_turns: int
    memory_min_similarity: float
    memory_summary_tokens: int
    vector_m: int
    vector_ef_construction: int
    vector_ef_search: int
    console: bool | None  # None: on when the bind is loopback
    # engines and routing
    upstream: tuple[str, ...]
    default_model: str
    auto_small: str
    auto_large: str
    auto_prompt_tokens: int
    upstream_probe_interval_s: float
    upstream_eject_failures: int
    upstream_backoff_s: float
    engines: tuple[EngineSettings, ...] = ()  # the [[engines]] tables and --upstream URLs

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def n_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)


def _from_toml(path: Path) -> tuple[dict[str, Any], Any]:
    """The settings of a file, and its ``[[engines]]`` rows (None: none)."""
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
        if key == "engines":
            continue
        if isinstance(value, dict):
            continue  # sections of other components (later issues) are theirs to read
        name = key.replace("-", "_")
        if name not in _BY_NAME:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        out[name] = _coerce(_BY_NAME[name], value, str(path))
    return out, table.get("engines")


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
            action="append" if s.type is tuple else "store",  # repeatable
            help=f"{s.help} (env {ENV_PREFIX}{s.name.upper()}; default {s.default!s})",
        )


def load(
    args: argparse.Namespace | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings: defaults < TOML (--config or APPLIANCE_CONFIG) < env < flags.
    ``overrides`` may hold ``engines``: rows as a ``[[engines]]`` array would give them."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    config_path = getattr(args, "config", None) or env.get(ENV_PREFIX + "CONFIG") or None
    engine_rows: Any = None
    origin = "config"
    if config_path:
        toml_values, engine_rows = _from_toml(Path(config_path))
        values.update(toml_values)
        origin = str(config_path)
    values.update(_from_env(env))
    if args is not None:
        for s in SETTINGS:
            value = getattr(args, s.name, None)
            if value is not None:
                values[s.name] = _coerce(s, value, s.option)
    for name, value in (overrides or {}).items():
        if name == "engines":
            engine_rows, origin = value, "override"
            continue
        if name not in _BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _coerce(_BY_NAME[name], value, "override")
    if values["data_dir"] is None:
        values["data_dir"] = default_data_dir()
    if values["models_dir"] is None:
        values["models_dir"] = Path(values["data_dir"]) / "models"
    if values["database"] is None:
        values["database"] = Path(values["data_dir"]) / "appliance.db"
    engines = resolve_engines(engine_rows, values["upstream"], env, origin)
    return Settings(**values, engines=engines)

