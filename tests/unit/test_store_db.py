"""Database: the writer thread, reads, close, durability. Real SQLite files, no mocks."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlite_utils

from appliance.store import Database


def _make_table(conn: sqlite_utils.Database) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")


def _insert(v: str) -> Callable[[sqlite_utils.Database], int]:
    def job(conn: sqlite_utils.Database) -> int:
        cursor = conn.execute("INSERT INTO t (v) VALUES (?)", [v])
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    return job


def _count(conn: sqlite_utils.Database) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "app.db")
    database.write_sync(_make_table)
    yield database
    database.close()


def test_opens_in_wal_mode_with_full_sync(db: Database) -> None:
    def pragmas(conn: sqlite_utils.Database) -> tuple[str, int]:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        return journal, sync

    assert db.write_sync(pragmas) == ("wal", 2)  # 2 == FULL
    assert db.read_sync(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"


def test_write_sync_returns_result_and_read_sees_it(db: Database) -> None:
    first = db.write_sync(_insert("a"))
    second = db.write_sync(_insert("b"))
    assert (first, second) == (1, 2)
    rows = db.read_sync(lambda c: [r["v"] for r in c.query("SELECT v FROM t ORDER BY id")])
    assert rows == ["a", "b"]


def test_failed_write_rolls_back_and_raises(db: Database) -> None:
    def half_then_fail(conn: sqlite_utils.Database) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('partial')")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        db.write_sync(half_then_fail)
    assert db.read_sync(_count) == 0
    db.write_sync(_insert("after"))  # the writer is still alive
    assert db.read_sync(_count) == 1


def test_writes_all_run_on_one_writer_thread(db: Database) -> None:
    seen: set[int] = set()

    def record(conn: sqlite_utils.Database) -> None:
        seen.add(threading.get_ident())

    callers = [threading.Thread(target=db.write_sync, args=(record,)) for _ in range(8)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    db.write_sync(record)
    assert len(seen) == 1
    assert threading.get_ident() not in seen


def test_write_sync_inside_a_job_runs_inline(db: Database) -> None:
    def outer(conn: sqlite_utils.Database) -> int:
        db.write_sync(_insert("inner"))
        return _count(conn)

    assert db.write_sync(outer) == 1


def test_read_connection_is_read_only(db: Database) -> None:
    with pytest.raises(sqlite3.OperationalError):
        db.read_sync(lambda c: c.execute("INSERT INTO t (v) VALUES ('x')"))
    assert db.read_sync(_count) == 0


async def test_many_concurrent_async_writes_all_land(db: Database) -> None:
    ids = await asyncio.gather(*(db.write(_insert(f"v{i}")) for i in range(200)))
    assert sorted(ids) == list(range(1, 201))
    assert await db.read(_count) == 200


async def test_async_read_runs_off_the_event_loop_and_sees_committed_write(
    db: Database,
) -> None:
    await db.write(_insert("x"))
    loop_thread = threading.get_ident()

    def where(conn: sqlite_utils.Database) -> tuple[int, int]:
        return threading.get_ident(), _count(conn)

    thread, count = await db.read(where)
    assert count == 1
    assert thread != loop_thread


async def test_async_write_propagates_exceptions(db: Database) -> None:
    def fail(conn: sqlite_utils.Database) -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await db.write(fail)


async def test_cancelled_async_write_still_commits(db: Database) -> None:
    gate = threading.Event()

    def blocked(conn: sqlite_utils.Database) -> None:
        gate.wait(5)

    blocker = asyncio.ensure_future(db.write(blocked))
    task = asyncio.ensure_future(db.write(_insert("queued")))
    await asyncio.sleep(0.01)
    task.cancel()
    gate.set()
    await blocker
    await db.write(lambda c: None)  # FIFO: the cancelled write ran before this one
    assert await db.read(_count) == 1


async def test_sync_calls_refuse_to_block_the_event_loop(db: Database) -> None:
    with pytest.raises(RuntimeError, match="event loop"):
        db.write_sync(_count)
    with pytest.raises(RuntimeError, match="event loop"):
        db.read_sync(_count)


def test_close_drains_queued_writes_then_refuses(tmp_path: Path) -> None:
    database = Database(tmp_path / "app.db")
    database.write_sync(_make_table)
    results: list[int] = []
    callers = [
        threading.Thread(target=lambda i=i: results.append(
            database.write_sync(_insert(str(i)))))
        for i in range(20)
    ]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    database.read_sync(_count)  # opens a read connection that close() must close
    database.close()
    database.close()  # idempotent
    assert len(results) == 20
    assert database.closed
    assert not database._writer.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        database.write_sync(_count)
    with pytest.raises(RuntimeError, match="closed"):
        database.read_sync(_count)
    reopened = Database(tmp_path / "app.db")
    try:
        assert reopened.read_sync(_count) == 20
    finally:
        reopened.close()


async def test_aclose_does_not_block_and_finishes_pending_writes(tmp_path: Path) -> None:
    database = Database(tmp_path / "app.db")
    await database.write(_make_table)
    pending = [asyncio.ensure_future(database.write(_insert("p"))) for _ in range(10)]
    await asyncio.sleep(0)  # let the tasks submit their jobs
    await database.aclose()
    assert len(await asyncio.gather(*pending)) == 10
    with pytest.raises(RuntimeError, match="closed"):
        await database.write(_count)
    with pytest.raises(RuntimeError, match="closed"):
        await database.read(_count)


def test_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    child = textwrap.dedent(
        f"""
        import os, signal
        from appliance.store import Database
        db = Database({str(path)!r})
        db.write_sync(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        db.write_sync(lambda c: c.execute("INSERT INTO t (v) VALUES ('durable')"))
        print("acknowledged", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert proc.stdout.strip() == "acknowledged"
    assert proc.returncode == -9
    database = Database(path)
    try:
        assert database.read_sync(lambda c: [r["v"] for r in c.query("SELECT v FROM t")]) == [
            "durable"]
    finally:
        database.close()
