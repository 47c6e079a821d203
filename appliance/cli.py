"""The `appliance` command: argparse -> settings -> run."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import signal
import sys
import time
from collections.abc import Sequence

from appliance import config
from appliance.engine.models import ModelStore
from appliance.errors import ApplianceError, ConfigError


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _serve(settings: config.Settings) -> None:
    from appliance.web.app import serve  # aiohttp is imported only when serving

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop=stop)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = config.load(args)
    _setup_logging(settings.log_level)
    asyncio.run(_serve(settings))
    return 0


def _verify_models(store: ModelStore, ids: Sequence[str], progress: bool) -> int:
    """Check every pinned file (chat models, encoder, guard classifiers) with a progress bar
    on stderr (on a terminal, or with --progress)."""
    from appliance.pins import all_pins, check_pin
    from appliance.progress import ProgressBar

    failures = 0
    for pin in all_pins(store, ids):
        bar = ProgressBar(pin.size, pin.label, sys.stderr,
                          enabled=progress or sys.stderr.isatty())
        result = check_pin(pin, bar.advance)
        bar.close()
        if result.ok:
            print(f"{pin.label}: ok  {result.message}")
        else:
            failures += 1
            print(f"{pin.label}: FAILED: {result.message}", file=sys.stderr)
    return 1 if failures else 0


def cmd_models(args: argparse.Namespace) -> int:
    settings = config.load(args)
    store = ModelStore(settings.manifest, settings.models_dir)
    if args.action == "verify":
        return _verify_models(store, args.ids, args.progress)
    failures = 0
    for spec in store.specs:
        if args.ids and spec.id not in args.ids:
            continue
        try:
            if args.action == "assemble":
                store.assemble(spec)
                verified = store.verify(spec)
                print(f"{spec.id}: ready, sha256 ok, at {verified.path}")
            else:
                state = "available" if store.is_available(spec) else "not installed"
                print(f"{spec.id:28} {spec.quantization:8} {state:14} {spec.package}")
        except ApplianceError as exc:
            failures += 1
            print(f"{spec.id}: FAILED: {exc}", file=sys.stderr)
    return 1 if failures else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from appliance import doctor

    settings = config.load(args)
    findings = doctor.diagnose(doctor.gather(settings), settings)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for f in findings:
        print(f"[{marks[f.status]}] {f.check:9} {f.message}")
        if f.fix and f.status != "ok":
            print(f"{'':16}fix: {f.fix}")
    if doctor.blocking(findings):
        print("appliance doctor: something above blocks serving", file=sys.stderr)
        return 1
    return 0


def _parse_expiry(value: str) -> float:
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--expires takes a date like 2027-01-31 or 2027-01-31T18:00, not {value!r}"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as an operator would mean it
    return when.timestamp()


def cmd_keys(args: argparse.Namespace) -> int:
    from appliance.admission.keys import KeyStore
    from appliance.store.db import Database

    settings = config.load(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with Database(settings.database) as db:
        store = KeyStore(db)
        if args.action == "create":
            if not args.name:
                raise ConfigError("keys create needs --name NAME")
            created = store.create_sync(
                args.name, rpm=args.rpm, tpm=args.tpm, burst_requests=args.burst_requests,
                burst_tokens=args.burst_tokens, max_concurrent=args.max_concurrent,
                scopes=[s.strip() for s in args.scopes.split(",") if s.strip()],
                expires_at=args.expires, priority=args.priority)
            print(f"created key {created.record.name!r}; its secret is shown only now:",
                  file=sys.stderr)
            print(created.secret)
        elif args.action == "list":
            rows = store.list_sync(include_revoked=args.all)
            print(f"{'name':24} {'key':18} {'scopes':32} {'rpm':>6} {'tpm':>8} "
                  f"{'conc':>4} state")
            now = time.time()
            for r in rows:
                state = ("revoked" if r.revoked else "expired" if r.expired(now)
                         else "active")
                print(f"{r.name:24} {r.masked:18} {','.join(sorted(r.scopes)):32} "
                      f"{r.rpm if r.rpm is not None else '-':>6} "
                      f"{r.tpm if r.tpm is not None else '-':>8} "
                      f"{r.max_concurrent if r.max_concurrent is not None else '-':>4} {state}")
        else:
            if not args.name:
                raise ConfigError("keys revoke needs a NAME")
            record = store.revoke_sync(args.name)
            print(f"revoked key {record.name!r} ({record.masked})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=(
        "An on-prem LLM server speaking the OpenAI API."))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    config.add_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="list, assemble or verify the manifest's models")
    models.add_argument("action", choices=["list", "assemble", "verify"])
    models.add_argument("ids", nargs="*", help="only these model ids (default: all)")
    models.add_argument("--progress", action="store_true",
                        help="verify: draw a progress bar on stderr even when not a terminal")
    config.add_arguments(models)
    models.set_defaults(func=cmd_models)
    doctor = sub.add_parser("doctor", help="check this machine can serve; print what to fix")
    config.add_arguments(doctor)
    doctor.set_defaults(func=cmd_doctor)

    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    keys.add_argument("action", choices=["create", "list", "revoke"])
    keys.add_argument("positional_name", nargs="?", default=None, metavar="NAME",
                      help="key name (for revoke; create takes --name)")
    keys.add_argument("--name", dest="key_name", default=None)
    keys.add_argument("--rpm", type=int, default=None, help="requests per minute")
    keys.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    keys.add_argument("--burst-requests", type=int, default=None)
    keys.add_argument("--burst-tokens", type=int, default=None)
    keys.add_argument("--max-concurrent", type=int, default=None)
    keys.add_argument("--priority", type=int, default=0)
    keys.add_argument("--scopes", default="chat,embeddings,memory",
                      help="comma-separated: chat, embeddings, memory, admin")
    keys.add_argument("--expires", type=_parse_expiry, default=None, metavar="DATE")
    keys.add_argument("--all", action="store_true", help="list: include revoked keys")
    config.add_arguments(keys)
    keys.set_defaults(func=cmd_keys)

    bench = sub.add_parser("bench", help="load-test an OpenAI-compatible endpoint")
    bench.add_argument("--url", default="http://127.0.0.1:8080/v1")
    bench.add_argument("--model", default="default")
    bench.add_argument("--concurrency", default="1,4,16,64",
                       help="comma-separated concurrency levels")
    bench.add_argument("--requests", type=int, default=None,
                       help="requests per level (default: max(2 x concurrency, 8))")
    bench.add_argument("--max-tokens", type=int, default=64)
    bench.add_argument("--prompt-set", default="short",
                       help="short, shared-system, or a JSONL file")
    bench.add_argument("--api-key", default=None)
    bench.add_argument("--json", default=None, help="also write the results as JSON here")
    bench.add_argument("--ttft-p95", type=float, default=2.0, help="criterion, seconds")
    bench.add_argument("--itl-p95", type=float, default=0.1, help="criterion, seconds")
    bench.add_argument("--max-error-rate", type=float, default=0.01, help="criterion")
    bench.set_defaults(func=cmd_bench)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    from appliance import bench

    return bench.main(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "keys":
        args.name = args.key_name or args.positional_name
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
