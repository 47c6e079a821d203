"""Every endpoint and every CLI command is documented in the README."""

from __future__ import annotations

import argparse

from aiohttp import web

from appliance import cli
from appliance.config import REPO_ROOT
from appliance.web.app import ROUTES

README = (REPO_ROOT / "README.md").read_text()


def test_every_endpoint_is_in_the_readme() -> None:
    paths = {(r.method, r.path) for table in ROUTES for r in table
             if isinstance(r, web.RouteDef)}
    assert ("GET", "/metrics") in paths and ("POST", "/v1/guard") in paths
    assert paths, "no routes found"
    for method, path in paths:
        assert f"| {method} | `{path}` |" in README, f"{method} {path} is not documented"


def test_every_cli_command_is_in_the_readme() -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        assert f"`appliance {name}" in README, f"appliance {name} is not documented"
