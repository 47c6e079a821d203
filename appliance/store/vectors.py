"""Cosine vector indexes (hnswlib), derived from SQLite and persisted beside it.

A ``VectorIndex`` serves one SQLite table that has at least ``id INTEGER PRIMARY KEY``,
``scope TEXT`` and ``vector BLOB`` (``dim`` float32 values, L2-normalised). Every scope
(say, one API key and user of the response cache) gets its own hnswlib index, so a search
can never return another scope's rows. SQLite is the source of truth: the caller writes a
row through the database first, then tells the index (``add`` / ``remove``); a crash
between the two is repaired at the next start.

Threads. One owner thread (:class:`appliance.store.owner.Owner`, as for the SQLite
writer) holds every hnswlib object of the index and runs its jobs in order:
``await index.search(...)`` never blocks the event loop and no two threads ever touch one
hnswlib object. The ``*_sync`` methods refuse to run on an event-loop thread.

Files. ``<directory>/<sha256(scope)[:32]>.hnsw``, written by ``asave()`` (and by
``close()``) with write-to-temporary + fsync + rename, so a file is either the old or the
new one. After each save the file's sha256 and element count are recorded in the SQLite
table ``vector_index_files`` (:mod:`appliance.store.vector_rows`). ``open()`` reconciles
every scope:

- file missing, or its sha256 differs from the recorded one (corrupt, truncated, or from a
  crash during a save): rebuilt from SQLite;
- file loads: its live labels are compared with the table's ids for that scope; extra
  labels are marked deleted and missing rows added from their stored vectors (stale).

So after ``open()`` the index agrees with SQLite exactly, whatever happened before.

Parameters. ``M=16``, ``ef_construction=200``, ``ef_search=64`` (settings
``vector_m`` ... ): recall@10 against brute force is checked >= 0.99 in the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.store import vector_rows
from appliance.store.db import Database
from appliance.store.owner import Owner
from appliance.store.vector_rows import SavedFile, StoredVector

Vector = npt.NDArray[np.float32]

_MIN_CAPACITY = 64


@dataclass(frozen=True)
class IndexParams:
    dim: int = 384
    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64


@dataclass(frozen=True)
class Hit:
    id: int
    similarity: float  # cosine similarity, 1.0 = same direction


@dataclass(frozen=True)
class OpenReport:
    """What ``open()`` found, per outcome: scopes loaded as saved, repaired, rebuilt."""

    loaded: int
    repaired: int
    rebuilt: int
    rows: int


def to_blob(vector: npt.ArrayLike) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def from_blob(blob: bytes, dim: int) -> Vector:
    out: Vector = np.frombuffer(blob, dtype=np.float32)
    if out.shape != (dim,):
        raise ValueError(f"stored vector has {out.size} values, expected {dim}")
    return out


def scope_file(scope: str) -> str:
    return hashlib.sha256(scope.encode("utf-8")).hexdigest()[:32] + ".hnsw"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Scope:
    """One hnswlib index and its bookkeeping; touched only on the owner thread."""

    def __init__(self, params: IndexParams, capacity: int) -> None:
        import hnswlib

        self.params = params
        self.index: Any = hnswlib.Index(space="cosine", dim=params.dim)
        self.index.init_index(max_elements=max(_MIN_CAPACITY, capacity),
                              ef_construction=params.ef_construction, M=params.m)
        self.index.set_ef(params.ef_search)
        self.live: set[int] = set()
        self.dirty = True

    @classmethod
    def load(cls, params: IndexParams, path: Path) -> _Scope:
        import hnswlib

        scope = cls.__new__(cls)
        scope.params = params
        scope.index = hnswlib.Index(space="cosine", dim=params.dim)
        scope.index.load_index(str(path))
        scope.index.set_ef(params.ef_search)
        labels = set(int(x) for x in scope.index.get_ids_list())
        deleted: set[int] = set()
        for label in labels:
            with contextlib.suppress(RuntimeError):  # raised for a label marked deleted
                scope.index.get_items([label])
                continue
            deleted.add(label)
        scope.live = labels - deleted
        scope.dirty = False
        return scope

    def add(self, ids: Sequence[int], vectors: Vector) -> None:
        if not ids:
            return
        need = self.index.get_current_count() + len(ids)
        if need > self.index.get_max_elements():
            self.index.resize_index(max(need, 2 * self.index.get_max_elements()))
        self.index.add_items(vectors, np.asarray(ids, dtype=np.int64), num_threads=1)
        self.live.update(ids)
        self.dirty = True

    def remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            if i in self.live:
                self.index.mark_deleted(i)
                self.live.discard(i)
                self.dirty = True

    def search(self, vector: Vector, k: int) -> list[Hit]:
        k = min(k, len(self.live))
        if k <= 0:
            return []
        self.index.set_ef(max(self.params.ef_search, k))
        labels, distances = self.index.knn_query(vector.reshape(1, -1), k=k, num_threads=1)
        return [Hit(int(label), 1.0 - float(d))
                for label, d in zip(labels[0], distances[0], strict=True)]


class VectorIndex:
    """Per-scope cosine indexes over ``table``, owned by one thread; see the module doc."""

    def __init__(self, db: Database, table: str, directory: Path,
                 params: IndexParams = IndexParams()) -> None:
        self.db = db
        self.table = table
        self.directory = directory
        self.params = params
        self._scopes: dict[str, _Scope] = {}  # owner thread only
        self._owner = Owner(f"hnsw-{table}", label=f"vector index {table}")
        self._owner.start(lambda: None)

    # -- public operations (any thread) ---------------------------------------------------

    def open(self) -> OpenReport:
        """Load and reconcile every scope with SQLite (blocking; call before serving)."""
        return self._owner.call_sync(self._open)

    async def add(self, scope: str, ids: Sequence[int], vectors: npt.ArrayLike) -> None:
        arr = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.params.dim)
        await self._owner.call(lambda: self._scope_to_add(scope).add(list(ids), arr))

    def add_sync(self, scope: str, ids: Sequence[int], vectors: npt.ArrayLike) -> None:
        arr = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.params.dim)
        self._owner.call_sync(lambda: self._scope_to_add(scope).add(list(ids), arr))

    async def remove(self, removals: dict[str, list[int]]) -> None:
        await self._owner.call(lambda: self._remove(removals))

    def remove_sync(self, removals: dict[str, list[int]]) -> None:
        self._owner.call_sync(lambda: self._remove(removals))

    async def search(self, scope: str, vector: npt.ArrayLike, k: int = 1) -> list[Hit]:
        v = np.asarray(vector, dtype=np.float32).reshape(self.params.dim)
        return await self._owner.call(lambda: self._search(scope, v, k))

    def search_sync(self, scope: str, vector: npt.ArrayLike, k: int = 1) -> list[Hit]:
        v = np.asarray(vector, dtype=np.float32).reshape(self.params.dim)
        return self._owner.call_sync(lambda: self._search(scope, v, k))

    async def ids(self) -> dict[str, set[int]]:
        """Every scope's live ids (for tests and checks)."""
        return await self._owner.call(self._ids)

    def ids_sync(self) -> dict[str, set[int]]:
        return self._owner.call_sync(self._ids)

    async def asave(self) -> int:
        """Write every changed scope to disk; return how many were written."""
        return await self._owner.call(self._save)

    def close(self, *, save: bool = True) -> None:
        """Finish queued jobs, save (unless ``save=False``), stop the owner thread."""
        self._owner.close(last=self._save if save else None)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- owner-thread work ----------------------------------------------------------------

    def _scope_to_add(self, scope: str) -> _Scope:
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = _Scope(self.params, 0)
        return found

    def _ids(self) -> dict[str, set[int]]:
        return {name: set(scope.live) for name, scope in self._scopes.items() if scope.live}

    def _search(self, scope: str, vector: Vector, k: int) -> list[Hit]:
        found = self._scopes.get(scope)
        return [] if found is None else found.search(vector, k)

    def _remove(self, removals: dict[str, list[int]]) -> None:
        for scope, ids in removals.items():
            found = self._scopes.get(scope)
            if found is not None:
                found.remove(ids)

    def _rows(self, scope: str, ids: Sequence[int] | None = None
              ) -> tuple[list[int], Vector]:
        rows: list[StoredVector] = self.db.read_sync(
            lambda conn: vector_rows.vectors(conn, self.table, scope, ids))
        vectors = np.zeros((len(rows), self.params.dim), dtype=np.float32)
        for i, row in enumerate(rows):
            vectors[i] = from_blob(row.blob, self.params.dim)
        return [row.id for row in rows], vectors

    def _open(self) -> OpenReport:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Two reads, not one snapshot: the file records change only on this thread.
        expected = self.db.read_sync(lambda conn: vector_rows.ids_by_scope(conn, self.table))
        recorded = self.db.read_sync(lambda conn: vector_rows.recorded_files(conn, self.table))
        self._scopes.clear()
        loaded = repaired = rebuilt = 0
        for scope, ids in expected.items():
            path = self.directory / scope_file(scope)
            state: _Scope | None = None
            if path.exists() and recorded.get(path.name) == _file_sha256(path):
                with contextlib.suppress(Exception):  # hnswlib: RuntimeError and others
                    state = _Scope.load(self.params, path)
            if state is None:
                got, vectors = self._rows(scope)
                state = _Scope(self.params, len(got))
                state.add(got, vectors)
                rebuilt += 1
            else:
                extra, missing = state.live - ids, ids - state.live
                if extra or missing:
                    state.remove(sorted(extra))
                    got, vectors = self._rows(scope, sorted(missing))
                    state.add(got, vectors)
                    repaired += 1
                else:
                    loaded += 1
            self._scopes[scope] = state
        for stray in self.directory.glob("*.hnsw"):  # scopes with no rows left
            if stray.name not in {scope_file(s) for s in expected}:
                stray.unlink(missing_ok=True)
        return OpenReport(loaded, repaired, rebuilt, sum(len(v) for v in expected.values()))

    def _save(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        written: list[SavedFile] = []
        gone: list[str] = []
        for scope, state in list(self._scopes.items()):
            if not state.dirty:
                continue
            path = self.directory / scope_file(scope)
            if not state.live:
                path.unlink(missing_ok=True)
                gone.append(path.name)
                del self._scopes[scope]
                continue
            tmp = path.with_suffix(".tmp")
            state.index.save_index(str(tmp))
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
            written.append(SavedFile(path.name, _file_sha256(path), len(state.live)))
            state.dirty = False
        if written or gone:
            self.db.write_sync(
                lambda conn: vector_rows.record_files(conn, self.table, written, gone))
            with contextlib.suppress(OSError):
                fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return len(written)
