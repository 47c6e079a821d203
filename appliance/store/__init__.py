"""Persistence, the bottom layer: one SQLite file, its migrations, the SQL of every table
family, and the vector indexes derived from it. Nothing here imports the layers above.

Public API::

    Database(path, *, migrations=MIGRATIONS, pseudonyms=None)
        await db.write(fn) / db.write_sync(fn)      fn(conn: sqlite_utils.Database) -> T
        await db.read(fn)  / db.read_sync(fn)
        db.close() / await db.aclose()
    Migration(number, name, apply); MIGRATIONS; apply_migrations(conn, migrations)
    Pseudonyms.load_or_create(data_dir).of(client_id)   keyed hashes of client-named ids

Modules: ``owner`` (the thread that owns one blocking native object, used by the SQLite
writer and by each vector index), ``db``, ``migrations``, one repository per table family
(``keys``, ``cache``, ``memory``, ``audit``, ``vector_rows``: plain functions taking a
connection inside a ``db`` job and returning frozen dataclasses), ``rows`` (shapes they
share), ``vectors`` (hnswlib indexes) and ``pseudonyms`` (the install key). See ``db``
and ``migrations`` for the guarantees.
"""

from appliance.store.db import Database
from appliance.store.migrations import MIGRATIONS, Migration, apply_migrations
from appliance.store.pseudonyms import Pseudonyms

__all__ = ["MIGRATIONS", "Database", "Migration", "Pseudonyms", "apply_migrations"]
