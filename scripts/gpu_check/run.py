"""The run (the last device call, or ``--dry-run`` here): reassemble and verify the carried
files, the builds (or wait for those the first call started), the models in place, the
dependency check, the end-to-end smoke, the side-by-side, and always the results file."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check import builds, cuda, image, report
from gpu_check.manifest import MANIFEST, CheckError, Manifest, reassemble
from gpu_check.steps import Recorder, Step, sh, with_paths

DRY_RUN_NOTE = ("Dry run: the wheel and llama-server are built with the CPU backend, both "
                "servers run with 0 GPU layers, and the GPU checks (nvidia-smi, the CUDA "
                "architecture, cuBLAS and the CUDA libraries, the offload reported by /ready) "
                "are skipped.")


@dataclass(frozen=True)
class RunOptions:
    build: builds.BuildOptions
    out: Path
    time_limit: float  # seconds for the whole run; 0: none
    levels: str
    rounds: int
    max_tokens: int
    requests: int | None


def _network() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return "no route beyond this machine"
    return "a route exists (nothing of this run uses it)"


def machine(o: RunOptions) -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cores": os.cpu_count(), "cpu": cpu,
            "system": f"{platform.system()} {platform.release()}",
            "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
            "network": _network(),
            "gpus": [] if o.build.dry_run else cuda.gpus()}


def _builds(o: RunOptions, rec: Recorder, deadline: float | None) -> dict[str, Any]:
    """The background builds' facts once they end, or the builds run here and now."""
    path = o.build.paths.builds_state
    state = json.loads(path.read_text()) if path.is_file() else {}
    if state.get("manifest") != o.build.manifest:
        return builds.run_builds(o.build, rec)
    with rec.step("waiting for the builds"):
        state = builds.wait_background(o.build, deadline) or state
    for s in state.get("steps", []):
        rec.steps.append(Step(**{**s, "note": ("in the background, started by call 1; "
                                               + s["note"]).rstrip("; ")}))
    if state["status"] != "ok":
        raise CheckError(f"the background builds failed: {state.get('error')}")
    return dict(state["facts"])


def place_models(o: RunOptions, purelib: Path) -> tuple[Path, Path | None]:
    """Each model file where the appliance looks for it: inside the (namespace) package
    folder it names, in the venv; an assembled model in a models folder of its own."""
    manifest = Manifest.load(o.build.paths.stash / MANIFEST)
    gguf, models_dir = None, None
    for f in manifest.files:
        if f.role != "model":
            continue
        if f.path.startswith("site/"):
            dest = purelib / f.path.removeprefix("site/")
        else:
            models_dir = o.build.paths.work / "models"
            dest = models_dir / Path(f.path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        os.link(o.build.paths.files / f.path, dest)
        if dest.suffix == ".gguf":
            gguf = dest
    if gguf is None:
        raise CheckError("no GGUF model among the carried files")
    return gguf, models_dir


def _venv_env(o: RunOptions, facts: dict[str, Any]) -> dict[str, str]:
    env = with_paths(os.environ, "LD_LIBRARY_PATH", facts.get("ld_paths", []))
    return with_paths(env, "PYTHONPATH", [str(o.build.repo / "scripts")])


def dependencies(o: RunOptions, env: dict[str, str]) -> list[dict[str, Any]]:
    runtime, _ = image.project_requirements(o.build.repo / "pyproject.toml")
    wanted = list(dict.fromkeys([*runtime, *image.needed(o.build.repo / "pyproject.toml")]))
    done = subprocess.run([o.build.venv_python, "-m", "gpu_check.deps", *wanted], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckError(f"the dependency check failed: {done.stderr[-800:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    bad = [r["name"] for r in rows if not r.get("imports")]
    if bad:
        raise CheckError(f"missing or not importable in the venv: {', '.join(bad)}")
    return rows


def smoke(o: RunOptions, env: dict[str, str], models_dir: Path | None,
          offline: bool) -> dict[str, Any]:
    venv, paths = o.build.paths.venv, o.build.paths
    ngl = "0" if o.build.dry_run else "99"
    argv: list[str | Path] = [venv / "bin" / "python", o.build.repo / "build" / "smoke.py",
                              venv / "bin" / "appliance", "--timeout", "300", "--json",
                              paths.work / "smoke.json", f"--serve-arg=--n-gpu-layers={ngl}"]
    if models_dir is not None:
        argv.append(f"--serve-arg=--models-dir={models_dir}")
    if not o.build.dry_run:
        argv.append("--expect-gpu")
    if not offline:
        argv.append("--no-offline-check")
    sh(argv, paths.logs / "smoke.log", env=env, cwd=o.build.repo)
    return dict(json.loads((paths.work / "smoke.json").read_text()))


def side_by_side(o: RunOptions, env: dict[str, str], facts: dict[str, Any], gguf: Path,
                 models_dir: Path | None, deadline: float | None) -> dict[str, Any]:
    paths, venv = o.build.paths, o.build.paths.venv
    raw = paths.work / "bench.json"
    argv: list[str | Path] = [
        venv / "bin" / "python", "-m", "gpu_check.sidebyside", "--appliance",
        venv / "bin" / "appliance", "--llama-server", facts["server"], "--model", gguf,
        "--ngl", "0" if o.build.dry_run else "99", "--threads", str(o.build.jobs),
        "--levels", o.levels, "--rounds", str(o.rounds), "--max-tokens", str(o.max_tokens),
        "--logdir", paths.logs, "--out", raw,
        "--deadline", str(deadline - 30 if deadline else 0)]
    if o.requests:
        argv += ["--requests", str(o.requests)]
    if models_dir is not None:
        argv += ["--models-dir", models_dir]
    sh(argv, paths.logs / "side-by-side.log", env=env, cwd=o.build.repo)
    return dict(json.loads(raw.read_text()))


def _steps_after_builds(o: RunOptions, rec: Recorder, results: dict[str, Any],
                        deadline: float | None) -> None:
    facts = results["builds"]
    env = _venv_env(o, facts)
    with rec.step("models") as step:
        gguf, models_dir = place_models(o, Path(facts["purelib"]))
        step.note = gguf.name
    with rec.step("dependencies") as step:
        results["deps"] = dependencies(o, env)
        step.note = f"{sum(r['source'] == 'venv' for r in results['deps'])} from carried files"
    offline = results["machine"]["network"].startswith("no route")
    with rec.step("smoke") as step:
        results["smoke"] = smoke(o, env, models_dir, offline)
        step.note = str(results["smoke"].get("backend", "")).split(";")[0]
    with rec.step("side-by-side"):
        results["bench"] = side_by_side(o, env, facts, gguf, models_dir, deadline)


def run(o: RunOptions) -> int:
    """Every step in order; the results file is written whatever happens."""
    t0 = time.time()
    deadline = t0 + o.time_limit if o.time_limit else None
    o.out.mkdir(parents=True, exist_ok=True)
    rec = Recorder(o.out / "gpu-check.log")
    results: dict[str, Any] = {
        "dry_run": o.build.dry_run, "notes": [DRY_RUN_NOTE] if o.build.dry_run else [],
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0))}
    try:
        with rec.step("preflight"):
            results["machine"] = machine(o)
        with rec.step("reassemble") as step:
            files = reassemble(o.build.paths.stash, o.build.paths.files)
            step.note = f"{len(files)} files, each checked against its sha256 pin"
        results["builds"] = _builds(o, rec, deadline)
        _steps_after_builds(o, rec, results, deadline)
    except (CheckError, OSError, subprocess.SubprocessError) as exc:
        results["error"] = str(exc).splitlines()[0]
        rec.say(f"FAILED: {exc}")
    finally:
        results["steps"] = [s.as_dict() for s in rec.steps]
        results["total_s"] = round(time.time() - t0, 1)
        page = report.write(o.out, results)
        _pack_logs(o)
        rec.say(f"wrote {page} ({results['total_s']:.0f} s in all)")
    return 1 if results.get("error") else 0


def _pack_logs(o: RunOptions) -> None:
    logs = o.build.paths.logs
    if logs.is_dir():
        with tarfile.open(o.out / "logs.tar.gz", "w:gz") as tar:
            tar.add(logs, arcname="logs")


if __name__ == "__main__":
    sys.exit("run through native/gpu-check.sh")
