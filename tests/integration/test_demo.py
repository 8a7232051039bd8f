"""``make demo``, the README's first command: scripts/demo.py as a newcomer runs it, checked on its output.

It runs in a fresh interpreter (its own process group) against the session's PostgreSQL server, in
a database of its own (``IYS_DEMO_DB``), and must succeed, tell its story in the summary and leave
no process behind.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import uuid

import psycopg
from psycopg import conninfo, sql

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_make_demo_runs_both_syncs_and_prints_the_summary(postgres_server_uri, tmp_path):
    database = f"iys_demo_test_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "IYS_"))}
    env.update(IYS_POSTGRES_URI=postgres_server_uri, IYS_DEMO_DB=database, HOME=str(tmp_path))
    demo = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = demo.communicate(timeout=600)
        assert demo.returncode == 0, (out + err)[-4000:]
        assert f"database {database} (re)created" in out
        assert "İYS demo summary" in out and "nothing left running" in out, out[-3000:]
        # The story: 2,000 users; citizens' changes pulled from İYS; the app's one opt-out pushed;
        # no recipient ever created in İYS.
        assert re.search(r"users: 2000 \(\d+ with at least one usable address\)", out), out
        pulled = re.search(r"changes pulled: IYS (\d+), HS \d+", out)
        assert pulled and int(pulled.group(1)) >= 3, out
        assert "outbox: pushed 1, skipped 0, rejected 0" in out, out
        assert "recipients created 0" in out, out
        params = conninfo.conninfo_to_dict(postgres_server_uri)
        params["dbname"] = database
        with psycopg.connect(conninfo.make_conninfo(**params)) as conn:
            assert conn.execute("SELECT count(*) FROM public.users").fetchone()[0] == 2000
            assert conn.execute("SELECT count(*) FROM iys.consent_updates WHERE state = 'sent'").fetchone()[0] == 1
        # Nothing left running: the demo's process group is empty now that it has returned.
        left = subprocess.run(["pgrep", "-g", str(demo.pid)], capture_output=True, text=True, check=False)
        assert left.stdout.strip() == "", left.stdout
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        with psycopg.connect(postgres_server_uri, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
