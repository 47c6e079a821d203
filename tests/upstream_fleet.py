"""llama.cpp's llama-server as an upstream engine in tests: built once (scripts/
llama_build.py, from the source the wheel vendors), started on loopback with the default
GGUF model, read through its /health, /slots and /metrics, stopped or killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from appliance import config
from appliance.engine.models import ModelStore


def llama_server_binary() -> Path:
    """The built llama-server; skips (loudly) without a toolchain, fails in CI."""
    sys.path.insert(0, str(config.REPO_ROOT / "scripts"))
    try:
        import llama_build
    finally:
        sys.path.pop(0)
    try:
        return llama_build.ensure_built(("llama-server",)) / "llama-server"
    except llama_build.NoCompiler as exc:
        message = f"!!! UPSTREAM-ENGINE TESTS SKIPPED: {exc} !!!"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def default_model_path() -> Path:
    settings = config.load(env={})
    store = ModelStore(settings.manifest, settings.models_dir)
    return store.location(store.resolve(settings.model))


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class LlamaServer:
    """One llama-server process serving the default model under ``alias``."""

    def __init__(self, binary: Path, port: int, alias: str, log: Path, *,
                 parallel: int = 2, ctx_per_slot: int = 1024, threads: int = 1) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.alias = alias
        self._log = log
        self._argv = [str(binary), "-m", str(default_model_path()), "--host", "127.0.0.1",
                      "--port", str(port), "-t", str(threads), "-np", str(parallel),
                      "-c", str(ctx_per_slot * parallel), "--alias", alias, "--no-webui",
                      "--metrics", "--slots", "-lv", "1"]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180) -> LlamaServer:
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(self._argv, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self._log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if _get(self.url + "/health")[0] == 200:
                    return self
            time.sleep(0.2)
        raise TimeoutError(f"llama-server on {self.port} not ready (see {self._log})")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye to open connections."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(30)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def slots(self) -> list[dict[str, Any]]:
        status, body = _get(self.url + "/slots")
        assert status == 200, body
        slots = json.loads(body)
        assert isinstance(slots, list)
        return slots

    def busy_slots(self) -> int:
        return sum(bool(s.get("is_processing")) for s in self.slots())

    def metric(self, name: str) -> float:
        """A counter or gauge of its /metrics (``llamacpp:...``)."""
        status, body = _get(self.url + "/metrics")
        assert status == 200, body
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def tokens_predicted(self) -> float:
        return self.metric("llamacpp:tokens_predicted_total")
