"""The SQL behind the vector indexes: the vectors an indexed table stores, and the record
of each saved index file (``vector_index_files``, migration 4).

An indexed table has at least ``id INTEGER PRIMARY KEY``, ``scope TEXT`` and
``vector BLOB``; its name comes from the code, never from a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

FILES_TABLE = "vector_index_files"
_CHUNK = 500  # ids per ``IN (...)``, well under SQLite's variable limit


@dataclass(frozen=True)
class StoredVector:
    id: int
    blob: bytes


@dataclass(frozen=True)
class SavedFile:
    file: str
    sha256: str
    count: int  # vectors in the file


def ids_by_scope(conn: sqlite_utils.Database, table: str) -> dict[str, set[int]]:
    """The ids of every row that has a vector, per scope."""
    out: dict[str, set[int]] = {}
    for row in conn.query(f"SELECT scope, id FROM [{table}] WHERE vector IS NOT NULL"):
        out.setdefault(str(row["scope"]), set()).add(int(row["id"]))
    return out


def vectors(conn: sqlite_utils.Database, table: str, scope: str,
            ids: Sequence[int] | None = None) -> list[StoredVector]:
    """The stored vectors of ``scope`` in id order, or of the rows ``ids`` only (rows
    without a vector are left out)."""
    if ids is None:
        rows = list(conn.query(f"SELECT id, vector FROM [{table}] WHERE scope = ? "
                               "AND vector IS NOT NULL ORDER BY id", [scope]))
    else:
        rows = []
        for start in range(0, len(ids), _CHUNK):
            part = list(ids[start:start + _CHUNK])
            marks = ",".join("?" * len(part))
            rows += conn.query(f"SELECT id, vector FROM [{table}] WHERE id IN ({marks}) "
                               "AND vector IS NOT NULL", part)
    return [StoredVector(int(r["id"]), r["vector"]) for r in rows]


def recorded_files(conn: sqlite_utils.Database, table: str) -> dict[str, str]:
    """File name -> sha256 of every index file saved for ``table``."""
    return {str(r["file"]): str(r["sha256"]) for r in conn.query(
        f"SELECT file, sha256 FROM {FILES_TABLE} WHERE tbl = ?", [table])}


def record_files(conn: sqlite_utils.Database, table: str, written: Sequence[SavedFile],
                 gone: Sequence[str]) -> None:
    for name in gone:
        conn.execute(f"DELETE FROM {FILES_TABLE} WHERE tbl = ? AND file = ?", [table, name])
    for saved in written:
        conn.execute(f"INSERT OR REPLACE INTO {FILES_TABLE} (tbl, file, sha256, count) "
                     "VALUES (?, ?, ?, ?)", [table, saved.file, saved.sha256, saved.count])
