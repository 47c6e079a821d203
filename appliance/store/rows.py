"""What the repositories share: a row of an indexed table (and the delete that returns
them), pending uses, and the largest integer a row can hold."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass

import sqlite_utils

# SQLite's largest INTEGER (JSON carries it as an integer too): a larger id names no row, and
# a larger value would fail the insert.
MAX_INTEGER = 2**63 - 1


@dataclass(frozen=True)
class IndexedRow:
    """A row of a table with a vector index: where its vector lives (``""``: nowhere)."""

    scope: str
    id: int


@dataclass(frozen=True)
class Uses:
    """Uses of one row counted in memory since the last flush, and the latest of them:
    a hit costs no write; the periodic sweep writes them all in one transaction."""

    count: int
    last: float


def touch(pending: MutableMapping[int, Uses], row_id: int, now: float) -> None:
    before = pending.get(row_id)
    pending[row_id] = Uses((0 if before is None else before.count) + 1, now)


def delete_indexed(conn: sqlite_utils.Database, table: str, where: str,
                   args: Sequence[object]) -> list[IndexedRow]:
    """Delete the rows of ``table`` matching ``where``; return them, for the index."""
    rows = [IndexedRow(str(r["scope"]), int(r["id"])) for r in conn.query(
        f"SELECT scope, id FROM {table} WHERE {where}", list(args))]
    if rows:
        conn.execute(f"DELETE FROM {table} WHERE {where}", list(args))
    return rows


def by_scope(rows: Iterable[IndexedRow]) -> dict[str, list[int]]:
    """Row ids per index scope, for ``VectorIndex.remove`` (rows without a scope skipped)."""
    out: dict[str, list[int]] = {}
    for row in rows:
        if row.scope:
            out.setdefault(row.scope, []).append(row.id)
    return out
