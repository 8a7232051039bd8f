"""Versioned, idempotent migrations of the ``iys`` schema.

Migrations are the ``sql/V###__name.sql`` files shipped in the package, applied in order, each
in its own transaction and recorded in ``iys.schema_migrations``. A transaction-level advisory
lock makes concurrent callers (parallel mapped tasks starting at once) wait for one another
instead of racing on ``CREATE TABLE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import psycopg

MIGRATION_LOCK_ID = 0x1A5_5C4E  # arbitrary, constant: the advisory lock guarding migrations
_MIGRATION_NAME = re.compile(r"^V(\d{3})__([a-z0-9_]+)\.sql$")

# CREATE SCHEMA IF NOT EXISTS checks the CREATE privilege on the database even when the schema
# exists; asking first lets a role that merely owns a schema created for it run the migrations.
CREATE_LEDGER_SQL = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'iys') THEN CREATE SCHEMA iys; END IF;
END $$;
CREATE TABLE IF NOT EXISTS iys.schema_migrations (
    version     int PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def available_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("iys_provider").joinpath("sql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return tuple(sorted(found, key=lambda m: m.version))


def migrate(conn: psycopg.Connection, *, up_to: int | None = None) -> list[int]:
    """Bring the ``iys`` schema up to date (or to version ``up_to``); returns the versions applied now."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        conn.execute(CREATE_LEDGER_SQL)
        done = {row[0] for row in conn.execute("SELECT version FROM iys.schema_migrations")}
        for migration in available_migrations():
            if migration.version in done or (up_to is not None and migration.version > up_to):
                continue
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO iys.schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied_now.append(migration.version)
    return applied_now


def current_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM iys.schema_migrations").fetchone()
    return row[0] if row else 0
