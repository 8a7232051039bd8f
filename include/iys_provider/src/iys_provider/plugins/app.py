"""The İYS page's FastAPI app, mounted by the plugin at ``/iys`` on the Airflow API server.

``/`` is the page (static HTML and JS drawing with Chart.js, vendored in ``static/``), ``/api/brands``
and ``/api/panels/{brand_code}`` its data. Every route but the static files (code, no data) needs
an Airflow user (:mod:`iys_provider.plugins.auth`). The data comes from the ``iys_postgres``
connection (``IYS_DASHBOARD_POSTGRES_CONN_ID`` names another), read only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from iys_provider.plugins import dashboard_store
from iys_provider.plugins.auth import require_reader

CONN_ID_VARIABLE = "IYS_DASHBOARD_POSTGRES_CONN_ID"
DEFAULT_CONN_ID = "iys_postgres"
STATIC = resources.files("iys_provider.plugins").joinpath("static")


def postgres_connector(conn_id: str | None = None) -> Callable[[], psycopg.Connection]:
    """Connections of the Airflow connection ``conn_id`` (read when a request comes, not at import)."""

    def connect() -> psycopg.Connection:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=conn_id or os.environ.get(CONN_ID_VARIABLE, DEFAULT_CONN_ID)).get_conn()

    return connect


class SendableCache:
    """The ``iys.sendable`` count per brand, recounted at most every ``max_age`` (a join of two large tables)."""

    def __init__(self, max_age_seconds: float = dashboard_store.SENDABLE_MAX_AGE.total_seconds()) -> None:
        self.max_age_seconds = max_age_seconds
        self._lock = threading.Lock()
        self._counts: dict[int, tuple[float, datetime, dict[str, int]]] = {}

    def get(self, conn: psycopg.Connection, brand_code: int) -> tuple[dict[str, int], datetime]:
        with self._lock:
            cached = self._counts.get(brand_code)
        if cached and time.monotonic() - cached[0] < self.max_age_seconds:
            return cached[2], cached[1]
        counted_at = datetime.now(UTC)
        counts = dashboard_store.count_sendable(conn, brand_code)
        with self._lock:
            self._counts[brand_code] = (time.monotonic(), counted_at, counts)
        return counts, counted_at


def create_dashboard_app(connect: Callable[[], psycopg.Connection] | None = None) -> FastAPI:
    connect = connect or postgres_connector()
    sendable = SendableCache()
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
            counts, counted_at = sendable.get(conn, brand_code)
            return dashboard_store.read_panels(conn, brand_code, datetime.now(UTC), counts, counted_at)

    return app
