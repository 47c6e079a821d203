"""Keyed hashes of the ids clients name: the OpenAI ``user`` and memory session ids.

A clinic's client software often uses an e-mail address, a phone or a record number as its
``user``; the database, the vector index names and the audit log keep only
``HMAC-SHA256(install key, id)`` (64 hex digits). The API still takes and matches the plain
value: the web layer hashes a request's ids on the way in, before any lookup or store, and
answers echo what the request sent.

The install key: 32 random bytes in ``<data_dir>/install.key``, created once (mode 0600,
written beside and linked into place, so two processes starting at once agree on one key)
and read at every start. Without it the stored hashes match nobody: back it up with the
database. A key file readable by others is narrowed to 0600 when loaded.

The SQL function ``pseudonym(text)`` (:data:`SQL_FUNCTION`) is registered on the database's
writer connection, for the migration that converts plain ids written by older versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from appliance.errors import ConfigError

INSTALL_KEY_FILE = "install.key"
SQL_FUNCTION = "pseudonym"
_KEY_BYTES = 32


class Pseudonyms:
    """``of(value)``: the keyed hash stored for a client's id (``""`` stays ``""``: none)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise ValueError(f"the install key must be {_KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    def of(self, value: str) -> str:
        if not value:
            return ""
        data = value.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def maybe(self, value: str | None) -> str | None:
        """``of`` for an optional id: None and ``""`` stay None."""
        return self.of(value) if value else None

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Pseudonyms:
        """The install key of ``data_dir``, created on first use."""
        path = data_dir / INSTALL_KEY_FILE
        if not path.exists():
            _create(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
        key = path.read_bytes()
        if len(key) != _KEY_BYTES:
            raise ConfigError(
                f"{path} holds {len(key)} bytes, not a {_KEY_BYTES}-byte install key: restore "
                "it from the backup of this data directory (a new key would make every stored "
                "user and session id unreachable)")
        return cls(key)


def _create(path: Path) -> None:
    """Write a new key beside ``path`` and link it into place; if another process got
    there first, its key stands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
