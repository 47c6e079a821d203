"""native/gpu-check.sh: the command line of the GPU check (see the package docstring).

    native/gpu-check.sh --prepare .gpu-check        here: gather, pin, cut into calls, plan
    native/gpu-check.sh --stash DIR [--start-builds]   there: keep one call's parts
    native/gpu-check.sh --out OUT                    there: the run (the last call)
    native/gpu-check.sh --dry-run --out OUT          here, on CPU: the same run
    native/gpu-check.sh --replay .gpu-check --out OUT  here: every call of the plan, dry
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gpu_check import builds, plan
from gpu_check.manifest import MANIFEST, CheckError, Manifest, reassemble, stash
from gpu_check.steps import Paths

REPO = Path(__file__).resolve().parents[2]
DRY_STASH = "/var/tmp/appliance-gpu-check-dry"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="native/gpu-check.sh", description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prepare", type=Path, metavar="DIR",
                      help="gather everything into DIR (inside the repository, ignored)")
    mode.add_argument("--standin", type=Path, metavar="DIR",
                      help="make the dry run's stand-in for the GPU machine's Python")
    mode.add_argument("--stash", type=Path, metavar="CALL_DIR",
                      help="keep one call's parts in --stash-dir")
    mode.add_argument("--replay", type=Path, metavar="DIR",
                      help="dry run of DIR's plan: each call's command, in order, here")
    mode.add_argument("--builds-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start-builds", action="store_true",
                   help="with --stash: start the builds in the background")
    p.add_argument("--dry-run", action="store_true", help="CPU backend, no GPU checks")
    p.add_argument("--stash-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, help="where the results file goes")
    p.add_argument("--python", type=Path, default=Path(sys.executable),
                   help="the interpreter whose packages the venv uses (default: this one)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds for the run (default 570; none with --dry-run)")
    p.add_argument("--levels", default="1,16,64")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=None,
                   help="requests per level (default: max(2 x clients, 8))")
    p.add_argument("--limit-mib", type=float, default=64.0, help="what one call carries")
    p.add_argument("--margin-mib", type=float, default=4.0)
    p.add_argument("--standin-python", type=Path, help="a Python 3.12 for --standin")
    args = p.parse_args(argv)
    if args.stash_dir is None:
        args.stash_dir = Path(DRY_STASH if args.dry_run or args.replay else plan.STASH)
    return args


def _build_options(args: argparse.Namespace) -> builds.BuildOptions:
    paths = Paths(args.stash_dir.resolve())
    digest = Manifest.load(paths.stash / MANIFEST).digest
    return builds.BuildOptions(REPO, paths, args.python, args.dry_run, args.jobs, digest)


def _stash(args: argparse.Namespace) -> int:
    state = stash(args.stash, args.stash_dir)
    print(f"gpu-check: {state.summary()}", flush=True)
    if args.start_builds:
        o = _build_options(args)
        reassemble(o.paths.stash, o.paths.files, roles=("sdist", "wheel"))
        pid = builds.start_background(o, ["--dry-run"] if args.dry_run else [])
        print(f"gpu-check: builds started in the background (pid {pid}; "
              f"{o.paths.logs}/builds.out)", flush=True)
    return 0


def _replay(args: argparse.Namespace) -> int:
    """Each device call of the plan, as the same command, one after the other, here."""
    prepared = args.replay.resolve()
    manifest = Manifest.load(prepared / "carry" / "call-1" / MANIFEST)
    carry = plan.Carry(prepared, REPO, 0, args.limit_mib, args.margin_mib, "")
    shutil.rmtree(args.stash_dir, ignore_errors=True)
    extra = f"--dry-run --stash-dir {args.stash_dir}"
    out = (args.out or REPO / "build" / "work" / "gpu-check").resolve()
    for n, call in enumerate(plan.commands(manifest, carry), 1):
        print(f"gpu-check: dry call {n}: {call['command']}", flush=True)
        env = dict(os.environ, OUT=str(out), GPU_CHECK_EXTRA=extra)
        rc = subprocess.run(["bash", "-c", str(call["command"])], cwd=REPO, env=env).returncode
        if rc != 0:
            return rc
    return 0


def _run(args: argparse.Namespace) -> int:
    from gpu_check import run

    if args.out is None:
        raise CheckError("--out DIR is needed (on the device: --out \"$OUT\")")
    limit = args.time_limit if args.time_limit is not None else (0 if args.dry_run else 570)
    options = run.RunOptions(_build_options(args), args.out, limit, args.levels,
                             args.rounds, args.max_tokens, args.requests)
    return run.run(options)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.prepare:
            from gpu_check import prepare

            prepare.prepare(args.prepare.resolve(), REPO, args.limit_mib, args.margin_mib)
            return 0
        if args.standin:
            from gpu_check import standin

            if args.standin_python is None:
                raise CheckError("--standin needs --standin-python (a Python 3.12)")
            standin.make(args.standin, args.standin_python,
                         args.standin.parent / "closure.json")
            return 0
        if args.stash:
            return _stash(args)
        if args.replay:
            return _replay(args)
        if args.builds_only:
            return builds.builds_only(_build_options(args))
        return _run(args)
    except CheckError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
