"""Python half of ``scripts/airflow_local.sh`` (and of ``bench/bench_initial_sync.py``).

The shell script orchestrates processes; whatever needs a database driver, JSON or the
simulator's synthetic population lives here, so the script stays readable and the benchmark
loads users exactly the way the dev stack does. Run with the project's venv Python::

    python scripts/local_stack.py embedded-postgres .local/pgdata .local/pg.uri
    python scripts/local_stack.py ensure-database postgresql://postgres@127.0.0.1:5432/postgres iys_demo
    python scripts/local_stack.py connections --pg-dsn ... --sim-url ... --import-file conns.json
    python scripts/local_stack.py seed-demo-users <dsn> 2000
    python scripts/local_stack.py wait-ready http://127.0.0.1:8080 --timeout 180
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psycopg
from psycopg import conninfo, sql

#: Demo İYS account; the simulator is started with the same values (see airflow_local.sh).
SIM_USERNAME = "demo"
SIM_PASSWORD = "demo-secret"
SIM_IYS_CODE = 700001
SIM_BRAND_CODE = 700001
#: The Basic-auth pair the simulator (as İYS) sends to the local push receiver.
PUSH_USERNAME = "iys-push"
PUSH_PASSWORD = "push-demo-secret"
#: The simulator's synthetic population gives user i the phone PHONE_PREFIX + i (7 digits) and the
#: e-mail user{i}@example.com (iys_simulator.synthetic.SyntheticPopulation defaults).
PHONE_PREFIX = "+90532"
EMAIL_DOMAIN = "example.com"

USERS_DDL = "CREATE TABLE public.users (id bigint PRIMARY KEY, phone text, email text)"


# ---------------------------------------------------------------------------- users


def synthetic_phone(i: int) -> str:
    return f"{PHONE_PREFIX}{i:07d}"


def synthetic_email(i: int) -> str:
    return f"user{i}@{EMAIL_DOMAIN}"


def messy_phone(i: int) -> str:
    """The synthetic phone of user ``i`` as humans and spreadsheets spell it; all normalise back."""
    n = synthetic_phone(i)[3:]  # national number 532xxxxxxx
    spellings = (
        n,
        f"0{n}",
        f"90{n}",
        f"+90{n}",
        f"0{n[:3]} {n[3:6]} {n[6:8]} {n[8:]}",
        f"+90 ({n[:3]}) {n[3:6]}-{n[6:8]}-{n[8:]}",
        f"0090 {n[:3]} {n[3:6]} {n[6:8]} {n[8:]}",
        f"  0{n}\t",
        f"{n}.0",  # Excel float
    )
    return spellings[i % len(spellings)]


def messy_email(i: int) -> str:
    """The synthetic e-mail of user ``i`` in a few spellings that normalise back to it."""
    spellings = (synthetic_email(i), f"User{i}@Example.COM", f"  user{i}@{EMAIL_DOMAIN} ")
    return spellings[i % len(spellings)]


def bench_rows(first: int, count: int) -> Iterator[tuple[int, str, str]]:
    """Clean-but-messy users: every address normalises to the synthetic one, so the truth is exact."""
    for i in range(first, first + count):
        yield i, messy_phone(i), messy_email(i)


def demo_rows(count: int) -> Iterator[tuple[int, str | None, str | None]]:
    """Users as a real table holds them: mostly fine, some shared, missing or broken addresses.

    The broken ones end up in ``iys.rejected_recipients`` so the demo shows the quarantine too.
    """
    junk_phones = ("0212 123 45 67", "+9005321234567", "12345", "tel: yok", "+44 7911 123456", "   ")
    junk_emails = ("not-an-email", "çiğdem@example.com", "a@b.c", "x y@example.com")
    for i in range(1, count + 1):
        phone: str | None = messy_phone(i)
        email: str | None = messy_email(i)
        if i % 10 == 3:
            phone = messy_phone(i - 1)  # a family sharing one number, spelt differently
        if i % 37 == 0:
            phone = junk_phones[(i // 37) % len(junk_phones)]
        if i % 41 == 0:
            email = junk_emails[(i // 41) % len(junk_emails)]
        if i % 23 == 0:
            phone = None
        if i % 29 == 0:
            email = None
        yield i, phone, email


def copy_users(conn: psycopg.Connection, rows) -> int:
    """COPY rows into public.users (the fastest way in; 1M rows take a few seconds)."""
    count = 0
    with conn.cursor() as cur, cur.copy("COPY public.users (id, phone, email) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def seed_demo_users(dsn: str, count: int) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone()[0]
        if exists:
            n = conn.execute("SELECT count(*) FROM public.users").fetchone()[0]
            return f"public.users exists ({n} users); left as is"
        with conn.transaction():
            conn.execute(USERS_DDL)
            loaded = copy_users(conn, demo_rows(count))
        conn.execute("ANALYZE public.users")
        return f"public.users created with {loaded} demo users"


# ---------------------------------------------------------------------------- postgres


def ensure_database(server_uri: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its DSN."""
    with psycopg.connect(server_uri, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo.conninfo_to_dict(server_uri)
    params["dbname"] = name
    return conninfo.make_conninfo(**params)


def drop_database(server_uri: str, name: str) -> None:
    with psycopg.connect(server_uri, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def sqlalchemy_url(dsn: str) -> str:
    """SQLAlchemy URL (psycopg2 driver, what Airflow documents) of a libpq DSN, e.g. for Airflow's metadata database."""
    from sqlalchemy.engine import URL

    p = conninfo.conninfo_to_dict(dsn)
    host = p.get("host") or "127.0.0.1"
    query = {}
    if host.startswith("/"):  # unix socket directory (the embedded server listens only there)
        query["host"] = host
        host = None
    url = URL.create(
        "postgresql+psycopg2",
        username=p.get("user") or "postgres",
        password=p.get("password") or None,
        host=host,
        port=int(p["port"]) if p.get("port") and host else None,
        database=p.get("dbname") or "postgres",
        query=query,
    )
    return url.render_as_string(hide_password=False)


def run_embedded_postgres(data_dir: str, uri_file: str) -> int:
    """Start pgserver on ``data_dir``, write its URI to ``uri_file``, stop it on SIGTERM/SIGINT."""
    import pathlib

    import pgserver

    path = pathlib.Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = pgserver.get_server(path, cleanup_mode="stop")
    pathlib.Path(uri_file).write_text(server.get_uri())
    print(f"embedded PostgreSQL running on {server.get_uri()}", flush=True)
    while not stop.wait(0.5):
        pass
    server.cleanup()  # pg_ctl stop; the data directory stays for the next start
    return 0


# ---------------------------------------------------------------------------- airflow


def connections(dsn: str, sim_url: str, rate_limit: float) -> dict[str, dict]:
    p = conninfo.conninfo_to_dict(dsn)
    postgres = {
        "conn_type": "postgres",
        "host": p.get("host") or "127.0.0.1",
        "login": p.get("user") or "postgres",
        "schema": p.get("dbname") or "postgres",
        "port": int(p.get("port") or 5432),
    }
    if p.get("password"):
        postgres["password"] = p["password"]
    iys = {
        "conn_type": "iys",
        "host": sim_url,
        "login": SIM_USERNAME,
        "password": SIM_PASSWORD,
        "extra": {
            "iys_code": SIM_IYS_CODE,
            "brand_code": SIM_BRAND_CODE,
            "verify_ssl": False,
            "shared_state_conn_id": "iys_postgres",
            "rate_limit_per_second": rate_limit,
            # What the simulator (as İYS) sends to the local push receiver.
            "push_username": PUSH_USERNAME,
            "push_password": PUSH_PASSWORD,
        },
    }
    return {"iys_default": iys, "iys_postgres": postgres}


def push_tls(folder: str) -> dict[str, str]:
    """A throw-away CA and a certificate for 127.0.0.1 (kept across restarts of the stack)."""
    from iys_simulator.tls import throwaway_tls

    tls = throwaway_tls(pathlib.Path(folder))
    return {"ca_file": str(tls.ca_file), "cert_file": str(tls.cert_file), "key_file": str(tls.key_file)}


def wait_ready(api_url: str, timeout: float) -> bool:
    """Wait until the API server answers, the scheduler, dag-processor and triggerer heartbeat, and
    the Task Execution API (the API server's other app, which every task calls) answers too.

    The Execution API builds itself on its first request: about 2 s on a fresh API server, which
    the first task of the stack would otherwise wait through (measured: the plan task of the first
    benchmark run took 3.1 s instead of 0.7 s).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api_url}/api/v2/monitor/health", timeout=5) as response:
                health = json.load(response)
            components = ("metadatabase", "scheduler", "dag_processor", "triggerer")
            if all((health.get(c) or {}).get("status") == "healthy" for c in components):
                with urllib.request.urlopen(f"{api_url}/execution/health", timeout=30) as response:
                    if response.status == 200:
                        return True
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1)
    return False


# ---------------------------------------------------------------- driving the stack from Python


class AirflowApi:
    """The stack's REST API (``/api/v2``) as one user; the JWT from ``/auth/token`` is fetched once.

    Shared by the UI tests, the fleet test and the initial-sync benchmark. Imports ``requests``
    when first used: the shell script's commands above do not need it.
    """

    def __init__(self, api_url: str, username: str, password: str, *, timeout: float = 60) -> None:
        self.api_url, self.username, self.password, self.timeout = api_url, username, password, timeout
        self._token: str | None = None

    def __call__(self, method: str, path: str, **kwargs) -> dict:
        """``method`` ``/api/v2{path}``; the decoded JSON answer (``{}`` when empty). Raises ``requests.HTTPError``."""
        import requests

        if self._token is None:
            response = requests.post(
                f"{self.api_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=self.timeout,
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        response = requests.request(
            method,
            f"{self.api_url}/api/v2{path}",
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=self.timeout,
            **kwargs,
        )
        response.raise_for_status()
        return response.json() if response.content else {}


class StackFailed(RuntimeError):
    """``airflow_local.sh`` exited or was not ready in time; the message ends with its log."""


def wait_for_stack(process: subprocess.Popen, ready_file: pathlib.Path, timeout: float, log_tail) -> dict:
    """The stack's ready file (``IYS_READY_FILE``), once the script has renamed it into place."""
    deadline = time.monotonic() + timeout
    while not ready_file.exists():
        if process.poll() is not None:
            raise StackFailed(f"scripts/airflow_local.sh exited {process.returncode}:\n{log_tail()}")
        if time.monotonic() > deadline:
            raise StackFailed(f"the stack was not ready after {timeout:.0f} s:\n{log_tail()}")
        time.sleep(0.5)
    return json.loads(ready_file.read_text())


def stop_stack(process: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the script (its trap stops every child process group); SIGKILL the group if it hangs."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_stack.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("embedded-postgres", help="run pgserver until SIGTERM")
    p.add_argument("data_dir")
    p.add_argument("uri_file")
    p = sub.add_parser("ensure-database", help="create a database if missing; print its DSN")
    p.add_argument("server_uri")
    p.add_argument("name")
    p = sub.add_parser("drop-database")
    p.add_argument("server_uri")
    p.add_argument("name")
    p = sub.add_parser("sqlalchemy-url", help="SQLAlchemy URL of a DSN")
    p.add_argument("dsn")
    p = sub.add_parser("connections", help="print AIRFLOW_CONN_* exports; write an import file")
    p.add_argument("--pg-dsn", required=True)
    p.add_argument("--sim-url", required=True)
    p.add_argument("--rate-limit", type=float, default=8)
    p.add_argument("--import-file", required=True)
    p = sub.add_parser("push-tls", help="write a throw-away CA and server certificate; print shell variables")
    p.add_argument("folder")
    p = sub.add_parser("seed-demo-users", help="create and fill public.users unless it exists")
    p.add_argument("dsn")
    p.add_argument("count", type=int)
    p = sub.add_parser("wait-ready", help="wait for the Airflow API server and its components")
    p.add_argument("api_url")
    p.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    if args.command == "embedded-postgres":
        return run_embedded_postgres(args.data_dir, args.uri_file)
    if args.command == "ensure-database":
        print(ensure_database(args.server_uri, args.name))
    elif args.command == "drop-database":
        drop_database(args.server_uri, args.name)
    elif args.command == "sqlalchemy-url":
        print(sqlalchemy_url(args.dsn))
    elif args.command == "connections":
        conns = connections(args.pg_dsn, args.sim_url, args.rate_limit)
        with open(args.import_file, "w", encoding="utf-8") as handle:
            json.dump(conns, handle, indent=2)
        for conn_id, conn in conns.items():
            print(f"export AIRFLOW_CONN_{conn_id.upper()}={shlex.quote(json.dumps(conn))}")
    elif args.command == "push-tls":
        for name, path in push_tls(args.folder).items():
            print(f"PUSH_TLS_{name.upper()}={shlex.quote(path)}")
    elif args.command == "seed-demo-users":
        print(seed_demo_users(args.dsn, args.count))
    elif args.command == "wait-ready":
        return 0 if wait_ready(args.api_url, args.timeout) else 1
    return 0


def run_quietly_interruptible(argv: list[str] | None = None) -> int:
    """``main``, but Ctrl-C during the stack's start-up (which reaches this foreground helper too)
    ends it with the shell's 130 and no traceback: airflow_local.sh then says what it stops."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(run_quietly_interruptible())
