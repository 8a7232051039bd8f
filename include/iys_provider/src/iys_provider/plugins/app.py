"""The İYS page's FastAPI app, mounted by the plugin at ``/iys`` on the Airflow API server.

``/`` is the page (static HTML and JS drawing with Chart.js, vendored in ``static/``), ``/api/brands``
and ``/api/panels/{brand_code}`` its data, ``/api/push/{brand_code}`` the push panel alone (the page
refreshes it every 30 seconds: pushes arrive within seconds, the other panels change with runs).
Every request under the prefix needs an Airflow user (:mod:`iys_provider.plugins.auth`): the
routes, the static files and any path that matches nothing, so no part of the page (not even its
HTML) answers anonymously; the app publishes no OpenAPI schema nor docs pages (ReDoc would load a
script from a public CDN). The browser sends the Airflow UI's session cookie with every request of
the page, its scripts and the side bar's icon alike. The data comes from the ``iys_postgres`` connection (the
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
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
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


def create_dashboard_app(
    connect: Callable[[], psycopg.Connection] | None = None, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """``clock`` (aware) is the moment the panels are read at; tests fix it, the plugin uses the wall clock."""
    connect = connect or postgres_connector()
    clock = clock or (lambda: datetime.now(UTC))
    app = FastAPI(
        title="İYS",
        description="Consent health, legal clocks and the İYS budget",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.middleware("http")
    async def every_request_needs_a_reader(request: Request, call_next: Callable[..., Any]) -> Response:
        # The routes' own dependency cannot guard the static mount nor unmatched paths.
        try:
            await require_reader(request)
        except HTTPException as refused:
            return JSONResponse({"detail": refused.detail}, status_code=refused.status_code, headers=refused.headers)
        return await call_next(request)

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
            return dashboard_store.read_panels(conn, brand_code, clock(), counts, counted_at)

    @app.get("/api/push/{brand_code}", dependencies=[Depends(require_reader)])
    def push(brand_code: int) -> dict[str, Any]:
        with dashboard_store.read_only(connect) as conn:
            if brand_code not in dashboard_store.brands(conn):
                raise HTTPException(404, detail=f"brand {brand_code} is not synced in this database")
            return dashboard_store.push_panel(conn, brand_code, clock())

    return app
