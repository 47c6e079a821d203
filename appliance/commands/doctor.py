"""``appliance doctor``: check this machine can serve, and print what to fix."""

from __future__ import annotations

import argparse
import sys

from appliance import config


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = sub.add_parser("doctor", help="check this machine can serve; print what to fix")
    config.add_arguments(doctor)
    doctor.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
