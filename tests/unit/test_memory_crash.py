"""Crash safety: a process writing memories is SIGKILLed again and again (at random
moments, including during index saves); after each kill the database passes
``PRAGMA integrity_check``, every acknowledged write is there (and every acknowledged
deletion gone), and the reopened vector index agrees with SQLite exactly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from appliance.config import REPO_ROOT
from appliance.store.db import Database
from appliance.store.vectors import VectorIndex

KILLS = 20


def _run_and_kill(data: Path, seed: int, run_for: float
                  ) -> tuple[set[int], set[int], set[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.unit._crash_writer", str(data), str(seed)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    added: set[int] = set()
    deleted: set[int] = set()
    deleting: set[int] = set()
    lines = {"add": added, "del": deleted, "deleting": deleting}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, _, value = line.strip().partition(" ")
            lines[kind].add(int(value))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not added and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # wait for the first acknowledged write (start-up is slow)
    time.sleep(run_for)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return added, deleted, deleting


def test_sigkill_never_loses_acknowledged_writes_or_desyncs_the_index(tmp_path: Path) -> None:
    rng = random.Random(5)
    acked: set[int] = set()
    gone: set[int] = set()
    maybe: set[int] = set()  # a deletion was under way when the process was killed
    for kill in range(KILLS):
        added, deleted, deleting = _run_and_kill(tmp_path, kill, rng.uniform(0.05, 0.8))
        assert added, f"kill {kill}: the writer acknowledged nothing"
        acked |= added
        gone |= deleted
        maybe |= deleting - deleted
        with Database(tmp_path / "crash.db") as db:
            assert db.read_sync(lambda c: c.execute("PRAGMA integrity_check")
                                .fetchone()[0]) == "ok"
            rows = db.read_sync(lambda c: c.execute(
                "SELECT id, scope, vector IS NOT NULL FROM memories").fetchall())
            present = {r[0] for r in rows}
            lost = acked - gone - maybe - present
            assert not lost, f"kill {kill}: lost acknowledged writes {sorted(lost)}"
            assert not gone & present, f"kill {kill}: deleted rows came back"
            expected: dict[str, set[int]] = {}
            for rid, scope, indexed in rows:
                if indexed:
                    expected.setdefault(scope, set()).add(rid)
            index = VectorIndex(db, "memories", tmp_path / "vectors")
            try:
                index.open()
                assert index.ids_sync() == expected, f"kill {kill}: index disagrees"
            finally:
                index.close(save=kill % 2 == 0)  # sometimes leave the repair to the child
    assert len(acked) > KILLS
