"""The hnswlib indexes: recall against brute force, scopes, persistence and repair."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from appliance.store.db import Database
from appliance.store.vector_rows import FILES_TABLE
from appliance.store.vectors import IndexParams, VectorIndex, scope_file, to_blob

DIM = 384


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    # Clustered data, like sentence embeddings (which are far from uniform on the sphere).
    centres = rng.normal(size=(max(1, n // 50), DIM)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, DIM))
    x = x.astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _table(db: Database) -> None:
    db.write_sync(lambda c: c.execute(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, scope TEXT NOT NULL, "
        "vector BLOB)"))


def _insert(db: Database, scope: str, vectors: npt.NDArray[np.float32]) -> list[int]:
    def job(c: object) -> list[int]:
        ids = []
        for v in vectors:
            cur = c.execute("INSERT INTO items (scope, vector) VALUES (?, ?)",  # type: ignore[attr-defined]
                            [scope, to_blob(v)])
            ids.append(int(cur.lastrowid))
        return ids

    return db.write_sync(job)


def _ids_in_db(db: Database) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for scope, rid in db.read_sync(lambda c: c.execute("SELECT scope, id FROM items")
                                   .fetchall()):
        out.setdefault(scope, set()).add(rid)
    return out


@pytest.fixture
def db(tmp_path: Path) -> object:
    d = Database(tmp_path / "v.db")
    _table(d)
    yield d
    d.close()


def test_recall_against_brute_force_at_shipped_parameters(db: Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    both = _unit(rng, 20_200)  # queries from the same clusters as the data
    data, queries = both[:20_000], both[20_000:]
    ids = _insert(db, "s", data)
    index = VectorIndex(db, "items", tmp_path / "idx", IndexParams())
    try:
        index.add_sync("s", ids, data)
        k, found, top1 = 10, 0, 0
        for q in queries:
            truth = {ids[i] for i in np.argsort(-(data @ q))[:k]}
            hits = index.search_sync("s", q, k)
            found += len(truth & {h.id for h in hits})
            best = max(hits, key=lambda h: h.similarity)
            top1 += best.similarity == pytest.approx(float(np.max(data @ q)), abs=1e-4)
        assert found / (k * len(queries)) >= 0.99
        assert top1 / len(queries) >= 0.99
    finally:
        index.close(save=False)


def test_scopes_never_see_each_other(db: Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a, b = _unit(rng, 50), _unit(rng, 50)
    ids_a, ids_b = _insert(db, "a", a), _insert(db, "b", b)
    index = VectorIndex(db, "items", tmp_path / "idx")
    try:
        index.add_sync("a", ids_a, a)
        index.add_sync("b", ids_b, b)
        for q in b[:10]:
            assert {h.id for h in index.search_sync("a", q, 5)} <= set(ids_a)
        assert index.search_sync("a", b[0], 1)[0].similarity < 0.999
        assert index.search_sync("b", b[0], 1)[0].id == ids_b[0]
        assert index.search_sync("nobody", b[0], 3) == []
        index.remove_sync({"b": [ids_b[0]]})
        assert ids_b[0] not in {h.id for h in index.search_sync("b", b[0], 5)}
    finally:
        index.close(save=False)


def test_saved_index_is_loaded_then_repaired_when_stale(db: Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = _unit(rng, 300)
    ids = _insert(db, "s", data)
    index = VectorIndex(db, "items", tmp_path / "idx")
    assert index.open().rebuilt == 1  # first start: no file, rebuilt from SQLite
    index.close()
    again = VectorIndex(db, "items", tmp_path / "idx")
    report = again.open()
    assert (report.loaded, report.repaired, report.rebuilt) == (1, 0, 0)
    # Rows written and deleted while the index was not told (a crash in between).
    more = _unit(rng, 20)
    new_ids = _insert(db, "s", more)
    db.write_sync(lambda c: c.execute("DELETE FROM items WHERE id IN (?, ?)",
                                      [ids[0], ids[1]]))
    again.close(save=False)
    third = VectorIndex(db, "items", tmp_path / "idx")
    try:
        report = third.open()
        assert (report.loaded, report.repaired, report.rebuilt) == (0, 1, 0)
        assert third.ids_sync() == _ids_in_db(db)
        assert third.search_sync("s", more[3], 1)[0].id == new_ids[3]
    finally:
        third.close()


@pytest.mark.parametrize("damage", ["corrupt", "missing", "unrecorded"])
def test_damaged_index_file_is_rebuilt(db: Database, tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(3)
    data = _unit(rng, 200)
    ids = _insert(db, "s", data)
    index = VectorIndex(db, "items", tmp_path / "idx")
    index.open()
    index.close()
    path = tmp_path / "idx" / scope_file("s")
    if damage == "corrupt":
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2: len(raw) // 2 + 64] = b"\xff" * 64
        path.write_bytes(bytes(raw))
    elif damage == "missing":
        path.unlink()
    else:
        db.write_sync(lambda c: c.execute(f"DELETE FROM {FILES_TABLE}"))
    again = VectorIndex(db, "items", tmp_path / "idx")
    try:
        assert again.open().rebuilt == 1
        assert again.ids_sync() == {"s": set(ids)}
        assert again.search_sync("s", data[5], 1)[0].id == ids[5]
    finally:
        again.close()


async def test_async_operations_from_the_event_loop(db: Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    data = _unit(rng, 10)
    ids = await asyncio.to_thread(_insert, db, "s", data)
    index = VectorIndex(db, "items", tmp_path / "idx")
    try:
        await index.add("s", ids, data)
        hits = await index.search("s", data[2], 3)
        assert hits[0].id == ids[2] and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
        await index.remove({"s": [ids[2]]})
        assert ids[2] not in {h.id for h in await index.search("s", data[2], 3)}
        assert await index.asave() == 1
    finally:
        await index.aclose()
