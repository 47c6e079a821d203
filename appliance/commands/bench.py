"""``appliance bench``: load-test an OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible endpoint")
    bench.add_argument("--url", default="http://127.0.0.1:8080/v1")
    bench.add_argument("--model", default="default")
    bench.add_argument("--concurrency", default="1,4,16,64",
                       help="comma-separated concurrency levels")
    bench.add_argument("--requests", type=int, default=None,
                       help="requests per level (default: max(2 x concurrency, 8))")
    bench.add_argument("--max-tokens", type=int, default=64)
    bench.add_argument("--temperature", type=float, default=0.0,
                       help="sampling temperature of every request (0: greedy)")
    bench.add_argument("--prompt-set", default="short",
                       help="short, shared-system, or a JSONL file")
    bench.add_argument("--api-key", default=None)
    bench.add_argument("--json", default=None, help="also write the results as JSON here")
    bench.add_argument("--ttft-p95", type=float, default=2.0, help="criterion, seconds")
    bench.add_argument("--itl-p95", type=float, default=0.1, help="criterion, seconds")
    bench.add_argument("--max-error-rate", type=float, default=0.01, help="criterion")
    bench.add_argument("--allow-cache", action="store_true",
                       help="let a response cache answer (by default every request says "
                            "Cache-Control: no-cache: the load test measures generation)")
    bench.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.tools import bench

    return bench.main(args)
