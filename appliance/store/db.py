"""The appliance's SQLite file: one writer thread, read-only connections elsewhere.

``Database(path)`` opens (or creates) one SQLite file in WAL mode with
``synchronous=FULL``: every commit fsyncs the WAL, so a write whose ``write()`` has
returned survives ``kill -9`` and power loss. (``NORMAL`` in WAL mode can lose the last
commits on power loss; admission and audit records must not.) It then applies the
migrations of ``appliance.store.migrations`` on the writer thread before returning.
``secure_delete`` is on: deleted and overwritten rows are zeroed in the file, so a forgotten
memory or a converted id leaves no copy in free pages; after migrations the WAL is
truncated for the same reason. ``pseudonyms`` (:mod:`appliance.store.pseudonyms`) gives the
writer the SQL function ``pseudonym(text)`` that a migration uses to hash stored ids.

Writes. One thread owns the only write connection and takes jobs from a queue, in order
(an :class:`appliance.store.owner.Owner`). A job is a callable
``fn(conn: sqlite_utils.Database) -> T``; it runs inside one transaction
(``conn.atomic()``), committed when ``fn`` returns and rolled back if it raises, and its
result or exception is handed back to the caller::

    key_id = await db.write(lambda conn: conn["t"].insert({"a": 1}).last_pk)   # event loop
    key_id = db.write_sync(lambda conn: ...)                                    # CLI, threads

``write`` never blocks the event loop: the writer resolves an asyncio future through
``loop.call_soon_threadsafe``. Cancelling the awaiting task does not cancel a queued write;
it still runs and commits. ``fn`` must return plain values (not a lazy ``conn.query()``
generator) and must not call ``write``/``write_sync`` of the same database except
``write_sync`` from inside a job, which runs inline in the same transaction.

Reads. ``read(fn)`` / ``read_sync(fn)`` run ``fn(conn)`` on a read-only connection
belonging to the current thread (``read`` uses the database's own small thread pool, so
the event loop never touches SQLite). Each read runs in one snapshot transaction, sees
every write acknowledged before it started, and never waits for the writer (WAL).

``read_sync`` and ``write_sync`` refuse to run on a thread with a running event loop
(``RuntimeError``): there, use the ``async`` versions.

``close()`` lets queued writes finish, stops the writer, closes every connection; later
calls raise ``RuntimeError``. It blocks; from a coroutine use ``await db.aclose()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from appliance.store.migrations import MIGRATIONS, Migration, apply_migrations
from appliance.store.owner import Owner, refuse_in_event_loop
from appliance.store.pseudonyms import SQL_FUNCTION, Pseudonyms

T = TypeVar("T")

Job = Callable[[sqlite_utils.Database], T]

_BUSY_TIMEOUT_MS = 10_000
_READ_THREADS = 2  # reads are short lookups; WAL lets them run beside the writer


class Database:
    """One SQLite file: a writer thread fed by a queue, read-only connections per thread."""

    _wconn: sqlite_utils.Database  # set by, and used only on, the writer thread

    def __init__(
        self,
        path: str | Path,
        *,
        migrations: Sequence[Migration] = MIGRATIONS,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.path = Path(path)
        self._pseudonyms = pseudonyms
        self._lock = threading.Lock()
        self._closed = False
        self._local = threading.local()
        self._read_conns: list[sqlite_utils.Database] = []
        self._read_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=_READ_THREADS, thread_name_prefix="sqlite-read"
        )
        self._writer = Owner("sqlite-writer", label=f"database {self.path}")
        try:
            self.applied_migrations: list[int] = self._writer.start(
                lambda: self._open_writer(tuple(migrations)), teardown=self._close_writer)
        except BaseException:
            self._read_pool.shutdown()
            self._closed = True
            raise

    # -- writes ---------------------------------------------------------------------------

    async def write(self, fn: Job[T]) -> T:
        """Run ``fn`` in a transaction on the writer thread; return its result."""
        return await self._writer.call(lambda: self._transaction(fn))

    def write_sync(self, fn: Job[T]) -> T:
        """Blocking ``write`` for threads without an event loop (CLI, tools, tests); from
        inside a job it runs inline, in that job's transaction."""
        if not self._writer.on_owner_thread():
            refuse_in_event_loop("write_sync()")
        return self._writer.call_sync(lambda: self._transaction(fn))

    def _transaction(self, fn: Job[T]) -> T:
        with self._wconn.atomic():
            return fn(self._wconn)

    def _open_writer(self, migrations: Sequence[Migration]) -> list[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(self.path, check_same_thread=False)
        try:
            conn = sqlite_utils.Database(raw, execute_plugins=False)
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.enable_wal()
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")
            if self._pseudonyms is not None:
                raw.create_function(SQL_FUNCTION, 1, self._pseudonyms.of, deterministic=True)
            applied = apply_migrations(conn, migrations)
            if applied:  # the WAL's old frames may hold what a migration rewrote
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except BaseException:
            raw.close()
            raise
        self._wconn = conn
        return applied

    def _close_writer(self) -> None:
        self._wconn.close()

    # -- reads ----------------------------------------------------------------------------

    async def read(self, fn: Job[T]) -> T:
        """Run ``fn`` on a read-only connection in the database's read thread pool."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._run_read, fn)

    def read_sync(self, fn: Job[T]) -> T:
        """Run ``fn`` on this thread's read-only connection (not on an event-loop thread)."""
        refuse_in_event_loop("read_sync()")
        self._check_open()
        return self._run_read(fn)

    def _run_read(self, fn: Job[T]) -> T:
        conn = self._read_conn()
        conn.conn.execute("BEGIN")  # one snapshot for every statement of fn
        try:
            return fn(conn)
        finally:
            conn.conn.execute("ROLLBACK")

    def _read_conn(self) -> sqlite_utils.Database:
        conn: sqlite_utils.Database | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            raw = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn = sqlite_utils.Database(raw, execute_plugins=False)
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only=ON")
            with self._lock:
                if self._closed:
                    conn.close()
                    raise RuntimeError(f"database {self.path} is closed")
                self._read_conns.append(conn)
            self._local.conn = conn
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Finish queued writes, stop the writer, close every connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._writer.close()
        self._read_pool.shutdown(wait=True)
        with self._lock:
            conns, self._read_conns = self._read_conns, []
        for conn in conns:
            conn.close()

    async def aclose(self) -> None:
        """``close()`` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
