"""Test fixtures: a throw-away Airflow home, a real PostgreSQL database and the İYS simulator.

Airflow reads its configuration at import time, so the environment is set at the top of this
module, before any test imports airflow.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import tempfile
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
AIRFLOW_HOME = tempfile.mkdtemp(prefix="iys-airflow-home-")
os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")

from tests_support import (  # noqa: E402  (after the environment is set)
    SIM_BRAND_CODE,
    SIM_IYS_CODE,
    SIM_PASSWORD,
    SIM_USERNAME,
    iys_connection_json_with,
)

#: Fixtures that reach PostgreSQL or Airflow's metadata database: a test using any of them is marked ``db``.
DB_FIXTURES = frozenset({"postgres_server_uri", "pg_dsn", "airflow_db"})
#: Per-test deadline of tests marked ``stack`` (pytest-timeout; the default is pytest.ini's ``timeout``):
#: the first test of a module also starts ``airflow standalone`` or the Celery fleet.
STACK_TIMEOUT = 1800


def pytest_collection_modifyitems(config, items):
    """``db`` from the fixtures a test uses; the longer deadline for ``stack`` tests without their own."""
    for item in items:
        if DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)
        if item.get_closest_marker("stack") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(STACK_TIMEOUT))


def _local_postgres_reachable(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server_uri():
    """URI of a PostgreSQL server: the machine's own at 127.0.0.1:5432, else an embedded one."""
    explicit = os.environ.get("IYS_TEST_POSTGRES_URI")
    if explicit:
        yield explicit
        return
    if _local_postgres_reachable():
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="iys-pgserver-")
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(postgres_server_uri):
    """A fresh database for this test session, dropped afterwards."""
    import psycopg
    from psycopg import conninfo, sql

    name = f"iys_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_uri, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo.conninfo_to_dict(postgres_server_uri)
    params["dbname"] = name
    dsn = conninfo.make_conninfo(**params)
    os.environ["AIRFLOW_CONN_IYS_POSTGRES"] = json.dumps(
        {
            "conn_type": "postgres",
            "host": params.get("host", "127.0.0.1"),
            "port": int(params.get("port", 5432)),
            "login": params.get("user", "postgres"),
            "password": params.get("password"),
            "schema": name,
        }
    )
    yield dsn
    with psycopg.connect(postgres_server_uri, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def pg(pg_dsn):
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def simulator_server():
    from iys_simulator import SimulatorServer

    server = SimulatorServer(
        host="127.0.0.1",
        port=0,
        username=SIM_USERNAME,
        password=SIM_PASSWORD,
        iys_code=SIM_IYS_CODE,
        brand_codes=[SIM_BRAND_CODE],
        seed=1234,
    ).start()
    yield server
    server.stop()


@pytest.fixture
def sim(simulator_server, pg_dsn, monkeypatch):
    """The simulator, reset, with ``iys_default`` pointing at it and fresh shared hook state."""
    import requests

    requests.post(f"{simulator_server.url}/__sim/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(simulator_server.url))
    reset_shared_hook_state(pg_dsn)
    yield simulator_server


def reset_shared_hook_state(dsn: str) -> None:
    """Forget tokens, budgets and rate slots, in Postgres and in this process."""
    import psycopg

    from iys_provider.hooks import base as hook_base
    from iys_provider.schema import migrate

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute("TRUNCATE iys.api_tokens, iys.token_requests, iys.rate_limiter, iys.api_responses, iys.ip_blocks")
    hook_base._process_tokens.clear()


@pytest.fixture(scope="session")
def airflow_db():
    """An initialised Airflow metadata database (SQLite in the temporary AIRFLOW_HOME)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=600)
    yield AIRFLOW_HOME
