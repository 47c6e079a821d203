"""Persistence: one SQLite file owned by a writer thread, plus numbered migrations.

Public API::

    Database(path, *, migrations=MIGRATIONS, read_threads=2)
        await db.write(fn) / db.write_sync(fn)      fn(conn: sqlite_utils.Database) -> T
        await db.read(fn)  / db.read_sync(fn)
        db.close() / await db.aclose()
    Migration(number, name, apply); MIGRATIONS; apply_migrations(conn, migrations)

See ``appliance.store.db`` and ``appliance.store.migrations`` for the guarantees.
"""

from appliance.store.db import Database
from appliance.store.migrations import MIGRATIONS, Migration, apply_migrations

__all__ = ["MIGRATIONS", "Database", "Migration", "apply_migrations"]
