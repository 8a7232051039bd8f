"""Params and schedules shared by the two DAGs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import DAG, BaseOperator, CronTriggerTimetable, Param

from iys_provider.assets import CONSENTS_ASSET  # noqa: F401 (re-exported: the README's old import path)
from iys_provider.operators.pool_check import (
    POOL_CHECK_TASK_ID,
    POOL_PROBE_TASK_ID,
    IysCheckPoolOperator,
    IysPoolProbeOperator,
)

TIMEZONE = "Europe/Istanbul"


#: Templated connection ids, so every task follows the run's Params.
CONNECTION_ARGS = {"iys_conn_id": "{{ params.iys_conn_id }}", "postgres_conn_id": "{{ params.postgres_conn_id }}"}


def schedule_from_env(variable: str, default: str) -> CronTriggerTimetable | None:
    """Nightly cron in Turkey time from an environment variable (read at parse time, no I/O); 'none' disables."""
    value = os.environ.get(variable, default).strip()
    return None if value.lower() in ("", "none", "off") else CronTriggerTimetable(value, timezone=TIMEZONE)


@dataclass(frozen=True)
class IysConcurrency:
    """How many İYS tasks of a run may run at once, and in which pool (parse-time settings).

    Needs no set-up: without a pool the İYS tasks run in Airflow's ``default_pool``, at most
    ``max_active`` at a time per run (``max_active_tis_per_dagrun``; the DAG's ``max_active_tasks``
    is one more, for the bookkeeping task beside them). A ``pool`` shares one budget across DAGs; it
    must exist, which the first task of every run checks (see operators.base).
    """

    pool: str | None = None
    max_active: int = 4
    pool_check_seconds: float = 300

    @classmethod
    def from_env(cls) -> IysConcurrency:
        """``IYS_POOL`` (default none = default_pool), ``IYS_API_CONCURRENCY`` (4), ``IYS_POOL_CHECK_SECONDS`` (300)."""
        pool = os.environ.get("IYS_POOL", "").strip()
        return cls(
            pool=None if pool.lower() in ("", "none", "default_pool") else pool,
            max_active=int(os.environ.get("IYS_API_CONCURRENCY", "4")),
            pool_check_seconds=float(os.environ.get("IYS_POOL_CHECK_SECONDS", "300")),
        )

    def __post_init__(self) -> None:
        if self.max_active < 1:
            raise ValueError(f"IYS_API_CONCURRENCY must be at least 1, not {self.max_active}")

    @property
    def task_args(self) -> dict[str, Any]:
        """Arguments of every task that calls İYS."""
        args: dict[str, Any] = {"max_active_tis_per_dagrun": self.max_active}
        if self.pool:
            args["pool"] = self.pool
        return args

    def guard(self, dag: DAG, first: Sequence[BaseOperator]) -> None:
        """With a pool: a probe in it and a gate before ``first`` that fails the run fast if the pool is missing."""
        if not self.pool:
            return
        last = [t for t in dag.tasks if not t.downstream_list]
        probe = IysPoolProbeOperator(
            task_id=POOL_PROBE_TASK_ID, pool=self.pool, priority_weight=1000, weight_rule="absolute"
        )
        gate = IysCheckPoolOperator(
            task_id=POOL_CHECK_TASK_ID,
            pool_name=self.pool,
            probe_task_id=probe.task_id,
            timeout_seconds=self.pool_check_seconds,
        )
        # The run's last tasks depend on the gate too, so a failed gate fails the run.
        gate >> [*first, *last]


def iys_dag(
    *,
    dag_id: str,
    description: str,
    doc_md: str,
    schedule_variable: str,
    default_cron: str,
    params: dict[str, Param],
    concurrency: IysConcurrency,
) -> DAG:
    """A DAG with the settings both İYS DAGs share: Turkey-time cron, one run at a time, native Params."""
    return DAG(
        dag_id=dag_id,
        description=description,
        doc_md=doc_md,
        schedule=schedule_from_env(schedule_variable, default_cron),
        # No start_date: the first run waits for the next scheduled time instead of starting the
        # moment the DAG is deployed or unpaused (CronTriggerTimetable, run_immediately=False).
        catchup=False,
        max_active_runs=1,
        max_active_tasks=concurrency.max_active + 1,
        render_template_as_native_obj=True,
        tags=["iys", "consent"],
        params={**connection_params(), **params},
    )


def connection_params() -> dict[str, Any]:
    return {
        "iys_conn_id": Param(
            "iys_default",
            type="string",
            minLength=1,
            title="İYS connection",
            description="Connection of type iys (API URL, credentials, İYS code, brand code).",
        ),
        "postgres_conn_id": Param(
            "iys_postgres",
            type="string",
            minLength=1,
            title="Postgres connection",
            description="Database holding the iys schema and the users table.",
        ),
    }
