"""Run by the check's venv: which version of each requirement it resolves, where from, and
whether the module imports. Prints one JSON list.

    venv/bin/python -m gpu_check.deps 'aiohttp==3.14.5' 'openai==3.51.0' ...
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import re
import sys
from typing import Any

_MODULES = {"llama-cpp-python": "llama_cpp", "scikit-build-core": "scikit_build_core",
            "typing-extensions": "typing_extensions", "sqlite-utils": "sqlite_utils",
            "prometheus-client": "prometheus_client", "pyyaml": "yaml"}


def row(requirement: str) -> dict[str, Any]:
    match = re.match(r"([A-Za-z0-9._-]+)\s*(.*)", requirement)
    assert match is not None, requirement
    name, spec = match.group(1), match.group(2).strip()
    out: dict[str, Any] = {"name": name, "wanted": spec or "any"}
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return {**out, "found": None, "source": "missing", "imports": False}
    where = str(dist.locate_file(""))
    out["found"] = dist.version
    out["source"] = "venv" if where.startswith(sys.prefix) else "image"
    pinned = spec[2:] if spec.startswith("==") else None
    out["as_pinned"] = pinned is None or pinned == dist.version
    module = _MODULES.get(name.lower(), name.lower().replace("-", "_"))
    try:
        importlib.import_module(module)
        out["imports"] = True
    except Exception as exc:  # any failure to import is what this reports
        out["imports"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def main(argv: list[str]) -> int:
    print(json.dumps([row(r) for r in argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
