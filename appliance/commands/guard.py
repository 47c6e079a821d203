"""``appliance guard``: check a text, or evaluate a labelled JSONL set, with the guard rails."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from appliance import config
from appliance.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    guard = sub.add_parser("guard", help="check a text, or evaluate a labelled JSONL set, "
                                          "with the guard rails")
    guard.add_argument("action", choices=["check", "eval"])
    guard.add_argument("target", nargs="?", default=None, metavar="TEXT|FILE",
                       help="check: the text (- for stdin); eval: rows {\"text\", \"label\"}")
    guard.add_argument("--policy", default=None, help="a preset or a policy TOML file "
                                                      "(default: the guard_policy setting)")
    guard.add_argument("--role", choices=["user", "system", "assistant"], default="user",
                       help="check: user or system (input rail; a system prompt takes the "
                            "policy's system_action) or assistant (output rail)")
    config.add_arguments(guard)
    guard.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import orjson

    from appliance.guards import evaluate
    from appliance.guards.rails import Guards

    settings = config.load(args)
    guards = Guards.load(default_policy=args.policy or settings.guard_policy,
                         threads=settings.guard_threads)
    try:
        rails = guards.rails()
        if args.action == "check":
            if not args.target:
                raise ConfigError("guard check needs a TEXT (or - for standard input)")
            text = sys.stdin.read() if args.target == "-" else args.target
            report = asyncio.run(guards.check_text(text, args.role, rails))
            from appliance.web.guard_routes import report_body

            print(orjson.dumps(report_body(report), option=orjson.OPT_INDENT_2).decode())
            return 0 if report.allowed else 1
        if not args.target:
            raise ConfigError("guard eval needs a FILE.jsonl")
        rows = evaluate.read_rows(Path(args.target))
        print(evaluate.format_report(asyncio.run(evaluate.evaluate(guards, rails, rows))))
        return 0
    finally:
        guards.close()
