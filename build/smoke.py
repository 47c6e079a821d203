"""Smoke test of the executable with no network: run it INSIDE a network namespace that has
only loopback (`make bundle-test` does: unshare -n, then `ip link set lo up`).

    python build/smoke.py dist/appliance

Starts `appliance serve` on a fresh data directory, waits for /ready, fetches the web console's
page and one of its scripts, makes a streamed chat completion and an embeddings call with the
official openai client, stops the server with SIGTERM and requires a clean exit (code 0).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def _check_offline() -> None:
    """Only loopback: anything outside must be unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: needs a route, there is none
        except OSError:
            return
    raise SystemExit("smoke: a route to the outside exists; run inside `unshare -n`")


def _check_console(base: str) -> None:
    """The web console's page and one of its scripts come from inside the bundle."""
    with urllib.request.urlopen(base + "/", timeout=10) as r:
        page = r.read().decode()
        assert "/console/app.js" in page, "the console page does not load its script"
        assert "script-src 'self'" in r.headers.get("Content-Security-Policy", "")
    with urllib.request.urlopen(base + "/console/app.js", timeout=10) as r:
        assert r.headers.get("Content-Type", "").startswith("text/javascript")
        assert b"import" in r.read()
    print("smoke: console page and script served")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executable", type=Path)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    _check_offline()
    from openai import OpenAI

    with tempfile.TemporaryDirectory() as data:
        t0 = time.monotonic()
        proc = subprocess.Popen([str(args.executable.resolve()), "serve", "--port",
                                 str(args.port), "--data-dir", data], cwd=data)
        base = f"http://127.0.0.1:{args.port}"
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"smoke: the server exited early ({proc.returncode})")
                if time.monotonic() - t0 > args.timeout:
                    raise SystemExit("smoke: not ready in time")
                try:
                    with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.1)
            print(f"smoke: ready after {time.monotonic() - t0:.1f}s")
            _check_console(base)
            client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
            stream = client.chat.completions.create(
                model="default", stream=True, max_tokens=16, seed=1,
                messages=[{"role": "user", "content": "Say hello to the clinic."}])
            pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
            text = "".join(pieces)
            assert len(pieces) >= 2 and text.strip(), f"streamed chat gave {pieces!r}"
            print(f"smoke: streamed chat ok ({len(pieces)} chunks): {text!r}")
            emb = client.embeddings.create(model="default", input=["blood pressure"])
            assert len(emb.data) == 1 and len(emb.data[0].embedding) > 0
            print(f"smoke: embeddings ok (dim {len(emb.data[0].embedding)})")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    if code != 0:
        raise SystemExit(f"smoke: exit code {code} after SIGTERM, expected 0")
    print("smoke: clean exit after SIGTERM; passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
