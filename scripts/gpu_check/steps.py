"""Where the run keeps its files, how it times and logs each step, and how it runs commands."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpu_check.manifest import CheckError


@dataclass(frozen=True)
class Paths:
    """Everything lives in the stash folder, outside the repository copy."""

    stash: Path

    @property
    def work(self) -> Path:
        return self.stash / "work"

    @property
    def files(self) -> Path:  # the carried files, put back together and checked
        return self.work / "files"

    @property
    def venv(self) -> Path:
        return self.work / "venv"

    @property
    def wheelhouse(self) -> Path:
        return self.work / "wheelhouse"

    @property
    def src(self) -> Path:  # the trimmed sdist, unpacked (llama-server builds from it)
        return self.work / "src"

    @property
    def server_build(self) -> Path:
        return self.work / "server-build"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    @property
    def builds_state(self) -> Path:
        return self.work / "builds.json"


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    status: str = "running"  # then "ok", "failed" or "skipped"
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Recorder:
    """Times each step, prints it as it ends, and keeps the list for the results file."""

    log: Path | None = None
    steps: list[Step] = field(default_factory=list)

    def say(self, message: str) -> None:
        line = f"[gpu-check {time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        if self.log is not None:
            with self.log.open("a") as fh:
                fh.write(line + "\n")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        step = Step(name)
        self.steps.append(step)
        self.say(f"{name}: started")
        t0 = time.monotonic()
        try:
            yield step
        except BaseException as exc:
            step.status = "failed"
            step.note = step.note or str(exc).splitlines()[0][:300]
            raise
        else:
            if step.status == "running":
                step.status = "ok"
        finally:
            step.seconds = round(time.monotonic() - t0, 1)
            note = f" ({step.note})" if step.note else ""
            self.say(f"{name}: {step.status} in {step.seconds:.1f} s{note}")

    def skip(self, name: str, note: str) -> None:
        self.steps.append(Step(name, 0.0, "skipped", note))
        self.say(f"{name}: skipped ({note})")


def tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def sh(argv: Sequence[str | Path], log: Path, env: Mapping[str, str] | None = None,
       cwd: Path | None = None) -> None:
    """Run a command, its output appended to ``log``; a failure quotes the log's end."""
    words = [str(a) for a in argv]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(words)}\n".encode())
        fh.flush()
        rc = subprocess.run(words, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                            env=dict(env) if env is not None else None).returncode
    if rc != 0:
        raise CheckError(f"`{' '.join(words[:4])} ...` failed (exit code {rc}); the end of "
                         f"{log}:\n{tail(log)}")


def output(argv: Sequence[str | Path], env: Mapping[str, str] | None = None) -> str:
    """A command's standard output ('' when it cannot run or fails)."""
    try:
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              env=dict(env) if env is not None else None, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def with_paths(env: Mapping[str, str], var: str, dirs: Sequence[str]) -> dict[str, str]:
    """``env`` with ``dirs`` put in front of the path list ``var``."""
    out = dict(env)
    have = [d for d in out.get(var, "").split(os.pathsep) if d]
    out[var] = os.pathsep.join([*dirs, *(d for d in have if d not in dirs)])
    return out
