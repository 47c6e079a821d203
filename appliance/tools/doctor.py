"""`appliance doctor`: is this machine able to serve, and if not, what to fix.

The facts about the machine are gathered once (:func:`gather`) into a frozen :class:`Facts`;
the checks (:func:`diagnose`) are pure functions of the facts and the settings, so tests
inject facts. A ``fail`` blocks serving (non-zero exit), a ``warn`` does not.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.config import Settings
from appliance.engine.gguf import model_shape
from appliance.engine.models import ModelStore
from appliance.errors import ApplianceError

Status = Literal["ok", "warn", "fail"]

# llama.cpp's system_info names -> the /proc/cpuinfo flag the CPU must have for them.
CPU_FEATURES = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "FMA": "fma",
                "F16C": "f16c", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f",
                "AVX512_VBMI": "avx512_vbmi", "AVX512_VNNI": "avx512_vnni",
                "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8"}
_MIB = 2**20
DISK_HEADROOM = 512 * _MIB  # databases, indexes and logs grow in the data directory
RUNTIME_MEMORY = 768 * _MIB  # Python, onnxruntime, the encoder, buffers: beside the model


@dataclass(frozen=True)
class Facts:
    cpu_flags: frozenset[str]  # from /proc/cpuinfo; empty if unknown (not Linux)
    build_features: frozenset[str]  # what the llama.cpp build uses (AVX2, FMA, ...)
    gpu_backend: bool  # the llama.cpp build can offload to a GPU
    gpu_devices: tuple[str, ...]  # device nodes seen (/dev/nvidia0, ...)
    model_bytes: int  # the served model's file size (manifest size when missing)
    model_present: bool
    kv_bytes: int  # estimated KV cache for parallel x ctx_size
    free_disk: int  # bytes free where the data directory is (or would be)
    available_memory: int  # MemAvailable, bytes; 0 if unknown
    port_error: str  # "" if host:port can be bound
    data_dir_error: str  # "" if the data directory is (or can be made) writable


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""


def _fmt(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / _MIB:.0f} MiB"


def check_cpu(f: Facts) -> Finding:
    needed = {feat for feat in f.build_features if feat in CPU_FEATURES}
    if not f.cpu_flags:
        return Finding("cpu", "warn", f"CPU flags unknown; the build uses {sorted(needed)}")
    missing = sorted(feat for feat in needed if CPU_FEATURES[feat] not in f.cpu_flags)
    if missing:
        return Finding("cpu", "fail",
                       f"this llama.cpp build uses {', '.join(missing)}, which this CPU lacks "
                       f"(it would stop with 'illegal instruction')",
                       "use a bundle built for this CPU: native/build.sh cpu with "
                       "EXTRA_CMAKE_ARGS='-DGGML_AVX2=OFF -DGGML_FMA=OFF ...' (native/README.md)")
    return Finding("cpu", "ok",
                   f"CPU has every feature the build uses ({', '.join(sorted(needed))})")


def check_gpu(f: Facts, n_gpu_layers: int) -> Finding:
    if n_gpu_layers == 0:
        kind = "a GPU backend" if f.gpu_backend else "no GPU backend (CPU build)"
        return Finding("gpu", "ok", f"CPU only (n_gpu_layers = 0); this build has {kind}")
    if not f.gpu_backend:
        return Finding("gpu", "fail",
                       f"n_gpu_layers = {n_gpu_layers} but this llama.cpp build has no GPU "
                       f"backend", "set n_gpu_layers = 0, or install a CUDA/Metal build "
                       "(native/build.sh cuda)")
    if not f.gpu_devices:
        return Finding("gpu", "fail", f"n_gpu_layers = {n_gpu_layers} but no GPU device is "
                       "visible (no /dev/nvidia*)", "install the NVIDIA driver, or set "
                       "n_gpu_layers = 0")
    return Finding("gpu", "ok", f"GPU backend and devices {', '.join(f.gpu_devices)}")


def check_model(f: Facts, model: str) -> Finding:
    if not f.model_present:
        return Finding("model", "fail", f"the model file of {model!r} is missing",
                       "`appliance models verify` says which; reinstall the bundle's models "
                       "(or `make install` in a development install)")
    return Finding("model", "ok", f"{model}: {_fmt(f.model_bytes)}")


def check_memory(f: Facts) -> Finding:
    need = f.model_bytes + f.kv_bytes + RUNTIME_MEMORY
    if f.available_memory == 0:
        return Finding("memory", "warn", f"available memory unknown; serving needs about "
                       f"{_fmt(need)}")
    if f.available_memory < need:
        return Finding("memory", "fail", f"{_fmt(f.available_memory)} available, serving needs "
                       f"about {_fmt(need)} (model {_fmt(f.model_bytes)}, KV cache "
                       f"{_fmt(f.kv_bytes)})", "free memory, or lower parallel / ctx_size")
    if f.available_memory < 2 * need:
        return Finding("memory", "warn", f"{_fmt(f.available_memory)} available for about "
                       f"{_fmt(need)} needed: little headroom")
    return Finding("memory", "ok", f"{_fmt(f.available_memory)} available, about {_fmt(need)} "
                   "needed")


def check_disk(f: Facts) -> Finding:
    need = DISK_HEADROOM + (0 if f.model_present else f.model_bytes)
    if f.free_disk < need:
        return Finding("disk", "fail", f"{_fmt(f.free_disk)} free for the data directory, "
                       f"{_fmt(need)} needed", "free disk space or move data_dir")
    return Finding("disk", "ok", f"{_fmt(f.free_disk)} free for the data directory")


def check_port(f: Facts, host: str, port: int) -> Finding:
    if f.port_error:
        return Finding("port", "fail", f"cannot listen on {host}:{port}: {f.port_error}",
                       "stop whatever uses the port (`ss -ltnp`) or set port")
    return Finding("port", "ok", f"{host}:{port} is free")


def check_data_dir(f: Facts, data_dir: Path) -> Finding:
    if f.data_dir_error:
        return Finding("data_dir", "fail", f"{data_dir}: {f.data_dir_error}",
                       "create it and give the service user write access (install.sh does)")
    return Finding("data_dir", "ok", f"{data_dir} is writable")


def diagnose(facts: Facts, settings: Settings) -> tuple[Finding, ...]:
    return (check_cpu(facts), check_gpu(facts, settings.n_gpu_layers),
            check_model(facts, settings.model), check_memory(facts), check_disk(facts),
            check_port(facts, settings.host, settings.port),
            check_data_dir(facts, settings.data_dir))


def blocking(findings: tuple[Finding, ...]) -> bool:
    return any(f.status == "fail" for f in findings)


# --- gathering the real facts ---------------------------------------------------------------

def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def build_features(system_info: str) -> frozenset[str]:
    """``"CPU : SSE3 = 1 | AVX2 = 1 | ..."`` -> {"SSE3", "AVX2", ...}."""
    return frozenset(name for name, on in re.findall(r"(\w+) = (\d)", system_info)
                     if on == "1")


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        match = re.search(r"^MemAvailable:\s*(\d+) kB", meminfo.read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(match.group(1)) * 1024 if match else 0


def port_error(host: str, port: int) -> str:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return os.strerror(exc.errno) if exc.errno else str(exc)
    return ""


def data_dir_error(data_dir: Path) -> str:
    """"" if ``data_dir`` exists and a file can be created in it, or if it can be created."""
    probe = data_dir
    while not probe.exists():
        if probe.parent == probe:
            return "no existing parent directory"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".doctor-"):
            pass
    except OSError as exc:
        reason = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) \
            else str(exc)
        return f"not writable by uid {os.getuid()} ({reason} in {probe})"
    return ""


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def gather(settings: Settings, *,
           system_info: Callable[[], str] | None = None,
           gpu_backend: Callable[[], bool] | None = None) -> Facts:
    """The real machine's facts. llama.cpp is asked only what its build supports; the KV
    cache is sized from the model's GGUF metadata (no weights are loaded)."""
    from appliance.engine import native

    system_info = system_info or native.system_info
    gpu_backend = gpu_backend or native.supports_gpu_offload
    store = ModelStore(settings.manifest, settings.models_dir)
    path: Path | None = None
    size = 0
    try:
        spec = store.resolve(settings.model)
        size = spec.size or 0
        path = store.location(spec)
    except ApplianceError:
        pass
    present = path is not None and path.is_file()
    if path is not None and present:
        size = path.stat().st_size
    cells = settings.parallel * settings.ctx_size
    kv = 0
    if path is not None and present:
        try:
            kv = model_shape(path).kv_bytes(cells)
        except ApplianceError:
            kv = 0  # not a GGUF llama.cpp can read either: check_model's business
    return Facts(
        cpu_flags=cpu_flags(), build_features=build_features(system_info()),
        gpu_backend=gpu_backend(),
        gpu_devices=tuple(sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))),
        model_bytes=size, model_present=present, kv_bytes=kv,
        free_disk=shutil.disk_usage(_existing(settings.data_dir)).free,
        available_memory=available_memory(),
        port_error=port_error(settings.host, settings.port),
        data_dir_error=data_dir_error(settings.data_dir))
