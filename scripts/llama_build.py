"""llama.cpp's own tools (llama-server, llama-batched-bench) built once from the source our
llama-cpp-python wheel vendors, with native/build.sh's cpu flags, into a cache outside the
repository (~/.cache/appliance-bench, or $APPLIANCE_BENCH_CACHE).

    .venv/bin/python scripts/llama_build.py                 # llama-server (make test)
    .venv/bin/python scripts/llama_build.py llama-server llama-batched-bench

Used by `make test` (the upstream-engine tests run llama-server as the upstream) and by
`make bench` (scripts/bench_side_by_side.py). Only the targets asked for are built; a build
is reused while its flags and source match; a file lock keeps two builds (two test runs,
or a test run and a bench) from racing in the same directory. With no C/C++ toolchain the
build raises :class:`NoCompiler` (the tests then skip loudly, except in CI where it fails).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("APPLIANCE_BENCH_CACHE", Path.home() / ".cache" / "appliance-bench"))


class NoCompiler(RuntimeError):
    """cmake or a C++ compiler is missing: llama.cpp cannot be built here."""


def log(msg: str) -> None:
    print(f"[llama-build {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def native_build_params() -> tuple[str, list[str]]:
    """llama-cpp-python's version and the cpu backend's CMake flags, from native/build.sh."""
    text = (REPO / "native" / "build.sh").read_text()
    version = re.search(r'^version="([^"]+)"', text, re.M)
    flags = re.search(r'^\s*cpu\)\s*\n(?:\s*#[^\n]*\n)*\s*flags="([^"]+)"', text, re.M)
    if version is None or flags is None:
        raise SystemExit("llama-build: cannot read the version and cpu flags from "
                         "native/build.sh")
    if platform.machine() != "x86_64":
        return version.group(1), ["-DGGML_NATIVE=OFF"]
    return version.group(1), flags.group(1).split()


def _cmake_cache(build: Path) -> dict[str, str]:
    path = build / "CMakeCache.txt"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _flags_match(cache: dict[str, str], flags: Sequence[str]) -> bool:
    for flag in flags:
        key, _, value = flag.removeprefix("-D").partition("=")
        if cache.get(key, "").upper() != value.upper():
            return False
    return True


def _fetch_source(version: str) -> Path:
    """The llama.cpp tree vendored by the llama-cpp-python sdist (the wheel's source)."""
    src = CACHE / f"src-{version}"
    if (src / "CMakeLists.txt").is_file():
        return src
    sdists = CACHE / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    log(f"downloading the llama-cpp-python {version} sdist (for its vendored llama.cpp)")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--no-binary", ":all:", "-d", str(sdists),
                    f"llama-cpp-python=={version}"], check=True)
    archive = next(sdists.glob(f"llama_cpp_python-{version}.tar.gz"))
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(tmp, members=[m for m in members if m.name], filter="data")
    tmp.rename(src)
    return src


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_toolchain() -> None:
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (c++, g++ or clang++)")
    if missing:
        raise NoCompiler(f"cannot build llama.cpp here: {', '.join(missing)} not found")


def ensure_built(targets: Sequence[str] = ("llama-server",), jobs: int | None = None) -> Path:
    """The directory holding ``targets``, building those missing (only them)."""
    version, flags = native_build_params()
    build = CACHE / "build-cpu"
    bins = build / "bin"
    with _locked():
        src = CACHE / f"src-{version}"
        cache = _cmake_cache(build)
        configured = (_flags_match(cache, flags) and cache.get("CMAKE_BUILD_TYPE") == "Release"
                      and Path(cache.get("CMAKE_HOME_DIRECTORY", "/nonexistent")) == src)
        missing = [t for t in targets if not (bins / t).is_file()]
        if configured and not missing:
            return bins
        _check_toolchain()
        src = _fetch_source(version)
        if not configured:
            if build.exists():
                shutil.rmtree(build)
            subprocess.run(["cmake", "-S", str(src), "-B", str(build),
                            "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TESTS=OFF",
                            "-DLLAMA_CURL=OFF", *flags], check=True, stdout=subprocess.DEVNULL)
            missing = list(targets)
        log(f"building {' '.join(missing)} in {build} ({' '.join(flags)}); this takes a while "
            f"once")
        subprocess.run(["cmake", "--build", str(build), "--target", *missing, "-j",
                        str(jobs or os.cpu_count() or 1)], check=True,
                       stdout=subprocess.DEVNULL)
    return bins


def main(argv: Sequence[str]) -> int:
    targets = list(argv) or ["llama-server"]
    try:
        bins = ensure_built(targets)
    except NoCompiler as exc:
        banner = "!" * 78
        log(f"\n{banner}\n{exc}: the upstream-engine tests will be SKIPPED\n{banner}")
        return 1 if os.environ.get("CI") else 0
    log(f"ready: {', '.join(str(bins / t) for t in targets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
