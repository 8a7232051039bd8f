"""Params and schedules shared by the two DAGs."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param

from iys_provider.assets import CONSENTS_ASSET  # noqa: F401 (re-exported: the README's old import path)

TIMEZONE = "Europe/Istanbul"


#: Templated connection ids, so every task follows the run's Params.
CONNECTION_ARGS = {"iys_conn_id": "{{ params.iys_conn_id }}", "postgres_conn_id": "{{ params.postgres_conn_id }}"}


def schedule_from_env(variable: str, default: str) -> CronTriggerTimetable | None:
    """Nightly cron in Turkey time from an environment variable (read at parse time, no I/O); 'none' disables."""
    value = os.environ.get(variable, default).strip()
    return None if value.lower() in ("", "none", "off") else CronTriggerTimetable(value, timezone=TIMEZONE)


def iys_dag(
    *, dag_id: str, description: str, doc_md: str, schedule_variable: str, default_cron: str, params: dict[str, Param]
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
