"""The GPU and the CUDA toolchain of the machine: what nvidia-smi reports, the architecture
to build for, where nvcc and cuBLAS are, and which CUDA libraries the loader cannot find."""

from __future__ import annotations

import glob
import os
import re
import shutil
from pathlib import Path

from gpu_check.manifest import CheckError
from gpu_check.steps import output

_QUERY = "name,compute_cap,driver_version,memory.total"


def gpus() -> list[dict[str, str]]:
    """One row per GPU, from ``nvidia-smi``; an error when there is none."""
    if shutil.which("nvidia-smi") is None:
        raise CheckError("nvidia-smi is not on PATH: no NVIDIA driver here (use --dry-run "
                         "on a machine without a GPU)")
    text = output(["nvidia-smi", f"--query-gpu={_QUERY}", "--format=csv,noheader"])
    rows = [dict(zip(_QUERY.split(","), (c.strip() for c in line.split(",")), strict=False))
            for line in text.splitlines() if line.strip()]
    if not rows:
        raise CheckError("nvidia-smi lists no GPU")
    return rows


def architectures(rows: list[dict[str, str]]) -> str:
    """CMAKE_CUDA_ARCHITECTURES for the GPUs here only: compute capability 9.0 -> ``90``."""
    caps = sorted({r["compute_cap"].replace(".", "") for r in rows})
    if not caps or not all(c.isdigit() for c in caps):
        raise CheckError(f"cannot read the compute capability from nvidia-smi: {rows}")
    return ";".join(caps)


def toolkit_root() -> Path:
    """The CUDA toolkit (nvcc's grandparent); /usr/local/cuda when nvcc is not on PATH."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).is_file():
        raise CheckError("nvcc not found (PATH, /usr/local/cuda/bin): the CUDA toolkit is "
                         "needed to build the CUDA wheel")
    return Path(nvcc).resolve().parent.parent


def _lib_dirs(root: Path) -> list[Path]:
    return [root / "lib64", root / "lib", root / "targets" / "x86_64-linux" / "lib"]


def python_lib_dirs(site_dirs: list[str]) -> list[Path]:
    """Library folders of NVIDIA's pip packages (nvidia-cublas, nvidia-cuda-runtime, ...)."""
    found = []
    for site in site_dirs:
        found += [Path(p) for p in sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")))]
    return found


def cublas_home(root: Path, site_dirs: list[str]) -> Path | None:
    """None when the toolkit has cuBLAS; else the pip package's folder holding
    ``lib/libcublas.so*`` and ``include/cublas_v2.h`` (native/build.sh's CUBLAS_HOME)."""
    if any(glob.glob(str(d / "libcublas.so*")) for d in _lib_dirs(root)):
        return None
    for lib in python_lib_dirs(site_dirs):
        home = lib.parent
        if glob.glob(str(lib / "libcublas.so*")) and (home / "include" / "cublas_v2.h").is_file():
            return home
    raise CheckError(f"cuBLAS is neither in the toolkit ({root}) nor in an nvidia-cublas "
                     f"package of {site_dirs}")


def missing_libraries(library: Path, env: dict[str, str]) -> list[str]:
    """The sonames ``ldd`` cannot resolve for ``library``."""
    text = output(["ldd", library], env=env)
    return sorted(set(re.findall(r"^\s*(\S+) => not found", text, re.M)))


def library_dirs_for(sonames: list[str], root: Path, site_dirs: list[str]) -> list[str]:
    """Folders that hold each of ``sonames`` (toolkit first, then NVIDIA's pip packages)."""
    out: list[str] = []
    candidates = [*_lib_dirs(root), *python_lib_dirs(site_dirs), Path("/usr/local/nvidia/lib64")]
    for soname in sonames:
        where = next((d for d in candidates if (d / soname).exists()), None)
        if where is None:
            raise CheckError(f"{soname} is needed by the CUDA build and found nowhere "
                             f"({', '.join(map(str, candidates))})")
        if str(where) not in out:
            out.append(str(where))
    return out
