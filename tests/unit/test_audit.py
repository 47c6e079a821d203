"""The audit log: a linear hash chain on a real SQLite file, tamper detection, the CLI."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from appliance import cli
from appliance.admission.keys import KeyStore
from appliance.observability.audit import GENESIS, Audit, record_hash
from appliance.store.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "audit.db")
    yield database
    database.close()


def _fill(audit: Audit, n: int) -> None:
    for i in range(n):
        audit.append_sync("guard.block", f"key{i % 3}", {"i": i, "label": "injection"})


def _sql(path: Path, statement: str, args: tuple[object, ...] = ()) -> None:
    """Tamper with the file as an attacker would: plain sqlite3, no appliance code."""
    with sqlite3.connect(path) as conn:
        conn.execute(statement, args)


def test_records_form_a_chain_over_a_canonical_serialisation(db: Database) -> None:
    audit = Audit(db, clock=lambda: 1700000000.25)
    first = audit.append_sync("key.create", "operator", {"name": "ci", "b": 1, "a": [1, 2]})
    second = audit.append_sync("memory.delete", "frontdesk", {"id": 7})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert first.hash == record_hash(1, 1700000000.25, "key.create", "operator",
                                     {"a": [1, 2], "b": 1, "name": "ci"}, GENESIS)
    result = audit.verify_sync()
    assert result.ok and result.records == 2 and result.head_hash == second.hash


def test_concurrent_appends_stay_linear(db: Database) -> None:
    audit = Audit(db)

    def worker(k: int) -> None:
        for i in range(25):
            audit.append_sync("guard.flag", f"t{k}", {"i": i})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()

    async def from_the_loop() -> None:
        await asyncio.gather(*(audit.append("guard.redact", "loop", {"i": i})
                               for i in range(50)))

    asyncio.run(from_the_loop())
    for t in threads:
        t.join()
    records = audit.export_sync()
    assert [r.seq for r in records] == list(range(1, 151))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert audit.verify_sync().ok


def test_editing_one_record_breaks_the_chain_exactly_there(db: Database) -> None:
    audit = Audit(db)
    _fill(audit, 10)
    assert audit.verify_sync().ok
    _sql(db.path, "UPDATE audit_log SET detail = ? WHERE seq = 6",
         (orjson.dumps({"i": 5, "label": "benign"}).decode(),))
    result = audit.verify_sync()
    assert not result.ok and result.broken_seq == 6 and "edited" in result.reason
    assert result.records == 5


@pytest.mark.parametrize("column,value", [("actor", "someone-else"), ("event", "guard.flag"),
                                          ("ts", 1.0)])
def test_editing_any_field_is_detected(db: Database, column: str, value: object) -> None:
    audit = Audit(db)
    _fill(audit, 5)
    _sql(db.path, f"UPDATE audit_log SET {column} = ? WHERE seq = 3", (value,))
    assert audit.verify_sync().broken_seq == 3


def test_a_record_deleted_in_the_middle_is_named(db: Database) -> None:
    audit = Audit(db)
    _fill(audit, 10)
    _sql(db.path, "DELETE FROM audit_log WHERE seq = 4")
    result = audit.verify_sync()
    assert not result.ok and result.broken_seq == 4 and "missing" in result.reason


def test_a_record_deleted_and_the_rest_renumbered_is_caught_by_the_links(db: Database) -> None:
    audit = Audit(db)
    _fill(audit, 6)
    _sql(db.path, "DELETE FROM audit_log WHERE seq = 3")
    _sql(db.path, "UPDATE audit_log SET seq = seq - 1 WHERE seq > 3")
    result = audit.verify_sync()
    assert not result.ok and result.broken_seq == 3


def test_a_truncated_tail_is_caught_by_the_anchor(db: Database) -> None:
    audit = Audit(db)
    _fill(audit, 10)
    _sql(db.path, "DELETE FROM audit_log WHERE seq > 7")
    result = audit.verify_sync()
    assert not result.ok and result.broken_seq == 8 and "removed" in result.reason


def test_a_truncation_with_a_forged_anchor_needs_the_known_head(db: Database) -> None:
    """What the anchor cannot catch: the tail cut and the anchor rewritten to match. A
    head kept outside the database (printed by an earlier verify) catches it."""
    audit = Audit(db)
    _fill(audit, 10)
    kept = audit.verify_sync()
    head = (kept.head_seq, kept.head_hash)
    _sql(db.path, "DELETE FROM audit_log WHERE seq > 7")
    with sqlite3.connect(db.path) as conn:
        new_head = conn.execute("SELECT hash FROM audit_log WHERE seq = 7").fetchone()[0]
        conn.execute("UPDATE audit_anchor SET seq = 7, hash = ?", (new_head,))
    assert audit.verify_sync().ok  # undetectable from the database alone
    result = audit.verify_sync(head)
    assert not result.ok and result.broken_seq == 10 and "known head" in result.reason
    assert audit.verify_sync((7, new_head)).ok


def test_key_creation_and_revocation_are_audited(db: Database) -> None:
    keys = KeyStore(db)
    created = keys.create_sync("frontdesk", rpm=60, scopes=["chat"])
    keys.revoke_sync("frontdesk")
    records = Audit(db).export_sync()
    assert [(r.event, r.detail["name"]) for r in records] == [
        ("key.create", "frontdesk"), ("key.revoke", "frontdesk")]
    assert records[0].detail["rpm"] == 60 and records[0].detail["scopes"] == "chat"
    blob = orjson.dumps([r.as_json() for r in records]).decode()
    assert created.secret not in blob and created.secret[8:20] not in blob
    assert Audit(db).verify_sync().ok


def test_a_refused_key_creation_leaves_no_record(db: Database) -> None:
    keys = KeyStore(db)
    keys.create_sync("ci")
    with pytest.raises(Exception, match="already exists"):
        keys.create_sync("ci")
    assert [r.event for r in Audit(db).export_sync()] == ["key.create"]


def test_cli_verify_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.db"
    with Database(path) as db:
        clock = iter([1767225600.0, 1767225600.0, 1767312000.0, 1767398400.0])  # 2026-01-01..03
        audit = Audit(db, clock=lambda: next(clock))
        for i in range(4):
            audit.append_sync("guard.block", "k", {"i": i})
    argv = ["--database", str(path), "--data-dir", str(tmp_path)]
    assert cli.main(["audit", "verify", *argv]) == 0
    out = capsys.readouterr().out
    assert "4 records" in out
    head = out.strip().rsplit(" ", 1)[1]
    assert cli.main(["audit", "verify", "--head", head, *argv]) == 0
    capsys.readouterr()

    out_file = tmp_path / "export.jsonl"
    assert cli.main(["audit", "export", "--since", "2026-01-02T00:00:00+00:00",
                     "--out", str(out_file), *argv]) == 0
    rows = [orjson.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [3, 4]
    assert rows[0]["event"] == "guard.block" and rows[0]["detail"] == {"i": 2}
    assert rows[0]["time"].startswith("2026-01-02")
    assert cli.main(["audit", "export", "--since", "2026-01-03T00:00:00+00:00", *argv]) == 0
    assert [orjson.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [4]

    _sql(path, "UPDATE audit_log SET detail = '{\"i\":9}' WHERE seq = 2")
    assert cli.main(["audit", "verify", *argv]) == 1
    err = capsys.readouterr().err
    assert "BROKEN at record 2" in err and "edited" in err
