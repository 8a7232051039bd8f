"""The one way the package opens its PostgreSQL connection: psycopg 3, autocommit, schema migrated."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import psycopg

from iys_provider.schema import migrate


@contextmanager
def iys_database(
    postgres_conn_id: str,
    *,
    log: logging.Logger | None = None,
    also_close: Callable[[], None] | None = None,
) -> Iterator[psycopg.Connection]:
    """A connection to the database holding schema ``iys``, migrated, closed on exit.

    Autocommit: every store function opens the transactions it needs itself. ``also_close`` is
    called on exit too (an operator passes its İYS hook's ``close``), so a task releases its
    HTTP session and shared-state connection on every path, the failing ones included.
    """
    # Imported here, not at module level: DAG files import the operators on every parse.
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    with ExitStack() as cleanup:
        if also_close is not None:
            cleanup.callback(also_close)
        conn = PostgresHook(postgres_conn_id=postgres_conn_id).get_conn()
        cleanup.callback(conn.close)
        conn.autocommit = True
        applied = migrate(conn)
        if applied and log is not None:
            log.info("Migrated the iys schema to version %s", applied[-1])
        yield conn


@contextmanager
def second_connection(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """Another autocommit connection to ``conn``'s database, with its parameters (as libpq reports them)."""
    params = {o.keyword.decode(): o.val.decode() for o in conn.pgconn.info if o.val is not None}
    with psycopg.connect(**params, autocommit=True) as other:
        yield other
