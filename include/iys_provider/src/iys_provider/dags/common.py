"""Params and schedules shared by the two DAGs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import DAG, Asset, BaseOperator, CronTriggerTimetable, Param

from iys_provider.assets import CONSENTS_ASSET, consents_asset
from iys_provider.config import (
    DEFAULT_POSTGRES_CONN_ID,
    TIMEZONE,
    IysSettings,
    connection_environment_variable,
    load_settings,
    parse_connection_ids,
    variable_environment_variable,
)
from iys_provider.hooks.iys import IysHook
from iys_provider.operators.pool_check import (
    POOL_CHECK_TASK_ID,
    POOL_PROBE_TASK_ID,
    POOL_WAIT_TASK_ID,
    IysCheckPoolOperator,
    IysPoolProbeOperator,
    IysWaitForPoolOperator,
)
from iys_provider.people.user_source import RECIPIENTS_SQL_VARIABLE, recipients_sql_variable

TAGS = ("iys", "consent")
#: Environment variable listing the ``iys`` connections, one DAG pair each (``[iys] connections``,
#: see :func:`iys_brands`).
CONNECTIONS_VARIABLE = "IYS_CONNECTIONS"


#: Templated connection ids, so every task follows the run's Params.
CONNECTION_ARGS = {"iys_conn_id": "{{ params.iys_conn_id }}", "postgres_conn_id": "{{ params.postgres_conn_id }}"}


def cron_schedule(cron: str | None) -> CronTriggerTimetable | None:
    """The timetable of a cron setting in Turkey time (:mod:`iys_provider.config`); None: no schedule."""
    return None if cron is None else CronTriggerTimetable(cron, timezone=TIMEZONE)


@dataclass(frozen=True)
class IysBrand:
    """The ``iys`` connection one DAG pair serves, and how its DAGs, tags and asset are named.

    ``several`` is set when ``IYS_CONNECTIONS`` lists more than one connection: the DAG ids then
    end in ``__<conn_id>``, the tags add ``brand:<conn_id>`` and the brand has an asset of its own.
    A single brand keeps the plain names (``iys_initial_sync``, asset ``iys_consents``).
    """

    iys_conn_id: str = IysHook.default_conn_name
    several: bool = False

    def dag_id(self, base: str) -> str:
        return f"{base}__{self.iys_conn_id}" if self.several else base

    @property
    def tags(self) -> list[str]:
        return [*TAGS, f"brand:{self.iys_conn_id}"] if self.several else list(TAGS)

    @property
    def asset(self) -> Asset:
        return consents_asset(self.iys_conn_id) if self.several else CONSENTS_ASSET

    def doc_md(self, doc: str) -> str:
        """``doc`` with, for one of several brands, a note naming its connection, asset and source Variable."""
        if not self.several:
            return doc
        variable = recipients_sql_variable(self.iys_conn_id)
        return (
            f"{doc}\n**Brand** (one of `{CONNECTIONS_VARIABLE}`): connection `{self.iys_conn_id}`, asset "
            f"`{self.asset.name}`, source query from the Variable `{variable}` if set, else "
            f"`{RECIPIENTS_SQL_VARIABLE}`. In the environment, Airflow reads them from "
            f"`{connection_environment_variable(self.iys_conn_id)}` and `{variable_environment_variable(variable)}`.\n"
        )


def iys_connection_ids(value: str | None = None) -> list[str]:
    """The connection ids listed in ``value``, by default the ``[iys] connections`` setting (``IYS_CONNECTIONS``).

    Comma-separated; blanks around ids and empty items are ignored. Unset or empty means the one
    connection ``iys_default``. Read from the deployment settings, never from an Airflow Variable:
    the DAG processor re-parses the DAG files every 30 s by default, a Variable would cost a round
    trip to the API server each time, and one failed read would make the brands' DAGs vanish.
    Raises :class:`ValueError`, naming the id, for an id that cannot be part of a DAG id and for
    an id listed twice: the DAG files then fail to import with that message.
    """
    if value is None:
        return list(load_settings("connections").connections)
    return list(parse_connection_ids(value, CONNECTIONS_VARIABLE))


def iys_brands(value: str | None = None, *, settings: IysSettings | None = None) -> list[IysBrand]:
    """One :class:`IysBrand` per connection of :func:`iys_connection_ids` (or of ``settings``), in the listed order."""
    ids = list(settings.connections) if settings is not None else iys_connection_ids(value)
    return [IysBrand(iys_conn_id=conn_id, several=len(ids) > 1) for conn_id in ids]


@dataclass(frozen=True)
class IysConcurrency:
    """How many İYS tasks of a run may run at once, and in which pool (parse-time settings).

    Needs no set-up: without a pool the İYS tasks run in Airflow's ``default_pool``, at most
    ``max_active`` at a time per run (``max_active_tis_per_dagrun``; the DAG's ``max_active_tasks``
    is one more, for the bookkeeping task beside them). A ``pool`` shares one budget across DAGs; it
    must exist, which the first task of every run checks (see operators.base). A ``queue`` sends
    the İYS tasks to the workers that consume it (CeleryExecutor): those whose egress IP İYS has
    whitelisted; the other tasks run anywhere.
    """

    pool: str | None = None
    max_active: int = 4
    pool_check_seconds: float = 300
    queue: str | None = None

    @classmethod
    def from_settings(cls, settings: IysSettings) -> IysConcurrency:
        """``[iys] pool`` (default none = default_pool), ``api_concurrency`` (4), ``pool_check_seconds`` (300),
        ``queue`` (default none: the executor's default queue)."""
        return cls(
            pool=settings.pool,
            max_active=settings.api_concurrency,
            pool_check_seconds=settings.pool_check_seconds,
            queue=settings.queue,
        )

    @classmethod
    def from_env(cls) -> IysConcurrency:
        """:meth:`from_settings` of the deployment settings, read now (``IYS_POOL``, ``IYS_API_CONCURRENCY``, …)."""
        return cls.from_settings(load_settings("pool", "api_concurrency", "pool_check_seconds", "queue"))

    def __post_init__(self) -> None:
        if self.max_active < 1:
            raise ValueError(f"[iys] api_concurrency (IYS_API_CONCURRENCY) must be at least 1, not {self.max_active}")

    @property
    def task_args(self) -> dict[str, Any]:
        """Arguments of every task that calls İYS."""
        args: dict[str, Any] = {"max_active_tis_per_dagrun": self.max_active}
        if self.pool:
            args["pool"] = self.pool
        if self.queue:
            args["queue"] = self.queue
        return args

    def guard(self, dag: DAG, first: Sequence[BaseOperator]) -> None:
        """With a pool: a probe in it, a waiter and a gate before ``first`` that fail the run fast if the pool is missing."""
        if not self.pool:
            return
        last = [t for t in dag.tasks if not t.downstream_list]
        probe = IysPoolProbeOperator(
            task_id=POOL_PROBE_TASK_ID, pool=self.pool, priority_weight=1000, weight_rule="absolute"
        )
        wait = IysWaitForPoolOperator(
            task_id=POOL_WAIT_TASK_ID,
            pool_name=self.pool,
            probe_task_id=probe.task_id,
            gate_task_id=POOL_CHECK_TASK_ID,
            timeout_seconds=self.pool_check_seconds,
        )
        gate = IysCheckPoolOperator(task_id=POOL_CHECK_TASK_ID, pool_name=self.pool, wait_task_id=wait.task_id)
        # The run's last tasks depend on the gate too, so a failed gate fails the run.
        wait >> gate >> [*first, *last]


def iys_dag(
    *,
    dag_id: str,
    description: str,
    doc_md: str,
    cron: str | None,
    params: dict[str, Param],
    concurrency: IysConcurrency,
    brand: IysBrand,
) -> DAG:
    """A DAG with the settings the İYS DAGs share: Turkey-time cron (None: unscheduled), one run at a time,
    native Params.

    The brand gives the tags, the default of the ``iys_conn_id`` Param and a note in the docs;
    ``dag_id`` is already the brand's.
    """
    return DAG(
        dag_id=dag_id,
        description=description,
        doc_md=brand.doc_md(doc_md),
        schedule=cron_schedule(cron),
        # No start_date: the first run waits for the next scheduled time instead of starting the
        # moment the DAG is deployed or unpaused (CronTriggerTimetable, run_immediately=False).
        catchup=False,
        max_active_runs=1,
        max_active_tasks=concurrency.max_active + 1,
        render_template_as_native_obj=True,
        tags=brand.tags,
        params={**connection_params(brand.iys_conn_id), **params},
    )


def connection_params(iys_conn_id: str = IysHook.default_conn_name) -> dict[str, Any]:
    return {
        "iys_conn_id": Param(
            iys_conn_id,
            type="string",
            minLength=1,
            title="İYS connection",
            description="Connection of type iys (API URL, credentials, İYS code, brand code).",
        ),
        "postgres_conn_id": Param(
            DEFAULT_POSTGRES_CONN_ID,
            type="string",
            minLength=1,
            title="Postgres connection",
            description="Database holding the iys schema and the users table.",
        ),
    }
