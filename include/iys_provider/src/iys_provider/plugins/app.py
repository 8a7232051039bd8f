"""The İYS page's FastAPI app, mounted by the plugin at ``/iys`` on the Airflow API server.

``/`` is the page (static HTML and JS drawing with Chart.js, vendored in ``static/``), ``/api/brands``
and ``/api/panels/{brand_code}`` its data, ``/api/push/{brand_code}`` the push panel alone (the page
refreshes it every 30 seconds: pushes arrive within seconds, the other panels change with runs).
Every route but the static files (code, no data) needs an Airflow user
(:mod:`iys_provider.plugins.auth`). The data comes from the ``iys_postgres`` connection (the
setting ``[iys] dashboard_postgres_conn_id``, ``IYS_DASHBOARD_POSTGRES_CONN_ID``, names another),
read only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from iys_provider.config import load_settings
from iys_provider.consent_store import recorded_sendable_counts
from iys_provider.plugins import dashboard_store
from iys_provider.plugins.auth import require_reader

STATIC = resources.files("iys_provider.plugins").joinpath("static")


def postgres_connector(conn_id: str | None = None) -> Callable[[], psycopg.Connection]:
    """Connections of the Airflow connection ``conn_id``, by default the ``dashboard_postgres_conn_id`` setting.

    Both are read when the first request comes, not at import: the plugin is imported while Airflow
    is still loading its providers and configuration.
    """

    @functools.cache
    def chosen_conn_id() -> str:
        return conn_id or load_settings("dashboard_postgres_conn_id").dashboard_postgres_conn_id

    def connect() -> psycopg.Connection:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=chosen_conn_id()).get_conn()

    return connect


def create_dashboard_app(connect: Callable[[], psycopg.Connection] | None = None) -> FastAPI:
    connect = connect or postgres_connector()
    app = FastAPI(title="İYS", description="Consent health, legal clocks and the İYS budget", docs_url=None)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(require_reader)])
    def page() -> str:
        return STATIC.joinpath("index.html").read_text("utf-8")

    @app.get("/api/brands", dependencies=[Depends(require_reader)])
    def list_brands() -> dict[str, Any]:
        with dashboard_store.read_only(connect) as conn:
            return {"brands": dashboard_store.brands(conn)}

    @app.get("/api/panels/{brand_code}", dependencies=[Depends(require_reader)])
    def panels(brand_code: int) -> dict[str, Any]:
        with dashboard_store.read_only(connect) as conn:
            if brand_code not in dashboard_store.brands(conn):
                raise HTTPException(404, detail=f"brand {brand_code} is not synced in this database")
            counts, counted_at = recorded_sendable_counts(conn, brand_code)
            return dashboard_store.read_panels(conn, brand_code, datetime.now(UTC), counts, counted_at)

    @app.get("/api/push/{brand_code}", dependencies=[Depends(require_reader)])
    def push(brand_code: int) -> dict[str, Any]:
        with dashboard_store.read_only(connect) as conn:
            if brand_code not in dashboard_store.brands(conn):
                raise HTTPException(404, detail=f"brand {brand_code} is not synced in this database")
            return dashboard_store.push_panel(conn, brand_code, datetime.now(UTC))

    return app
