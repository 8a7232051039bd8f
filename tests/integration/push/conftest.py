"""A running push receiver (TLS, a throw-away CA) writing to the session's database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from push_support import PUSH_PASSWORD, PUSH_USERNAME, ThrowawayTls, throwaway_tls

from iys_provider.hooks.settings import PUSH_CHANNELS, PushCredentials
from iys_provider.push.receiver import BrandEndpoint, create_app, receiver_pool
from iys_provider.schema import migrate
from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE

CONN_ID = "iys_default"


@dataclass
class RunningReceiver:
    url: str  # https://127.0.0.1:<port>
    tls: ThrowawayTls
    server: object
    thread: threading.Thread

    def channel_url(self, channel: str, conn_id: str = CONN_ID) -> str:
        return f"{self.url}/iys-push/{conn_id}/{channel}"


def start_receiver(app, tls: ThrowawayTls) -> RunningReceiver:
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ssl_certfile=str(tls.cert_file),
        ssl_keyfile=str(tls.key_file),
        log_level="warning",
        lifespan="off",
        # The simulator keeps its connection alive between pushes: do not wait for it to hang up.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the push receiver did not start")
        time.sleep(0.01)  # polling a readiness flag with a deadline, not synchronising on time
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningReceiver(f"https://127.0.0.1:{port}", tls, server, thread)


@pytest.fixture
def push_db(pg, pg_dsn):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    return pg


@contextmanager
def serving_receiver(dsn: str, tls: ThrowawayTls) -> Iterator[RunningReceiver]:
    """The receiver app for ``iys_default`` (the simulator's brand) on ``dsn``, served over https in a thread."""
    credentials = {
        channel: PushCredentials(username=PUSH_USERNAME, password=PUSH_PASSWORD) for channel in PUSH_CHANNELS
    }
    brands = {CONN_ID: BrandEndpoint(CONN_ID, SIM_IYS_CODE, SIM_BRAND_CODE, credentials)}
    with receiver_pool(dsn, min_size=1, max_size=4) as pool:
        running = start_receiver(create_app(brands, pool), tls)
        try:
            yield running
        finally:
            running.server.should_exit = True
            running.thread.join(timeout=30)


@pytest.fixture
def receiver(push_db, pg_dsn, tmp_path) -> Iterator[RunningReceiver]:
    with serving_receiver(pg_dsn, throwaway_tls(tmp_path / "tls")) as running:
        yield running


def rows(conn: psycopg.Connection, sql: str, *params):
    return conn.execute(sql, params).fetchall()
