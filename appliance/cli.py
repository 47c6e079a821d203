"""The `appliance` command: argparse -> settings -> run."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance import config
from appliance.engine.models import ModelStore
from appliance.errors import ApplianceError, ConfigError


def _setup_logging(level: str) -> None:
    from appliance.observability.logs import setup_logging  # JSON lines

    setup_logging(level)


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
    from appliance.tools.pins import all_pins, check_pin
    from appliance.tools.progress import ProgressBar

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
    from appliance.tools import doctor

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


def _date_arg(flag: str, example: str) -> Callable[[str], float]:
    """An argparse type for ``flag``: an ISO date or date-time (local time when no zone is
    given, as an operator would mean it) as a POSIX timestamp."""
    def parse(value: str) -> float:
        try:
            when = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes a date like {example} or {example}T08:00, not {value!r}"
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()
        return when.timestamp()

    return parse


def _checked_policy(name: str | None) -> str | None:
    """A policy given to a key must load now, not at the key's first request."""
    if name is None:
        return None
    from appliance.guards.policy import load_policy

    policy = load_policy(name)
    return str(policy.path) if "/" in name or name.endswith(".toml") else policy.name


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
                expires_at=args.expires, priority=args.priority,
                guard_policy=_checked_policy(args.guard_policy))
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


# -- audit ------------------------------------------------------------------------------

def _parse_head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError(
            f"--head takes SEQ:HASH as printed by `appliance audit verify`, not {value!r}")
    return int(seq), digest.lower()


def cmd_audit(args: argparse.Namespace) -> int:
    import orjson

    from appliance.observability.audit import Audit
    from appliance.store.db import Database

    settings = config.load(args)
    if not settings.database.exists():
        raise ConfigError(f"no database at {settings.database}")
    with Database(settings.database) as db:
        log = Audit(db)
        if args.action == "verify":
            result = log.verify_sync(args.head)
            if not result.ok:
                print(f"audit log BROKEN at record {result.broken_seq}: {result.reason} "
                      f"({result.records} records verified before it)", file=sys.stderr)
                return 1
            print(f"audit log ok: {result.records} records; head "
                  f"{result.head_seq}:{result.head_hash}")
            return 0
        if args.since is None:
            raise ConfigError("audit export needs --since DATE")
        records = log.export_sync(args.since)
        lines = b"".join(orjson.dumps(r.as_json()) + b"\n" for r in records)
        if args.out:
            with open(args.out, "wb") as fh:
                fh.write(lines)
            print(f"wrote {len(records)} records to {args.out}", file=sys.stderr)
        else:
            sys.stdout.buffer.write(lines)
            sys.stdout.flush()
    return 0


def _add_audit_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="verify or export the hash-chained audit log")
    audit.add_argument("action", choices=["verify", "export"])
    audit.add_argument("--since", type=_date_arg("--since", "2026-11-01"), default=None,
                       metavar="DATE",
                       help="export: records from this date/time on (local time)")
    audit.add_argument("--out", default=None, metavar="FILE",
                       help="export: write JSON lines here (default: stdout)")
    audit.add_argument("--head", type=_parse_head, default=None, metavar="SEQ:HASH",
                       help="verify: a head printed by an earlier verify, kept elsewhere; "
                            "it must still be in the chain")
    config.add_arguments(audit)
    audit.set_defaults(func=cmd_audit)


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
    keys.add_argument("--expires", type=_date_arg("--expires", "2027-01-31"), default=None,
                      metavar="DATE")
    keys.add_argument("--all", action="store_true", help="list: include revoked keys")
    keys.add_argument("--policy", dest="guard_policy", default=None, metavar="NAME_OR_FILE",
                      help="create: the guard policy for this key's requests (a preset such "
                           "as default or clinic, or a TOML file; default: the server's)")
    config.add_arguments(keys)
    keys.set_defaults(func=cmd_keys)

    guard = sub.add_parser("guard", help="check a text, or evaluate a labelled JSONL set, "
                                          "with the guard rails")
    guard.add_argument("action", choices=["check", "eval"])
    guard.add_argument("target", nargs="?", default=None, metavar="TEXT|FILE",
                       help="check: the text (- for stdin); eval: rows {\"text\", \"label\"}")
    guard.add_argument("--policy", default=None, help="a preset or a policy TOML file "
                                                      "(default: the guard_policy setting)")
    guard.add_argument("--role", choices=["user", "assistant"], default="user",
                       help="check: user (input rail) or assistant (output rail)")
    config.add_arguments(guard)
    guard.set_defaults(func=cmd_guard)

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
    bench.add_argument("--allow-cache", action="store_true",
                       help="let a response cache answer (by default every request says "
                            "Cache-Control: no-cache: the load test measures generation)")
    bench.set_defaults(func=cmd_bench)
    _add_audit_parser(sub)
    return parser


def cmd_guard(args: argparse.Namespace) -> int:
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


def cmd_bench(args: argparse.Namespace) -> int:
    from appliance.tools import bench

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
