"""Smoke test of the executable with no network: run it INSIDE a network namespace that has
only loopback (`make bundle-test` does: unshare -n, then `ip link set lo up`).

    python build/smoke.py dist/appliance
    python build/smoke.py .venv/bin/appliance --serve-arg=--n-gpu-layers=99 --expect-gpu

Starts `appliance serve` on a fresh data directory, waits for /ready (guards on and passed),
fetches the web console's page and one of its scripts, makes a chat completion, a streamed
one and an embeddings call with the official openai client, stops the server with SIGTERM
and requires a clean exit (code 0). With --expect-gpu, /ready must report the GPU backend
with every layer offloaded.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


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


def _wait_ready(proc: subprocess.Popen[bytes], base: str, timeout: float) -> dict[str, Any]:
    """/ready's body once it answers 200; a failed start ends the wait at once."""
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"smoke: the server exited early ({proc.returncode})")
        if time.monotonic() - t0 > timeout:
            raise SystemExit("smoke: not ready in time")
        try:
            with urllib.request.urlopen(base + "/ready", timeout=2) as r:
                if r.status == 200:
                    return dict(json.loads(r.read()))
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
            if body.get("status") == "failed":
                raise SystemExit(f"smoke: the server failed to start: {body}") from None
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.1)


def _check_ready(body: dict[str, Any], expect_gpu: bool) -> None:
    assert body.get("guards") == "ready", f"guards are not on and ready: {body}"
    backend = str(body.get("backend", ""))
    if expect_gpu:
        found = re.match(r"gpu backend, (\d+)/(\d+) layers offloaded", backend)
        assert found and found.group(1) == found.group(2), \
            f"expected the GPU backend with every layer offloaded, /ready says {backend!r}"
    print(f"smoke: /ready backend: {backend}")


def _requests(base: str) -> dict[str, Any]:
    from openai import OpenAI

    client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "Say hello to the clinic."}]
    chat = client.chat.completions.create(model="default", max_tokens=16, seed=1,
                                          messages=messages)
    answer = chat.choices[0].message.content or ""
    assert answer.strip() and chat.usage and chat.usage.completion_tokens > 0, chat
    print(f"smoke: chat ok ({chat.usage.completion_tokens} tokens): {answer!r}")
    stream = client.chat.completions.create(model="default", stream=True, max_tokens=16,
                                            seed=1, messages=messages)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    text = "".join(pieces)
    assert len(pieces) >= 2 and text.strip(), f"streamed chat gave {pieces!r}"
    print(f"smoke: streamed chat ok ({len(pieces)} chunks): {text!r}")
    emb = client.embeddings.create(model="default", input=["blood pressure"])
    assert len(emb.data) == 1 and len(emb.data[0].embedding) > 0
    print(f"smoke: embeddings ok (dim {len(emb.data[0].embedding)})")
    return {"chat": answer, "stream_chunks": len(pieces), "stream": text,
            "embedding_dim": len(emb.data[0].embedding)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executable", type=Path)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="one more argument of `appliance serve` (repeatable)")
    parser.add_argument("--expect-gpu", action="store_true",
                        help="/ready must report the GPU backend, every layer offloaded")
    parser.add_argument("--no-offline-check", action="store_true",
                        help="skip the no-route check (a machine without network whose "
                             "routing table still names one)")
    parser.add_argument("--json", type=Path, help="write what was seen to this file")
    args = parser.parse_args()
    if not args.no_offline_check:
        _check_offline()

    with tempfile.TemporaryDirectory() as data:
        t0 = time.monotonic()
        proc = subprocess.Popen([str(args.executable.resolve()), "serve", "--port",
                                 str(args.port), "--data-dir", data, *args.serve_arg], cwd=data)
        base = f"http://127.0.0.1:{args.port}"
        try:
            ready = _wait_ready(proc, base, args.timeout)
            seen: dict[str, Any] = {"ready_s": round(time.monotonic() - t0, 2), **ready}
            print(f"smoke: ready after {seen['ready_s']:.1f}s")
            _check_ready(ready, args.expect_gpu)
            _check_console(base)
            seen.update(_requests(base))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    if code != 0:
        raise SystemExit(f"smoke: exit code {code} after SIGTERM, expected 0")
    print("smoke: clean exit after SIGTERM; passed")
    if args.json:
        args.json.write_text(json.dumps(seen, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
