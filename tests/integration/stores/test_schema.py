"""Versioned, idempotent migrations of the iys schema, on a real database."""

from __future__ import annotations

import threading

import psycopg
import pytest

from iys_provider.schema import available_migrations, current_version, migrate


@pytest.fixture
def empty_schema(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    yield pg
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")


def test_migrations_apply_once_and_in_order(empty_schema):
    versions = [m.version for m in available_migrations()]
    assert versions == sorted(versions) and versions[0] == 1
    assert migrate(empty_schema) == versions
    assert migrate(empty_schema) == []
    assert current_version(empty_schema) == versions[-1]


def test_parallel_tasks_migrating_at_once_do_not_race(empty_schema, pg_dsn):
    errors = []

    def run():
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                migrate(conn)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert empty_schema.execute("SELECT count(*) FROM iys.schema_migrations").fetchone()[0] == len(
        available_migrations()
    )


def test_upgrade_abandons_scans_planned_by_key_range(empty_schema):
    migrate(empty_schema, up_to=3)
    scan = empty_schema.execute(
        "INSERT INTO iys.initial_sync_scans (brand_code, recipients_sql, batch_size, total_users, batch_count) "
        "VALUES (1, 'SELECT 1', 10, 20, 2) RETURNING scan_id"
    ).fetchone()[0]
    empty_schema.execute(
        "INSERT INTO iys.initial_sync_batches (scan_id, batch_no, lower_key, upper_key) VALUES (%s, 0, NULL, 'u9'), (%s, 1, 'u9', 'u19')",
        (scan, scan),
    )
    assert migrate(empty_schema, up_to=4) == [4]
    assert empty_schema.execute("SELECT abandoned, finished_at IS NOT NULL FROM iys.initial_sync_scans").fetchone() == (
        True,
        True,
    )
    assert empty_schema.execute(
        "SELECT first_user_id, last_user_id FROM iys.initial_sync_batches ORDER BY batch_no"
    ).fetchall() == [("", "u9"), ("u9", "u19")]


def test_token_cache_is_not_readable_by_other_roles(pg, pg_dsn):
    """A reporting role that may read the consents still cannot read the live İYS tokens."""
    migrate(pg)
    pg.execute("DROP ROLE IF EXISTS iys_test_reporting")
    pg.execute("CREATE ROLE iys_test_reporting LOGIN")
    try:
        pg.execute("GRANT USAGE ON SCHEMA iys TO iys_test_reporting")
        pg.execute("GRANT SELECT ON iys.consents TO iys_test_reporting")
        params = psycopg.conninfo.conninfo_to_dict(pg_dsn) | {"user": "iys_test_reporting"}
        with psycopg.connect(**params, autocommit=True) as other:
            other.execute("SELECT count(*) FROM iys.consents")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                other.execute("SELECT access_token FROM iys.api_tokens")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                other.execute("SELECT phone FROM iys.initial_sync_queue")
    finally:
        pg.execute("REVOKE ALL ON ALL TABLES IN SCHEMA iys FROM iys_test_reporting")
        pg.execute("REVOKE USAGE ON SCHEMA iys FROM iys_test_reporting")
        pg.execute("DROP ROLE iys_test_reporting")


def test_a_role_that_only_owns_schema_iys_can_migrate_it(pg, pg_dsn):
    """The least-privileged set-up of docs/configuration.md: no CREATE on the database, only the schema's ownership."""
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    pg.execute("DROP ROLE IF EXISTS iys_test_owner")
    pg.execute("CREATE ROLE iys_test_owner LOGIN")
    try:
        pg.execute("REVOKE CREATE ON DATABASE " + psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"] + " FROM PUBLIC")
        pg.execute("CREATE SCHEMA iys AUTHORIZATION iys_test_owner")
        params = psycopg.conninfo.conninfo_to_dict(pg_dsn) | {"user": "iys_test_owner"}
        with psycopg.connect(**params, autocommit=True) as owner:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                owner.execute("CREATE SCHEMA iys_elsewhere")  # the role really lacks CREATE on the database
            assert migrate(owner)[-1] == max(m.version for m in available_migrations())
    finally:
        pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
        pg.execute("DROP OWNED BY iys_test_owner")
        pg.execute("DROP ROLE IF EXISTS iys_test_owner")
