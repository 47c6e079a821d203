"""``appliance models``: list, assemble or verify the manifest's models."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from appliance import config
from appliance.engine.models import ModelStore
from appliance.errors import ApplianceError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="list, assemble or verify the manifest's models")
    models.add_argument("action", choices=["list", "assemble", "verify"])
    models.add_argument("ids", nargs="*", help="only these model ids (default: all)")
    models.add_argument("--progress", action="store_true",
                        help="verify: draw a progress bar on stderr even when not a terminal")
    config.add_arguments(models)
    models.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    store = ModelStore(settings.manifest, settings.models_dir)
    if args.action == "verify":
        return _verify(store, args.ids, args.progress)
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


def _verify(store: ModelStore, ids: Sequence[str], progress: bool) -> int:
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
