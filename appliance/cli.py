"""The `appliance` command: argparse -> settings -> run; each subcommand is a module of
:mod:`appliance.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from appliance.commands import audit, bench, doctor, guard, keys, models, serve
from appliance.errors import ApplianceError

COMMANDS = (serve, models, doctor, keys, guard, bench, audit)  # in the order --help lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=(
        "An on-prem LLM server speaking the OpenAI API."))
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ApplianceError as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
