"""``appliance audit``: verify or export the hash-chained audit log."""

from __future__ import annotations

import argparse
import sys

from appliance import config
from appliance.commands._args import date_arg
from appliance.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser("audit", help="verify or export the hash-chained audit log")
    audit.add_argument("action", choices=["verify", "export"])
    audit.add_argument("--since", type=date_arg("--since", "2026-11-01"), default=None,
                       metavar="DATE",
                       help="export: records from this date/time on (local time)")
    audit.add_argument("--out", default=None, metavar="FILE",
                       help="export: write JSON lines here (default: stdout)")
    audit.add_argument("--head", type=_parse_head, default=None, metavar="SEQ:HASH",
                       help="verify: a head printed by an earlier verify, kept elsewhere; "
                            "it must still be in the chain")
    config.add_arguments(audit)
    audit.set_defaults(func=run)


def _parse_head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError(
            f"--head takes SEQ:HASH as printed by `appliance audit verify`, not {value!r}")
    return int(seq), digest.lower()


def run(args: argparse.Namespace) -> int:
    import orjson

    from appliance.observability.audit import Audit
    from appliance.store.db import Database
    from appliance.store.pseudonyms import Pseudonyms

    settings = config.load(args)
    if not settings.database.exists():
        raise ConfigError(f"no database at {settings.database}")
    ids = Pseudonyms.load_or_create(settings.data_dir)
    with Database(settings.database, pseudonyms=ids) as db:
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
