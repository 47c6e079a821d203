"""Numbered, append-only schema migrations.

``MIGRATIONS`` is the schema's whole history. Each entry is applied once, in order, inside
its own transaction together with the row that records it in ``_migrations``
(``number``, ``name``, ``applied_at``), so a crash leaves either all of a migration or none
of it. A shipped migration is never edited, renamed or removed: a later change to a table
is a new migration appended at the end with the next number.

Adding a table (another component's issue)::

    def _m002_audit_log(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE audit_log (...)")

    MIGRATIONS = (
        Migration(1, "api_keys", _m001_api_keys),
        Migration(2, "audit_log", _m002_audit_log),
    )

Migrations run inside a transaction, so they must not change ``journal_mode`` or toggle
``foreign_keys`` (SQLite ignores both inside a transaction). ``Database`` applies them on
the writer thread when it opens the file; ``apply_migrations`` is public for tools and tests.

Opening a database whose ``_migrations`` table names a migration this code does not know
(a newer appliance wrote it) or under another name (a shipped migration was edited) raises
``ConfigError`` instead of guessing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlite_utils

from appliance.errors import ConfigError

MIGRATIONS_TABLE = "_migrations"


@dataclass(frozen=True)
class Migration:
    """One schema step: ``apply`` runs on the writer connection inside a transaction."""

    number: int
    name: str
    apply: Callable[[sqlite_utils.Database], None]


def _m001_api_keys(db: sqlite_utils.Database) -> None:
    # Revoked keys stay (for audit); a name is unique among keys that are not revoked,
    # so a key can be rotated by revoking it and creating a new one under the same name.
    db.execute(
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            secret_sha256 TEXT NOT NULL UNIQUE,
            hint TEXT NOT NULL,
            scopes TEXT NOT NULL,
            rpm INTEGER,
            tpm INTEGER,
            burst_requests INTEGER,
            burst_tokens INTEGER,
            max_concurrent INTEGER,
            priority INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            expires_at REAL,
            revoked_at REAL
        )
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL"
    )


def _m002_api_key_policy(db: sqlite_utils.Database) -> None:
    # The guard policy a key's requests are checked under (NULL: the server's default).
    db.execute("ALTER TABLE api_keys ADD COLUMN guard_policy TEXT")


def _m003_audit_log(db: sqlite_utils.Database) -> None:
    # The hash-chained audit log (appliance/audit.py) and its one-row anchor (the head).
    db.execute(
        """
        CREATE TABLE audit_log (
            seq INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            event TEXT NOT NULL,
            actor TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX audit_log_ts ON audit_log(ts)")
    db.execute("CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), "
               "seq INTEGER NOT NULL, hash TEXT NOT NULL)")
    db.execute("INSERT INTO audit_anchor (id, seq, hash) VALUES (1, 0, ?)", ["0" * 64])


# --- memory and cache -----------------------------------------------------------
def _m004_vector_index_files(db: sqlite_utils.Database) -> None:
    # The sha256 of each saved hnswlib file (appliance.store.vectors): a file that does
    # not match is rebuilt from its table at start-up.
    db.execute(
        """
        CREATE TABLE vector_index_files (
            tbl TEXT NOT NULL,
            file TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (tbl, file)
        )
        """
    )


def _m005_cache_entries(db: sqlite_utils.Database) -> None:
    # The response cache (appliance.cache). AUTOINCREMENT: an id is never reused, so a
    # label in a stale vector index can never name a newer row.
    db.execute(
        """
        CREATE TABLE cache_entries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            scope TEXT NOT NULL,
            exact_key TEXT NOT NULL,
            context TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            vector BLOB,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            finish_reason TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            last_used_at REAL NOT NULL,
            hits INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX cache_entries_exact ON cache_entries(scope, exact_key)")
    db.execute("CREATE INDEX cache_entries_used ON cache_entries(last_used_at)")
    db.execute("CREATE INDEX cache_entries_expires ON cache_entries(expires_at)")


def _m006_memories(db: sqlite_utils.Database) -> None:
    # Tiered memory (appliance.memory). ``tier`` is session | user | global; ``scope`` is
    # the vector-index partition (NULL vector: not indexed, e.g. session turns).
    db.execute(
        """
        CREATE TABLE memories (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key_id INTEGER NOT NULL,
            tier TEXT NOT NULL,
            user TEXT NOT NULL DEFAULT '',
            session_id TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            pinned INTEGER NOT NULL DEFAULT 0,
            scope TEXT NOT NULL,
            vector BLOB,
            created_at REAL NOT NULL,
            last_accessed_at REAL NOT NULL,
            access_count INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX memories_owner ON memories(key_id, tier, user, session_id)")
    db.execute("CREATE INDEX memories_scope ON memories(scope)")
    db.execute("CREATE INDEX memories_accessed ON memories(tier, last_accessed_at)")
# --- end memory and cache ------------------------------------------------------------------


def _m007_pseudonymous_ids(db: sqlite_utils.Database) -> None:
    # Client-named ids (``user``, session ids) are stored as keyed hashes
    # (appliance.store.pseudonyms); rows written before are converted with the SQL function
    # the database registers from the install key. Scopes embed the user, so they change
    # too; the index files' records go, so every vector index is rebuilt from SQLite
    # under its new scope names at the next open (the old files are then strays).
    plain = db.execute(
        "SELECT (SELECT count(*) FROM memories WHERE user != '' OR session_id != '') + "
        "(SELECT count(*) FROM cache_entries WHERE scope LIKE 'key:%/user:_%')").fetchone()[0]
    if not plain:
        return
    try:
        db.execute("SELECT pseudonym('')")
    except sqlite3.OperationalError:
        raise ConfigError(
            "this database holds plain user and session ids to convert to keyed hashes: "
            "open it with its data directory's install key (the appliance does so)") from None
    db.execute("UPDATE memories SET user = pseudonym(user) WHERE user != ''")
    db.execute("UPDATE memories SET session_id = pseudonym(session_id) WHERE session_id != ''")
    db.execute("UPDATE memories SET scope = 'user:' || key_id || '/' || user "
               "WHERE tier = 'user'")
    cut = "instr(scope, '/user:') + 6"
    db.execute(f"UPDATE cache_entries SET scope = substr(scope, 1, {cut} - 1) || "
               f"pseudonym(substr(scope, {cut})) WHERE scope LIKE 'key:%/user:_%'")
    db.execute("DELETE FROM vector_index_files WHERE tbl IN ('memories', 'cache_entries')")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "api_keys", _m001_api_keys),
    Migration(2, "api_key_policy", _m002_api_key_policy),
    Migration(3, "audit_log", _m003_audit_log),
    Migration(4, "vector_index_files", _m004_vector_index_files),
    Migration(5, "cache_entries", _m005_cache_entries),
    Migration(6, "memories", _m006_memories),
    Migration(7, "pseudonymous_ids", _m007_pseudonymous_ids),
)


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Raise ``ValueError`` unless numbers run 1, 2, 3, ... and names are unique."""
    for expected, m in enumerate(migrations, start=1):
        if m.number != expected:
            raise ValueError(f"migration {m.name!r} has number {m.number}, expected {expected}")
    names = [m.name for m in migrations]
    if len(set(names)) != len(names):
        raise ValueError("migration names must be unique")


def applied_migrations(db: sqlite_utils.Database) -> dict[int, str]:
    """Migrations recorded in ``db``: number -> name (empty for a new file)."""
    if not db[MIGRATIONS_TABLE].exists():
        return {}
    rows = db.execute(f"SELECT number, name FROM {MIGRATIONS_TABLE}").fetchall()
    return {int(number): str(name) for number, name in rows}


def apply_migrations(
    db: sqlite_utils.Database,
    migrations: Sequence[Migration] = MIGRATIONS,
    clock: Callable[[], float] = time.time,
) -> list[int]:
    """Apply the migrations ``db`` lacks, each in its own transaction; return their numbers."""
    check_sequence(migrations)
    with db.atomic():
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            "number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
    done = applied_migrations(db)
    known = {m.number: m.name for m in migrations}
    for number, name in sorted(done.items()):
        if number not in known:
            raise ConfigError(
                f"database has migration {number} ({name!r}) that this appliance does not "
                "know: it was written by a newer version"
            )
        if known[number] != name:
            raise ConfigError(
                f"database migration {number} is named {name!r} but this appliance calls it "
                f"{known[number]!r}: a shipped migration was changed"
            )
    applied: list[int] = []
    for m in migrations:
        if m.number in done:
            continue
        with db.atomic():
            m.apply(db)
            db.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (number, name, applied_at) VALUES (?, ?, ?)",
                [m.number, m.name, clock()],
            )
        applied.append(m.number)
    return applied
