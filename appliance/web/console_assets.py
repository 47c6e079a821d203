"""The web console's files (``appliance/web/console/``), read once at start-up.

They are package data (and data of the PyInstaller bundle, in the same place relative to
this module), a few dozen kilobytes in all, so they are kept in memory with a gzip copy
and an ETag each; nothing is read from disk per request. ``enabled`` is the ``console``
setting resolved against the bind: on by default only on loopback.

Every console response carries :data:`SECURITY_HEADERS`: a strict Content-Security-Policy
(scripts and styles only from the appliance's own files, never inline, no connection
elsewhere), no framing, no MIME sniffing, no referrer.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
INDEX = "index.html"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS: Mapping[str, str] = MappingProxyType({
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
})


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str  # quoted, as the header carries it


def _asset(path: Path) -> Asset:
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, gzip.compress(body, compresslevel=9, mtime=0),
                 CONTENT_TYPES[path.suffix], f'"{digest}"')


@dataclass(frozen=True)
class ConsoleAssets:
    enabled: bool
    files: Mapping[str, Asset] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def load(cls, *, enabled: bool, root: Path = CONSOLE_DIR) -> ConsoleAssets:
        """Every servable file of ``root`` (none when the console is off)."""
        if not enabled:
            return cls(False)
        files = {p.name: _asset(p) for p in sorted(root.iterdir())
                 if p.is_file() and p.suffix in CONTENT_TYPES and NAME.fullmatch(p.name)}
        return cls(True, MappingProxyType(files))

    def get(self, name: str) -> Asset | None:
        return self.files.get(name) if NAME.fullmatch(name) else None
