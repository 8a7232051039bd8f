"""What every İYS operator shares: the two connections, migrations, and masked progress logs."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any

import psycopg
from airflow.sdk import BaseOperator

from iys_provider.config import DEFAULT_POSTGRES_CONN_ID
from iys_provider.database import iys_database
from iys_provider.hooks.iys import IysHook

#: The pool name the README suggests when İYS work should share a budget across DAGs. No task
#: uses a pool unless one is configured (``[iys] pool``, see :mod:`iys_provider.config`).
IYS_POOL = "iys_api"


class IysBaseOperator(BaseOperator):
    """Base of the İYS operators.

    :param iys_conn_id: the ``iys`` connection (API URL, credentials, İYS and brand codes).
        (templated)
    :param postgres_conn_id: the Postgres connection holding the ``iys`` schema and the users.
        (templated)
    :param hook_params: keyword arguments for :class:`~iys_provider.hooks.iys.IysHook`, e.g.
        ``{"max_attempts": 3, "max_retry_seconds": 60}`` or ``{"brand_code": 700002}``.
    """

    template_fields: Sequence[str] = ("iys_conn_id", "postgres_conn_id")

    def __init__(
        self,
        *,
        iys_conn_id: str = IysHook.default_conn_name,
        postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.hook_params = dict(hook_params or {})

    @cached_property
    def iys_hook(self) -> IysHook:
        return IysHook(iys_conn_id=self.iys_conn_id, **self.hook_params)

    @contextmanager
    def database(self) -> Iterator[psycopg.Connection]:
        """The task's database connection (migrated, autocommit); closes it and the İYS hook on exit."""
        with iys_database(self.postgres_conn_id, log=self.log, also_close=self._close_hook) as conn:
            yield conn

    def _close_hook(self) -> None:
        if "iys_hook" in self.__dict__:  # only a hook this task actually created
            self.iys_hook.close()
