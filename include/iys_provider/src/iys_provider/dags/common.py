"""Params, schedules and the consent asset shared by the two DAGs."""

from __future__ import annotations

import os

from airflow.sdk import Asset, Param

TIMEZONE = "Europe/Istanbul"
#: Downstream campaign DAGs can schedule on this asset; its events carry the brand code and counts.
CONSENTS_ASSET = Asset(name="iys_consents", uri="iys://consents/", group="iys")


def schedule_from_env(variable: str, default: str) -> str | None:
    """Cron expression from an environment variable (read at parse time, no I/O); 'none' disables."""
    value = os.environ.get(variable, default).strip()
    return None if value.lower() in ("", "none", "off") else value


def connection_params() -> dict[str, Param]:
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
