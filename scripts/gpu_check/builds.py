"""The builds, from the carried files only: a venv over the image's packages, the
llama-cpp-python wheel (native/build.sh, for the local GPU architecture only, ninja on all
cores), hnswlib from its sdist, and llama-server from the same vendored llama.cpp linked
against the wheel's own ggml libraries (so only llama.cpp's side is compiled again).

They run in the last call, or in the background from the first call on (``--start-builds``)
while the model's parts are carried; ``builds.json`` says where they are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check import cuda
from gpu_check.manifest import CheckError
from gpu_check.steps import Paths, Recorder, output, sh, with_paths

_SERVER_CMAKE = ("-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                 "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF")
# The wheel's ggml libraries link the CUDA libraries; the loader finds those at run time,
# the linker of llama-server need not.
_LINK_LOOSE = ("-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined",
               "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--allow-shlib-undefined")


@dataclass(frozen=True)
class BuildOptions:
    repo: Path
    paths: Paths
    python: Path  # the image's interpreter the venv is made from
    dry_run: bool
    jobs: int
    manifest: str  # the digest of the prepared set these builds belong to

    @property
    def venv_python(self) -> Path:
        return self.paths.venv / "bin" / "python"

    @property
    def backend(self) -> str:
        return "cpu" if self.dry_run else "cuda"


def _python_json(python: Path, code: str) -> Any:
    text = output([python, "-c", f"import json, site, sys, sysconfig; print(json.dumps({code}))"])
    if not text:
        raise CheckError(f"{python} cannot run")
    return json.loads(text)


def make_venv(o: BuildOptions, log: Path) -> dict[str, Any]:
    """A venv that sees the image's packages: --system-site-packages, and when the image's
    interpreter is a venv itself (whose packages are then not the 'system' ones) a .pth
    that adds its site folders. No pip of its own: the image's pip serves it."""
    shutil.rmtree(o.paths.venv, ignore_errors=True)
    sh([o.python, "-m", "venv", "--system-site-packages", "--without-pip", o.paths.venv], log)
    parent = _python_json(o.python, "site.getsitepackages() if sys.prefix != sys.base_prefix "
                                    "else []")
    purelib = Path(_python_json(o.venv_python, "sysconfig.get_paths()['purelib']"))
    if parent:
        (purelib / "_image_packages.pth").write_text(
            "".join(f"import site; site.addsitedir({p!r})\n" for p in parent))
    sh([o.venv_python, "-m", "pip", "--version"], log)
    wheels = sorted((o.paths.files / "wheels").glob("*.whl"))
    if wheels:
        sh([o.venv_python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
            "--no-compile", "--no-cache-dir", *wheels], log)
    sh([o.venv_python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
        "--no-build-isolation", "--no-cache-dir", "-e", o.repo], log)
    site_dirs = _python_json(o.venv_python,
                             "[p for p in sys.path if p.endswith(('site-packages', "
                             "'dist-packages'))]")
    return {"purelib": str(purelib), "site_dirs": site_dirs, "carried_wheels": len(wheels),
            "python": output([o.venv_python, "--version"])}


def _cuda_env(o: BuildOptions, site_dirs: list[str], facts: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    if o.dry_run:
        return env
    rows = cuda.gpus()
    facts["arch"] = cuda.architectures(rows)
    root = cuda.toolkit_root()
    facts["cuda_root"] = str(root)
    env = with_paths(env, "PATH", [str(root / "bin")])
    env["CUDA_ARCHITECTURES"] = facts["arch"]
    home = cuda.cublas_home(root, site_dirs)
    if home is not None:
        env["CUBLAS_HOME"] = facts["cublas_home"] = str(home)
    facts["nvcc"] = output(["nvcc", "--version"], env=env).splitlines()[-1:]
    return env


def build_wheel(o: BuildOptions, env: dict[str, str], log: Path) -> Path:
    """native/build.sh, offline: pip finds the trimmed sdist among the carried files."""
    build_env = dict(env, PYTHON=str(o.venv_python), WHEELHOUSE=str(o.paths.wheelhouse),
                     CMAKE_GENERATOR="Ninja", CMAKE_BUILD_PARALLEL_LEVEL=str(o.jobs),
                     NATIVE_PIP_ARGS=f"-v --no-index --find-links {o.paths.files / 'sdist'} "
                                     f"--no-build-isolation")
    sh([o.repo / "native" / "build.sh", o.backend], log, env=build_env)
    wheels = sorted(o.paths.wheelhouse.glob("llama_cpp_python-*.whl"))
    if len(wheels) != 1:
        raise CheckError(f"expected one wheel in {o.paths.wheelhouse}, found {wheels}")
    sh([o.venv_python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
        "--force-reinstall", "--no-cache-dir", wheels[0]], log)
    return wheels[0]


def start_sdist_builds(o: BuildOptions, log: Path) -> subprocess.Popen[bytes] | None:
    """Packages carried as sdists (hnswlib), built on one core beside the wheel's build."""
    sdists = [p for p in sorted((o.paths.files / "sdist").glob("*.tar.gz"))
              if not p.name.startswith("llama_cpp_python-")]
    if not sdists:
        return None
    argv = [str(o.venv_python), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
            "--no-build-isolation", "--no-cache-dir", *map(str, sdists)]
    with log.open("ab") as fh:
        fh.write(f"$ {' '.join(argv)}\n".encode())
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)


def _unpack_source(o: BuildOptions) -> Path:
    sdist = next((o.paths.files / "sdist").glob("llama_cpp_python-*.tar.gz"))
    shutil.rmtree(o.paths.src, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(o.paths.src, filter="data")
    return o.paths.src / sdist.name.removesuffix(".tar.gz") / "vendor" / "llama.cpp"


def build_server(o: BuildOptions, env: dict[str, str], purelib: Path, log: Path
                 ) -> tuple[Path, str]:
    """llama-server (that target only) from the same vendored llama.cpp: against the
    wheel's ggml, or if that fails, whole with native/build.sh's flags."""
    src, build = _unpack_source(o), o.paths.server_build
    jobs = ["-j", str(o.jobs)]
    try:
        shutil.rmtree(build, ignore_errors=True)
        sh(["cmake", "-S", src, "-B", build, *_SERVER_CMAKE, *_LINK_LOOSE,
            "-DLLAMA_USE_SYSTEM_GGML=ON", f"-Dggml_DIR={purelib / 'lib' / 'cmake' / 'ggml'}"],
           log, env=env)
        sh(["cmake", "--build", build, "--target", "llama-server", *jobs], log, env=env)
        mode = "against the wheel's ggml libraries (llama.cpp's side compiled again)"
    except CheckError as exc:
        with log.open("a") as fh:
            fh.write(f"\nthe build against the wheel's ggml failed ({exc}); building whole\n")
        flags = output([o.repo / "native" / "build.sh", o.backend, "--print-flags"], env=env)
        shutil.rmtree(build, ignore_errors=True)
        sh(["cmake", "-S", src, "-B", build, *_SERVER_CMAKE, *flags.split()], log, env=env)
        sh(["cmake", "--build", build, "--target", "llama-server", *jobs], log, env=env)
        mode = "whole, with native/build.sh's flags (the build against the wheel's ggml failed)"
    return build / "bin" / "llama-server", mode


def _runtime_libraries(o: BuildOptions, env: dict[str, str], purelib: Path,
                       site_dirs: list[str], facts: dict[str, Any]) -> None:
    """Folders to put on LD_LIBRARY_PATH so the loader finds what libggml-cuda.so needs."""
    facts["ld_paths"] = []
    if o.dry_run:
        return
    lib = purelib / "llama_cpp" / "lib" / "libggml-cuda.so"
    if not lib.is_file():
        raise CheckError(f"the CUDA wheel holds no {lib.name}: was it built with CUDA?")
    missing = cuda.missing_libraries(lib, env)
    if missing:
        facts["ld_paths"] = cuda.library_dirs_for(missing, cuda.toolkit_root(), site_dirs)


def run_builds(o: BuildOptions, rec: Recorder) -> dict[str, Any]:
    """Every build, each a step; the facts the results file reports about them."""
    o.paths.logs.mkdir(parents=True, exist_ok=True)
    facts: dict[str, Any] = {"backend": o.backend, "jobs": o.jobs}
    logs = o.paths.logs
    with rec.step("venv"):
        facts.update(make_venv(o, logs / "venv.log"))
    purelib, site_dirs = Path(facts["purelib"]), list(facts["site_dirs"])
    env = _cuda_env(o, site_dirs, facts)
    others = start_sdist_builds(o, logs / "sdists.log")
    with rec.step("wheel") as step:
        wheel = build_wheel(o, env, logs / "wheel.log")
        facts["wheel"] = wheel.name
        facts["wheel_flags"] = (o.paths.wheelhouse / "FLAGS").read_text().strip()
        step.note = f"{o.backend}" + (f", sm_{facts['arch']}" if "arch" in facts else "")
    with rec.step("sdists"):
        if others is not None and others.wait() != 0:
            raise CheckError(f"building the carried sdists failed; see {logs / 'sdists.log'}")
    _runtime_libraries(o, env, purelib, site_dirs, facts)
    env = with_paths(env, "LD_LIBRARY_PATH", facts["ld_paths"])
    with rec.step("llama-server") as step:
        server, facts["server_mode"] = build_server(o, env, purelib, logs / "server.log")
        facts["server"] = str(server)
        facts["server_version"] = subprocess.run(
            [server, "--version"], capture_output=True, text=True, env=env).stderr.strip()
        step.note = facts["server_mode"].split(" (")[0]
    return facts


def write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(path)


def builds_only(o: BuildOptions) -> int:
    """The body of the background builds: run them, leave the outcome in builds.json."""
    rec = Recorder(o.paths.logs / "builds-steps.log")
    state: dict[str, Any] = {"status": "running", "manifest": o.manifest, "pid": os.getpid()}
    try:
        state["facts"] = run_builds(o, rec)
        state["status"] = "ok"
    except (CheckError, OSError, subprocess.SubprocessError) as exc:
        state.update(status="failed", error=str(exc))
    state["steps"] = [s.as_dict() for s in rec.steps]
    write_state(o.paths.builds_state, state)
    return 0 if state["status"] == "ok" else 1


def start_background(o: BuildOptions, extra: list[str]) -> int:
    """Start the builds in a process of their own session: it outlives this call."""
    o.paths.logs.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "gpu_check", "--builds-only", "--stash-dir",
            str(o.paths.stash), "--python", str(o.python), "--jobs", str(o.jobs), *extra]
    with (o.paths.logs / "builds.out").open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=o.repo)
    write_state(o.paths.builds_state,
                {"status": "running", "manifest": o.manifest, "pid": proc.pid})
    return proc.pid


def wait_background(o: BuildOptions, deadline: float | None) -> dict[str, Any] | None:
    """The background builds' outcome, once they end; None when none were started for
    this prepared set."""
    path = o.paths.builds_state
    while True:
        state: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        if state.get("manifest") != o.manifest:
            return None
        if state["status"] != "running":
            return state
        if not _alive(int(state["pid"])):
            time.sleep(1)  # it may have written its outcome just now
            state = json.loads(path.read_text())
            if state["status"] == "running":
                raise CheckError(f"the background builds died; see {o.paths.logs}/builds.out")
            return state
        if deadline is not None and time.time() > deadline:
            raise CheckError("the background builds did not finish in time")
        time.sleep(2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child of ours not yet reaped is a zombie: count it as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ", 1)[-1].startswith("Z"))
