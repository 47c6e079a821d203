"""Regenerate docs/CONFIG.md from the settings table (a test checks it is current)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appliance import config, config_engines
from appliance.setting import Setting

HEADER = """# Settings

Every setting is declared once in `appliance/config.py`; the same table drives the TOML
config file, the `APPLIANCE_*` environment variables and the command-line flags.
Precedence, lowest first: defaults < TOML file (`--config FILE` or `APPLIANCE_CONFIG`;
settings at the top level or in an `[appliance]` table) < environment < flags.

Regenerate this file with `python scripts/gen_config_docs.py`.

"""


ENGINES = """
## Engines (`[[engines]]` tables)

What generates the text: the embedded llama.cpp engine (configured by the settings above)
and/or servers upstream that speak the OpenAI API (vLLM, llama-server, another appliance).
No `[[engines]]` table means the embedded engine alone; tables without an embedded one mean
no local model is loaded. `--upstream URL` (or `upstream`) adds one openai engine per URL,
its models discovered, and replaces the embedded engine when no table is given. A `url`
ending in `/v1` is taken as the server's root. Each table takes these fields (declared in
`appliance/config_engines.py`):

"""

EXAMPLE = """
```toml
[[engines]]                      # the embedded engine, kept next to the upstream one
kind = "embedded"

[[engines]]
name = "gpu-box"
kind = "openai"
url = "http://10.0.0.5:8000"
api_key_env = "GPU_BOX_KEY"      # export GPU_BOX_KEY=... before `appliance serve`
models = ["llama-3.1-70b"]
max_concurrent = 32
```
"""


def describe(settings: Sequence[Setting]) -> str:
    """The settings table as Markdown."""
    rows = ["| setting | env | flag | default | help |", "|---|---|---|---|---|"]
    for s in settings:
        default = "" if s.default in (None, ()) else str(s.default)
        if isinstance(s.default, Path):
            default = str(s.default.relative_to(config.REPO_ROOT)) if s.default.is_relative_to(
                config.REPO_ROOT) else default
        rows.append(f"| `{s.name}` | `{config.ENV_PREFIX}{s.name.upper()}` | `{s.option}` "
                    f"| `{default}` | {s.help} |")
    return "\n".join(rows) + "\n"


def render() -> str:
    return HEADER + describe(config.SETTINGS) + ENGINES + config_engines.describe() + EXAMPLE


if __name__ == "__main__":
    (config.REPO_ROOT / "docs" / "CONFIG.md").write_text(render())
