"""The push receiver: a small ASGI service İYS posts citizen-side movements to.

It runs in its own process (``iys-push-receiver``), never inside the Airflow API server: İYS
must reach it from the internet, and Airflow must not be. It sits behind the brand's
TLS-terminating proxy, or serves TLS itself (``push_receiver_tls_certfile``).

``POST /iys-push/<iys_conn_id>/<CHANNEL>`` with HTTP Basic auth (the credentials of that
connection's channel, :meth:`IysConnectionSettings.push_credentials_for`):

* 401 for missing or wrong credentials, before the body is read; nothing is stored.
* 200 once every movement is committed to the inbox and applied by the change feed's rules
  (one transaction, :func:`iys_provider.push.store.store_pushed`).
* 422 when some items were quarantined (the good ones are committed first); 400 for a body
  that is not a list of movements (quarantined whole); 413 above :data:`MAX_BODY_BYTES`.
* 503 when the database cannot take the movements within the deadline: İYS is told nothing
  was kept, and the nightly pull remains the guarantee.

İYS waits 5 s for an answer; the pool wait and the statement timeout keep every answer under it.
``GET /healthz`` (no auth, no data) answers 200 for a load balancer.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from iys_provider.hooks.settings import PUSH_CHANNELS, PushCredentials
from iys_provider.push.rules import MAX_BODY_BYTES, PushBody, answer_status, read_push_body
from iys_provider.push.store import PushStored, store_pushed

log = logging.getLogger("iys_provider.push.receiver")

#: Seconds a request waits for a pooled connection, and the statement timeout: both keep an
#: answer inside İYS's 5 s even when the database is slow.
POOL_WAIT_SECONDS = 2.0
STATEMENT_TIMEOUT_MS = 2500
AUTH_REALM = 'Basic realm="iys-push", charset="UTF-8"'


@dataclass(frozen=True)
class BrandEndpoint:
    """One brand the receiver accepts pushes for: its codes and each channel's credentials."""

    conn_id: str
    iys_code: int
    brand_code: int
    credentials: Mapping[str, PushCredentials] = field(repr=False)


def authorized(header: str | None, expected: PushCredentials) -> bool:
    """Whether an ``Authorization`` header carries exactly ``expected`` (compared in constant time)."""
    if not header or not header[:6].lower() == "basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    username, colon, password = decoded.partition(b":")
    if not colon:
        return False
    return hmac.compare_digest(username, expected.username.encode()) & hmac.compare_digest(
        password, expected.password.encode()
    )


def create_app(brands: Mapping[str, BrandEndpoint], pool: ConnectionPool) -> Starlette:
    """The receiver for ``brands`` (keyed by connection id), writing through ``pool``."""

    async def receive(request: Request) -> Response:
        brand = brands.get(request.path_params["conn_id"])
        channel = request.path_params["channel"].upper()
        credentials = brand.credentials.get(channel) if brand is not None and channel in PUSH_CHANNELS else None
        if credentials is None:
            return JSONResponse({"error": "no push receiver here"}, status_code=404)
        if not authorized(request.headers.get("authorization"), credentials):
            log.warning("Push to %s/%s refused: wrong or missing credentials", brand.conn_id, channel)
            return JSONResponse(
                {"error": "authentication required"}, status_code=401, headers={"WWW-Authenticate": AUTH_REALM}
            )
        body = await _read_limited(request)
        if body is None:
            return JSONResponse({"error": f"body larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        parsed = read_push_body(body, iys_code=brand.iys_code, brand_code=brand.brand_code)
        try:
            stored = await run_in_threadpool(_keep, pool, brand, channel, parsed, body)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            # OperationalError covers a lost server and the statement timeout: nothing was committed.
            log.error("Push to %s/%s not stored, answered 503: %s", brand.conn_id, channel, type(exc).__name__)
            return JSONResponse({"error": "the database is unavailable; nothing was stored"}, status_code=503)
        status = answer_status(parsed)
        log.info(
            "Push to %s/%s: %s received, %s new, %s redelivered, %s consents changed, %s quarantined, "
            "%s test records; answered %s",
            brand.conn_id,
            channel,
            stored.received,
            stored.new,
            stored.redelivered,
            stored.applied,
            stored.quarantined,
            stored.test_records,
            status,
        )
        answer = {
            "received": stored.received,
            "new": stored.new,
            "redelivered": stored.redelivered,
            "quarantined": [{"position": item.position, "reason": item.reason} for item in parsed.quarantined],
        }
        if parsed.unreadable is not None:
            answer["error"] = parsed.unreadable
        return JSONResponse(answer, status_code=status)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/iys-push/{conn_id}/{channel}", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


async def _read_limited(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _keep(pool: ConnectionPool, brand: BrandEndpoint, channel: str, parsed: PushBody, body: bytes) -> PushStored:
    unreadable = None
    if parsed.unreadable is not None:
        unreadable = (parsed.unreadable, body[:MAX_BODY_BYTES].decode("utf-8", "replace"))
    for attempt in (1, 2, 3):
        with pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
            try:
                return store_pushed(
                    conn,
                    brand_code=brand.brand_code,
                    channel=channel,
                    accepted=parsed.accepted,
                    quarantined=parsed.quarantined,
                    test_records=parsed.test_records,
                    unreadable=unreadable,
                )
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                # Two lists touching one address at once: the transaction rolled back whole; again.
                if attempt == 3:
                    raise
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ process start


def brand_endpoints(conn_ids: tuple[str, ...]) -> dict[str, BrandEndpoint]:
    """Each connection's codes and push credentials, read through Airflow (environment, secrets, DB)."""
    from airflow.sdk import BaseHook

    from iys_provider.exceptions import IysError
    from iys_provider.hooks.settings import IysConnectionSettings

    brands = {}
    for conn_id in conn_ids:
        settings = IysConnectionSettings.from_connection(BaseHook.get_connection(conn_id))
        credentials = {
            channel: pair for channel in PUSH_CHANNELS if (pair := settings.push_credentials_for(channel)) is not None
        }
        if not credentials:
            raise IysError(
                f"Connection {conn_id!r} has no push credentials: set push_username and push_password "
                "(or push_credentials per channel) in its extra fields."
            )
        brands[conn_id] = BrandEndpoint(conn_id, settings.iys_code, settings.brand_code, credentials)
    return brands


def open_pool(postgres_conn_id: str, *, max_size: int = 8) -> ConnectionPool:
    """A pool on the database holding schema ``iys``, migrated once, with the receiver's statement timeout."""
    from psycopg.conninfo import make_conninfo

    from iys_provider.database import iys_database

    with iys_database(postgres_conn_id) as conn:
        params = {o.keyword.decode(): o.val.decode() for o in conn.pgconn.info if o.val is not None}
    return receiver_pool(make_conninfo(**params), max_size=max_size)


def receiver_pool(conninfo: str, *, min_size: int = 2, max_size: int = 8) -> ConnectionPool:
    """A pool whose connections carry the receiver's statement timeout (after the connection's own options)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(conninfo)
    options = f"{params.pop('options', '')} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return ConnectionPool(
        make_conninfo(**params, options=options),
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True},
        open=True,
    )


def main(argv: list[str] | None = None) -> None:
    """``iys-push-receiver``: serve the brands of ``[iys] connections`` (or ``--connections``)."""
    import uvicorn

    from iys_provider.config import load_settings, parse_connection_ids

    settings = load_settings()
    parser = argparse.ArgumentParser(prog="iys-push-receiver", description=main.__doc__)
    parser.add_argument("--connections", help="iys connection ids, comma-separated (default: [iys] connections)")
    parser.add_argument("--host", default=settings.push_receiver_host)
    parser.add_argument("--port", type=int, default=settings.push_receiver_port)
    parser.add_argument("--postgres-conn-id", default=settings.push_postgres_conn_id)
    parser.add_argument("--certfile", default=settings.push_receiver_tls_certfile)
    parser.add_argument("--keyfile", default=settings.push_receiver_tls_keyfile)
    args = parser.parse_args(argv)
    conn_ids = parse_connection_ids(args.connections, "--connections") if args.connections else settings.connections
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    brands = brand_endpoints(conn_ids)
    with open_pool(args.postgres_conn_id) as pool:
        log.info(
            "Receiving İYS pushes for %s on %s://%s:%s/iys-push/<conn_id>/<CHANNEL>",
            ", ".join(brands),
            "https" if args.certfile else "http",
            args.host,
            args.port,
        )
        uvicorn.run(
            create_app(brands, pool),
            host=args.host,
            port=args.port,
            ssl_certfile=args.certfile,
            ssl_keyfile=args.keyfile,
            log_level="warning",
            # İYS's undocumented retries must not pile up on a dying process: answer or refuse fast.
            timeout_graceful_shutdown=5,
        )


if __name__ == "__main__":
    main()
