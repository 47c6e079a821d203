"""The ``[[engines]]`` tables: what generates the text.

An engine is the embedded llama.cpp engine (``kind = "embedded"``, the default: the model
and the top-level settings ``parallel``, ``ctx_size``, ... configure it) or a server
upstream that speaks the OpenAI API (``kind = "openai"``: vLLM, llama-server, another
appliance)::

    [[engines]]                      # keep the embedded engine next to the upstream ones
    kind = "embedded"

    [[engines]]
    name = "gpu-box"
    kind = "openai"
    url = "http://10.0.0.5:8000"     # the server's root; /v1/... is appended
    api_key_env = "GPU_BOX_KEY"      # the NAME of the variable holding its key
    models = ["llama-3.1-70b"]       # left out: discovered from its GET /v1/models
    max_concurrent = 32

No table at all means the embedded engine alone; tables without an embedded one mean no
local model is loaded. ``appliance serve --upstream URL`` (repeatable; or
``APPLIANCE_UPSTREAM="URL,URL"``) adds one openai engine per URL with its models
discovered; with no ``[[engines]]`` table it replaces the embedded engine.

Each field is declared once in ``ENGINE_FIELDS`` (name, type, default, help), coerced and
checked like a setting, and documented in docs/CONFIG.md from the same table. An upstream's
key is read from the environment here and nowhere else; it is never in a file, a repr or
a log line.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import ConfigError
from appliance.setting import Setting, coerce

EMBEDDED, OPENAI = "embedded", "openai"

ENGINE_FIELDS: tuple[Setting, ...] = (
    Setting("name", str, "", "Unique name of the engine in metrics, logs and /ready. "
            "Default: `embedded`, or `upstream-N` for the N-th openai engine."),
    Setting("kind", str, EMBEDDED, "`embedded` (the in-process llama.cpp engine, "
            "configured by the top-level settings) or `openai` (a server upstream speaking "
            "the OpenAI API).", choices=(EMBEDDED, OPENAI)),
    Setting("url", str, "", "openai: the server's root URL (`http://host:port`, or with a "
            "path prefix such as `/api`); `/v1/...` is appended."),
    Setting("api_key_env", str, "", "openai: the NAME of the environment variable holding "
            "the key sent as `Authorization: Bearer`. The key itself is never read from "
            "the file and never logged. Empty: no key is sent."),
    Setting("models", tuple, (), "openai: the model ids it serves. Empty: discovered from "
            "its `GET /v1/models`, at start and by every health probe."),
    Setting("max_concurrent", int, 16, "openai: requests sent to it at once (its admission "
            "slots); more wait in the admission queue like the embedded engine's.",
            minimum=1),
    Setting("max_tokens", int, 2048, "openai: completion tokens asked for when a request "
            "gives no max_tokens (and reserved from the key's token bucket).", minimum=1),
    Setting("connect_timeout_s", float, 5.0, "openai: seconds to connect before the "
            "request fails over to another engine (or 502).", minimum=0.001),
    Setting("read_timeout_s", float, 60.0, "openai: longest silence (seconds) from the "
            "server, before or between streamed chunks, before a 504.", minimum=0.001),
)
_FIELDS = {f.name: f for f in ENGINE_FIELDS}


@dataclass(frozen=True)
class EngineSettings:
    name: str
    kind: str
    url: str = ""
    api_key_env: str = ""
    models: tuple[str, ...] = ()
    max_concurrent: int = 16
    max_tokens: int = 2048
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    api_key: str = field(default="", repr=False)  # from api_key_env; never logged


def _check_url(url: str, where: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: url must be http://host[:port][/prefix] or https://..., "
                          f"got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{where}: url must not carry a query, fragment or credentials "
                          f"(put the key in the variable named by api_key_env)")
    return url.rstrip("/").removesuffix("/v1")


def _one(row: Any, where: str, env: Mapping[str, str], n_upstream: int) -> EngineSettings:
    if not isinstance(row, dict):
        raise ConfigError(f"{where} must be a table ([[engines]])")
    values: dict[str, Any] = {f.name: f.default for f in ENGINE_FIELDS}
    for key, value in row.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"{where}: unknown field {key!r} (known: "
                              f"{', '.join(_FIELDS)})")
        values[name] = coerce(_FIELDS[name], value, where)
    kind = values["kind"]
    if kind == EMBEDDED:
        extra = [k for k in ("url", "api_key_env", "models") if values[k]]
        if extra:
            raise ConfigError(f"{where}: an embedded engine takes no {', '.join(extra)} "
                              f"(the top-level settings configure it)")
        return EngineSettings(name=values["name"] or EMBEDDED, kind=kind)
    if not values["url"]:
        raise ConfigError(f"{where}: an openai engine needs a url")
    values["url"] = _check_url(values["url"], where)
    values["name"] = values["name"] or f"upstream-{n_upstream}"
    var = values["api_key_env"]
    if var:
        if not env.get(var):
            raise ConfigError(f"{where}: the environment variable {var} (api_key_env of "
                              f"engine {values['name']!r}) is not set")
        values["api_key"] = env[var]
    return EngineSettings(**values)


def resolve_engines(rows: Any, upstreams: Sequence[str], env: Mapping[str, str],
            origin: str = "config") -> tuple[EngineSettings, ...]:
    """The engines of the ``[[engines]]`` rows (None: none given) and ``--upstream`` URLs."""
    if rows is None:
        rows = [] if upstreams else [{"kind": EMBEDDED}]
    if not isinstance(rows, list):
        raise ConfigError(f"{origin}: engines must be an array of tables ([[engines]])")
    rows = [*rows, *({"kind": OPENAI, "url": url} for url in upstreams)]
    engines: list[EngineSettings] = []
    for i, row in enumerate(rows):
        n_upstream = sum(e.kind == OPENAI for e in engines) + 1
        engines.append(_one(row, f"{origin}: engines[{i}]", env, n_upstream))
    names = [e.name for e in engines]
    if len(set(names)) != len(names):
        raise ConfigError(f"{origin}: engine names must be unique, got {names}")
    if sum(e.kind == EMBEDDED for e in engines) > 1:
        raise ConfigError(f"{origin}: at most one embedded engine")
    if not engines:
        raise ConfigError(f"{origin}: no engine: give an embedded or an openai engine")
    return tuple(engines)


def describe() -> str:
    """The engine fields as Markdown (for docs/CONFIG.md)."""
    rows = ["| field | default | help |", "|---|---|---|"]
    for f in ENGINE_FIELDS:
        default = ", ".join(f.default) if isinstance(f.default, tuple) else str(f.default)
        rows.append(f"| `{f.name}` | `{default}` | {f.help} |")
    return "\n".join(rows) + "\n"


# The top-level settings of engines and routing (part of config.SETTINGS).
ROUTING_SETTINGS: tuple[Setting, ...] = (
    Setting("upstream", tuple, (), "Root URL of an OpenAI-API server to generate with "
            "(repeat the flag; comma-separated in the environment): one openai engine each, "
            "its models discovered. With no [[engines]] table it replaces the embedded "
            "engine."),
    Setting("default_model", str, "", "The model `\"default\"` names: any model an engine "
            "serves. Empty: the embedded engine's, else the first upstream model."),
    Setting("auto_small", str, "", "Model `\"auto\"` routes to unless the rule picks "
            "auto_large (see README, Scaling out). Empty: `auto` is not offered."),
    Setting("auto_large", str, "", "Model `\"auto\"` routes to for prompts over "
            "auto_prompt_tokens, requests with tools or a structured response_format, and "
            "chats whose last user turn matches a policy topic with route = \"large\"."),
    Setting("auto_prompt_tokens", int, 1024, "`auto`: prompts over this many tokens go to "
            "auto_large (counted by the embedded tokenizer for an embedded model, else "
            "estimated as characters / 4).", minimum=1),
    Setting("upstream_probe_interval_s", float, 5.0, "Seconds between health probes "
            "(GET /v1/models, which also refreshes discovered models) of each upstream.",
            minimum=0.05),
    Setting("upstream_eject_failures", int, 3, "Consecutive failures (requests or probes) "
            "after which an upstream is ejected from routing.", minimum=1),
    Setting("upstream_backoff_s", float, 10.0, "Seconds an ejected upstream stays out "
            "before it is tried again; doubles on each ejection in a row, up to 32 times "
            "this.", minimum=0.01),
)
