"""The plan of device calls that carry the parts and run the check, ready to paste."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gpu_check.manifest import Manifest

MIB = 2**20
MANIFEST_ROOM = 256 * 1024  # the manifest copy in every call's folder, and slack
STASH = "/var/tmp/appliance-gpu-check"  # on the device, outside the repository copy
STASH_TIMEOUT_S = 120
RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Carry:
    out: Path  # the prepared folder (inside the repository, ignored by git)
    repo: Path
    tree_bytes: int  # what every call carries besides the parts
    limit_mib: float
    margin_mib: float
    commit: str


def call_folder(carry: Carry, call: int) -> str:
    return str((carry.out / "carry" / f"call-{call}").relative_to(carry.repo))


def commands(manifest: Manifest, carry: Carry) -> list[dict[str, object]]:
    """The arguments of each device call, in order."""
    calls = []
    for call in range(1, manifest.calls + 1):
        folder = call_folder(carry, call)
        command = f"native/gpu-check.sh --stash {folder}"
        if call == 1 and manifest.calls > 1:
            command += " --start-builds"
        timeout = STASH_TIMEOUT_S
        if call == manifest.calls:
            command += ' && native/gpu-check.sh --out "$OUT"'
            timeout = RUN_TIMEOUT_S
        calls.append({"command": command, "carry": [folder], "timeout_s": timeout})
    return calls


def _holds(manifest: Manifest, call: int) -> str:
    names = []
    for f in manifest.files:
        here = [p for p in f.parts if p.call == call]
        if not here:
            continue
        name = f.path.rsplit("/", 1)[-1]
        if len(f.parts) > 1:
            first = f.parts.index(here[0]) + 1
            name += f" (part {first}" + (f"-{first + len(here) - 1}" if len(here) > 1
                                         else "") + f" of {len(f.parts)})"
        names.append(name)
    return ", ".join(names)


def render(manifest: Manifest, carry: Carry) -> str:
    files = manifest.files
    stored = sum(p.size for p in manifest.parts())
    unpacked = sum(f.size for f in files)
    room = manifest.capacity / MIB
    prepared = carry.out.relative_to(carry.repo)
    lines = [
        f"### The device calls (`native/gpu-check.sh --prepare {prepared}`, "
        f"{manifest.created}, commit {carry.commit})",
        "",
        f"Each call carries the working tree ({carry.tree_bytes / MIB:.1f} MiB here: the "
        f"tracked files and the untracked ones git does not ignore) and one folder of parts: "
        f"{carry.limit_mib:.0f} MiB a call, less {carry.margin_mib:.1f} MiB of margin, leaves "
        f"{room:.1f} MiB of parts a call. {len(files)} files, {stored / MIB:.1f} MiB as "
        f"carried ({unpacked / MIB:.1f} MiB unpacked), in {manifest.calls} calls. Measure the "
        f"tree again before the calls (`git ls-files -co --exclude-standard`): if it grew "
        f"past the margin, prepare again.",
        "",
        "| call | carries | parts | MiB | holds |",
        "|---|---|---|---|---|",
    ]
    for call in range(1, manifest.calls + 1):
        parts = manifest.parts(call)
        lines.append(f"| {call} | `{call_folder(carry, call)}` | {len(parts)} | "
                     f"{sum(p.size for p in parts) / MIB:.1f} | {_holds(manifest, call)} |")
    lines += [
        "",
        f"Make the calls back to back. Each `--stash` checks its parts against the manifest "
        f"and keeps them in `{STASH}`, outside the repository copy; the first also starts "
        f"the builds in the background (they need only its files), so they run while the "
        f"model's parts travel. What a call leaves there survives only while the machine "
        f"stays warm (30 s after a call): a call that reports earlier calls' parts missing "
        f"means the machine was given back in between; make every call again, from call 1. "
        f"The last call reassembles and verifies everything, waits for the builds, and "
        f"writes `results.md`, `results.json` and `gpu-check.log` to `$OUT`.",
        "",
        "```",
        *(f"{n}. run {json.dumps(args)}" for n, args in
          enumerate(commands(manifest, carry), 1)),
        "```",
    ]
    return "\n".join(lines) + "\n"
