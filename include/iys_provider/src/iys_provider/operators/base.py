"""What every İYS operator shares: the two connections, migrations, and masked progress logs."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import psycopg
from airflow.sdk import BaseOperator

from iys_provider.hooks.iys import IysHook
from iys_provider.schema import migrate

DEFAULT_POSTGRES_CONN_ID = "iys_postgres"
#: Pool shared by every task that calls İYS, so the DAGs together never queue more İYS work than
#: the request-rate budget can serve (create it with ``airflow pools set iys_api 4 "İYS API"``).
IYS_POOL = "iys_api"


class IysBaseOperator(BaseOperator):
    """Base of the İYS operators.

    :param iys_conn_id: the ``iys`` connection (API URL, credentials, İYS and brand codes).
    :param postgres_conn_id: the Postgres connection holding the ``iys`` schema and the users.
    """

    template_fields: Sequence[str] = ("iys_conn_id", "postgres_conn_id")

    def __init__(
        self,
        *,
        iys_conn_id: str = IysHook.default_conn_name,
        postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id

    @cached_property
    def iys_hook(self) -> IysHook:
        return IysHook(iys_conn_id=self.iys_conn_id)

    @cached_property
    def postgres_hook(self):
        # Imported here, not at module level: DAG files import this module on every parse.
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=self.postgres_conn_id)

    def connect(self) -> psycopg.Connection:
        """A psycopg 3 connection in autocommit mode with the ``iys`` schema migrated."""
        conn = self.postgres_hook.get_conn()
        conn.autocommit = True
        applied = migrate(conn)
        if applied:
            self.log.info("Migrated the iys schema to version %s", applied[-1])
        return conn
