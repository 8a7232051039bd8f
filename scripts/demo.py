"""``make demo``: the whole product once, end to end, on this machine, leaving nothing running.

1. starts the bundled İYS simulator with a synthetic population that knows the demo users;
2. uses the PostgreSQL in ``IYS_POSTGRES_URI``, else the server at 127.0.0.1:5432, else an
   embedded one (``pgserver``), and (re)creates a database ``iys_demo`` (``IYS_DEMO_DB``, as for
   ``make airflow``) with 2,000 messy users;
3. runs ``iys_initial_sync``, then simulates citizens changing consents in İYS and a user
   unsubscribing in the brand's app (an outbox row), then runs ``iys_incremental_sync``;
4. prints a summary.

Both DAGs run with ``dag.test()`` in a throw-away Airflow home; see ``make airflow`` for the UI.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_USERS = 2000
DEMO_DATABASE = os.environ.get("IYS_DEMO_DB") or "iys_demo"


def _configure_airflow(home: str) -> None:
    os.environ.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
    )


def _postgres_server(stack: ExitStack) -> tuple[str, str]:
    """URI of a PostgreSQL server and where it came from."""
    if os.environ.get("IYS_POSTGRES_URI"):
        return os.environ["IYS_POSTGRES_URI"], "IYS_POSTGRES_URI"
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return "postgresql://postgres@127.0.0.1:5432/postgres", "local server at 127.0.0.1:5432"
    except OSError:
        pass
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="iys-demo-pg-")
    stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    stack.callback(server.cleanup)
    return server.get_uri(), "embedded PostgreSQL (pgserver)"


def main() -> int:
    started = time.monotonic()
    with ExitStack() as stack:
        home = tempfile.mkdtemp(prefix="iys-demo-airflow-")
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        _configure_airflow(home)

        sys.path.insert(0, str(ROOT / "scripts"))
        import json

        import psycopg
        from iys_simulator import SimulatorServer

        import local_stack

        print("• starting the İYS simulator", flush=True)
        sim = SimulatorServer(
            port=0,
            username=local_stack.SIM_USERNAME,
            password=local_stack.SIM_PASSWORD,
            iys_code=local_stack.SIM_IYS_CODE,
            brand_codes=[local_stack.SIM_BRAND_CODE],
            batch_result_delay=0,
            seed=2026,
        ).start()
        stack.callback(sim.stop)
        sim.seed_synthetic(count=DEMO_USERS + 1)

        server_uri, origin = _postgres_server(stack)
        print(f"• PostgreSQL: {origin}; database {DEMO_DATABASE} (re)created", flush=True)
        local_stack.drop_database(server_uri, DEMO_DATABASE)
        dsn = local_stack.ensure_database(server_uri, DEMO_DATABASE)
        print(f"• {local_stack.seed_demo_users(dsn, DEMO_USERS)}", flush=True)

        for conn_id, conn in local_stack.connections(dsn, sim.url, rate_limit=8).items():
            conn.setdefault("extra", {})
            if conn_id == "iys_default":
                conn["extra"]["batch_result_delay_seconds"] = 0
            os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)

        print("• initialising a throw-away Airflow metadata database", flush=True)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)

        from airflow.dag_processing.dagbag import DagBag

        dags = DagBag(dag_folder=str(ROOT / "dags"), safe_mode=True).dags

        print("• running iys_initial_sync", flush=True)
        t0 = time.monotonic()
        assert dags["iys_initial_sync"].test().state == "success", "initial sync failed (see the log above)"
        initial_seconds = time.monotonic() - t0
        initial_requests = sim.counters()["requests"]

        with psycopg.connect(dsn, autocommit=True) as conn:
            # Citizens act in İYS: two withdraw SMS consent by texting RET to 3338, one opts in to calls.
            onay_phones = [
                row[0]
                for row in conn.execute(
                    "SELECT recipient FROM iys.consents WHERE type = 'MESAJ' AND status = 'ONAY' ORDER BY recipient LIMIT 3"
                )
            ]
            for phone in onay_phones[:2]:
                sim.citizen_change(recipient=phone, type="MESAJ", status="RET", source="IYS_KISAMESAJ")
            silent = conn.execute(
                "SELECT recipient FROM iys.consents WHERE type = 'ARAMA' AND status IS NULL ORDER BY recipient LIMIT 1"
            ).fetchone()
            if silent:
                sim.citizen_change(recipient=silent[0], type="ARAMA", status="ONAY", source="IYS_WEB")
            # A user unsubscribes from e-mail in the brand's app: the app writes the outbox.
            email = conn.execute(
                "SELECT recipient FROM iys.consents WHERE type = 'EPOSTA' AND status = 'ONAY' ORDER BY recipient LIMIT 1"
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source) "
                "VALUES (%s, %s, 'EPOSTA', 'RET', now() - interval '5 minutes', 'HS_MOBIL')",
                (local_stack.SIM_BRAND_CODE, email.upper()),
            )
        sim.advance_clock(3700)  # İYS withholds the last hour of movements from its change feed

        print("• running iys_incremental_sync", flush=True)
        t0 = time.monotonic()
        assert dags["iys_incremental_sync"].test().state == "success", "incremental sync failed (see the log above)"
        incremental_seconds = time.monotonic() - t0
        counters = sim.counters()

        with psycopg.connect(dsn, autocommit=True) as conn:
            _print_summary(conn, counters, initial_requests, initial_seconds, incremental_seconds)
    print(f"\nDone in {time.monotonic() - started:.0f} s; nothing left running.")
    return 0


def _print_summary(conn, counters: dict, initial_requests: int, initial_seconds: float, incremental_seconds: float):
    users = conn.execute("SELECT count(*) FROM public.users").fetchone()[0]
    linked = conn.execute("SELECT count(DISTINCT user_id) FROM iys.user_recipients").fetchone()[0]
    print("\nİYS demo summary")
    print(f"  users: {users} ({linked} with at least one usable address)")
    print("  consents        ONAY    RET   none")
    for ctype, onay, ret, none in conn.execute(
        "SELECT type, count(*) FILTER (WHERE status = 'ONAY'), count(*) FILTER (WHERE status = 'RET'), "
        "count(*) FILTER (WHERE status IS NULL) FROM iys.consents GROUP BY type ORDER BY type"
    ):
        print(f"    {ctype:<10} {onay:>8} {ret:>6} {none:>6}")
    print(
        "  quarantined:",
        ", ".join(
            f"{reason} {n}"
            for reason, n in conn.execute(
                "SELECT reason, count(*) FROM iys.rejected_recipients GROUP BY reason ORDER BY 2 DESC"
            )
        ),
    )
    run = conn.execute(
        "SELECT pulled_iys, pulled_hs, applied, new_users_checked, pushed, skipped, rejected FROM iys.sync_runs"
    ).fetchone()
    print(f"  changes pulled: IYS {run[0]}, HS {run[1]} ({run[2]} applied); new users checked: {run[3]}")
    print(f"  outbox: pushed {run[4]}, skipped {run[5]}, rejected {run[6]}")
    sendable = conn.execute("SELECT count(*) FROM iys.sendable").fetchone()[0]
    print(f"  sendable (user, address, channel) rows: {sendable}")
    total = counters["requests"]
    print(
        f"  İYS requests: {initial_requests} in the initial sync ({initial_requests / initial_seconds:.1f} req/s over "
        f"{initial_seconds:.0f} s incl. Airflow overhead), {total - initial_requests} in the incremental sync; "
        f"429s {counters['http_429']}, tokens issued {counters['tokens_issued']}, recipients created "
        f"{counters['recipients_created']}"
    )


if __name__ == "__main__":
    sys.exit(main())
