"""HTTP/1.1 over a bare socket, for requests no HTTP client library would send: bytes are
written exactly as given and every response on the connection is read back."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(method: str, path: str, body: bytes = b"", *,
            headers: dict[str, str | bytes] | None = None, key: str | None = None,
            content_type: str | None = "application/json") -> bytes:
    """A request's bytes: Host, Content-Length, Connection: close, the key, then
    ``headers`` (a value of b"" leaves the header out)."""
    fields: dict[str, str | bytes] = {"Host": "appliance", "Connection": "close",
                                      "Content-Length": str(len(body))}
    if content_type is not None:
        fields["Content-Type"] = content_type
    if key is not None:
        fields["Authorization"] = f"Bearer {key}"
    fields.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1".encode()]
    for name, value in fields.items():
        if value != b"":
            lines.append(name.encode() + b": " + (value if isinstance(value, bytes)
                                                  else value.encode()))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(port: int, data: bytes | list[bytes], *, half_close: bool = False,
             pause_s: float = 0.2, timeout: float = 30.0) -> list[RawResponse]:
    """Send ``data`` (a list: in separate writes, ``pause_s`` apart) and read until the
    server closes the connection or ``timeout``; every complete response read."""
    parts = data if isinstance(data, list) else [data]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for i, part in enumerate(parts):
            if i:
                time.sleep(pause_s)
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server already answered and closed
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return parse_responses(received)


def parse_responses(data: bytes) -> list[RawResponse]:
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", len(rest)))
        out.append(RawResponse(int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return out
