"""Regenerate docs/CONFIG.md from the settings table (a test checks it is current)."""

from __future__ import annotations

from appliance import config

HEADER = """# Settings

Every setting is declared once in `appliance/config.py`; the same table drives the TOML
config file, the `APPLIANCE_*` environment variables and the command-line flags.
Precedence, lowest first: defaults < TOML file (`--config FILE` or `APPLIANCE_CONFIG`;
settings at the top level or in an `[appliance]` table) < environment < flags.

Regenerate this file with `python scripts/gen_config_docs.py`.

"""


def render() -> str:
    return HEADER + config.describe()


if __name__ == "__main__":
    (config.REPO_ROOT / "docs" / "CONFIG.md").write_text(render())
