"""The deployment shape: keys created and the server started through the CLI exactly as the
README and the systemd unit do, bound to every address (0.0.0.0, and :: where the machine has
IPv6), reached over loopback with the official client."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from appliance.config import REPO_ROOT
from tests.conftest import free_port

APPLIANCE = [sys.executable, "-m", "appliance"]
SMALL = ["--parallel", "2", "--ctx-size", "512", "--threads", "2"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*APPLIANCE, *args], capture_output=True, text=True,
                          timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    models = os.environ.get("APPLIANCE_MODELS_DIR")
    if models:
        env["APPLIANCE_MODELS_DIR"] = models
    return env


def create_key(data_dir: Path, name: str, *extra: str) -> str:
    done = _cli("keys", "create", "--name", name, "--data-dir", str(data_dir), *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@dataclass
class CliServer:
    proc: subprocess.Popen[bytes]
    url: str  # reached over loopback
    log: Path

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 503:
                raise
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready in {timeout:.0f}s:\n{log.read_text()}")


def start_cli(command: list[str], url: str, log: Path) -> CliServer:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
    server = CliServer(proc, url, log)
    try:
        wait_ready(url, proc, log)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def any_address(tmp_path: Path) -> Iterator[tuple[CliServer, str]]:
    """`appliance keys create` then `appliance serve --host 0.0.0.0`, as the README says."""
    secret = create_key(tmp_path, "frontdesk")
    port = free_port()
    server = start_cli([*APPLIANCE, "serve", "--host", "0.0.0.0", "--port", str(port),
                        "--data-dir", str(tmp_path), *SMALL],
                       f"http://127.0.0.1:{port}", tmp_path / "serve.log")
    yield server, secret
    assert server.stop() == 0


def _chat(url: str, key: str) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model="default", max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": "Say hello."}])
    return reply.choices[0].message.content or ""


def test_with_keys_it_serves_every_address(any_address: tuple[CliServer, str]) -> None:
    server, secret = any_address
    assert _chat(server.url, secret)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-appl-wrong",
                           max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    # keys exist and the bind is not loopback: /metrics wants an admin key
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {secret}"}, 403)):
        request = urllib.request.Request(server.url + "/metrics", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        err.value.close()
        assert err.value.code == status


def test_without_keys_it_refuses_before_binding(tmp_path: Path) -> None:
    port = free_port()
    done = _cli("serve", "--host", "0.0.0.0", "--port", str(port), "--data-dir",
                str(tmp_path), *SMALL)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "without API keys" in lines[0] and "appliance keys create" in lines[0]
    assert str(tmp_path) in lines[0]
    with socket.socket() as s:  # nothing was bound
        s.bind(("0.0.0.0", port))


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="this machine has no IPv6 loopback")
def test_with_keys_it_serves_ipv6(tmp_path: Path) -> None:
    secret = create_key(tmp_path, "ward")
    port = free_port()
    server = start_cli([*APPLIANCE, "serve", "--host", "::", "--port", str(port),
                        "--data-dir", str(tmp_path), *SMALL],
                       f"http://[::1]:{port}", tmp_path / "serve.log")
    try:
        assert _chat(server.url, secret)
    finally:
        assert server.stop() == 0


def test_the_systemd_units_command_line_serves(tmp_path: Path) -> None:
    """The unit's ExecStart, with the installed paths pointed at this checkout."""
    unit = (REPO_ROOT / "packaging" / "appliance.service").read_text()
    exec_start = next(line.split("=", 1)[1] for line in unit.splitlines()
                      if line.startswith("ExecStart="))
    argv = shlex.split(exec_start)
    assert argv[:2] == ["/opt/appliance/appliance", "serve"] and "--config" in argv
    port = free_port()
    config = (REPO_ROOT / "packaging" / "appliance.toml").read_text()
    config = (config.replace('host = "127.0.0.1"', 'host = "0.0.0.0"')
              .replace("port = 8080", f"port = {port}")
              .replace('data_dir = "/var/lib/appliance"', f'data_dir = "{tmp_path}"')
              .replace("parallel = 16", "parallel = 2").replace("ctx_size = 2048",
                                                                "ctx_size = 512"))
    assert f"port = {port}" in config and str(tmp_path) in config
    path = tmp_path / "appliance.toml"
    path.write_text(config)
    secret = create_key(tmp_path, "clinic")
    argv = [*APPLIANCE, *argv[1:]]
    argv[argv.index("--config") + 1] = str(path)
    server = start_cli(argv, f"http://127.0.0.1:{port}", tmp_path / "unit.log")
    try:
        assert _chat(server.url, secret)
    finally:
        assert server.stop() == 0
