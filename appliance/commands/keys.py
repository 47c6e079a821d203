"""``appliance keys``: create, list or revoke API keys in the appliance's database."""

from __future__ import annotations

import argparse
import sys
import time

from appliance import config
from appliance.commands._args import date_arg
from appliance.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    keys.add_argument("--expires", type=date_arg("--expires", "2027-01-31"), default=None,
                      metavar="DATE")
    keys.add_argument("--all", action="store_true", help="list: include revoked keys")
    keys.add_argument("--policy", dest="guard_policy", default=None, metavar="NAME_OR_FILE",
                      help="create: the guard policy for this key's requests (a preset such "
                           "as default or clinic, or a TOML file; default: the server's)")
    config.add_arguments(keys)
    keys.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance.admission.keys import KeyStore
    from appliance.store.db import Database
    from appliance.store.pseudonyms import Pseudonyms

    name: str | None = args.key_name or args.positional_name
    settings = config.load(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ids = Pseudonyms.load_or_create(settings.data_dir)
    with Database(settings.database, pseudonyms=ids) as db:
        store = KeyStore(db)
        if args.action == "create":
            if not name:
                raise ConfigError("keys create needs --name NAME")
            created = store.create_sync(
                name, rpm=args.rpm, tpm=args.tpm, burst_requests=args.burst_requests,
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
            if not name:
                raise ConfigError("keys revoke needs a NAME")
            record = store.revoke_sync(name)
            print(f"revoked key {record.name!r} ({record.masked})")
    return 0


def _checked_policy(name: str | None) -> str | None:
    """A policy given to a key must load now, not at the key's first request."""
    if name is None:
        return None
    from appliance.guards.policy import load_policy

    policy = load_policy(name)
    return str(policy.path) if "/" in name or name.endswith(".toml") else policy.name

