"""Benchmark of the initial sync's local work, without İYS: read a batch, normalise, write it.

Run from the repo root (``make bench-local`` / ``make bench-local USERS=1000000``)::

    .venv/bin/python bench/bench_local_work.py --users 1000000

It creates a throw-away database, COPYs N users into ``public.users`` (messy spellings, as in
``bench_initial_sync.py``), plans a scan with the package's own ``plan_scan`` and then runs every
batch through ``read_batch_users`` → ``prepare_users`` → ``record_checked_users`` — the code path
of ``IysInitialSyncBatchOperator`` minus the İYS calls, whose answer is taken from the
simulator's synthetic truth. Nothing else runs, so the CPU figures belong to this work alone.

It prints, for the planning and for the batches:

* wall seconds and users/s;
* CPU seconds of this Python process (read, normalise, COPY) and of its PostgreSQL backend
  (``/proc/<pid>/stat`` of ``pg_backend_pid()``; only when the server runs on this machine);
* users per CPU-second of the client, of the server and of both: "users/s per core";
* rows written per second and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import sys
import time
import uuid
from datetime import UTC, datetime

import psycopg
from iys_simulator.synthetic import synthetic_status

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_support import (  # noqa: E402
    POSTGRES_SERVER_HELP,
    add_results_argument,
    postgres_server_uri,
    write_results,
)

import local_stack  # noqa: E402
from iys_provider.initial_sync.consent_checks import record_checked_users  # noqa: E402
from iys_provider.initial_sync.recipients import prepare_users  # noqa: E402
from iys_provider.initial_sync.scan_ledger import DEFAULT_BATCH_SIZE, ScanBatch  # noqa: E402
from iys_provider.initial_sync.scan_ledger_store import plan_scan, read_batch_users  # noqa: E402
from iys_provider.people.user_source import DEFAULT_RECIPIENTS_SQL, UserSource  # noqa: E402
from iys_provider.schema import migrate  # noqa: E402

BRAND_CODE = local_stack.SIM_BRAND_CODE
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ONAY_RATIO, RET_RATIO = 0.6, 0.2  # SyntheticPopulation defaults, as in bench_initial_sync.py


class BackendCpu:
    """CPU seconds used so far by a PostgreSQL backend, if it runs on this machine."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.stat = pathlib.Path(f"/proc/{conn.info.backend_pid}/stat")
        self.available = self.stat.exists() and os.access(self.stat, os.R_OK)

    def seconds(self) -> float:
        if not self.available:
            return 0.0
        fields = self.stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


class Meter:
    def __init__(self, backend: BackendCpu) -> None:
        self.backend = backend
        self.wall = self.client = self.server = 0.0

    def __enter__(self) -> Meter:
        self._started = (time.monotonic(), time.process_time(), self.backend.seconds())
        return self

    def __exit__(self, *exc) -> None:
        wall, client, server = self._started
        self.wall += time.monotonic() - wall
        self.client += time.process_time() - client
        self.server += self.backend.seconds() - server


def answer_of_iys(prepared) -> dict:
    """What multi status would answer: the ONAY recipients of the simulator's synthetic truth."""
    return {
        (rtype, ctype): {r for r in recipients if synthetic_status(r, ctype.value, ONAY_RATIO, RET_RATIO) == "ONAY"}
        for (rtype, ctype), recipients in prepared.to_check.items()
    }


def _per_cpu(users: int, cpu_seconds: float) -> str:
    return f"{users / cpu_seconds:,.0f}" if cpu_seconds >= 0.1 else "— (no CPU spent)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    add_results_argument(parser, "local_work")
    parser.add_argument("--keep", action="store_true", help="keep the throw-away database")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)

    db_name = f"iys_bench_local_{uuid.uuid4().hex[:8]}"
    dsn = local_stack.ensure_database(args.postgres_server, db_name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(local_stack.USERS_DDL)
            with conn.transaction():
                local_stack.copy_users(conn, local_stack.bench_rows(1, args.users))
            conn.execute("VACUUM ANALYZE public.users")
            migrate(conn)
            backend = BackendCpu(conn)
            planning, batches = Meter(backend), Meter(backend)
            with planning, conn.transaction():
                plan = plan_scan(
                    conn, brand_code=BRAND_CODE, source=UserSource(DEFAULT_RECIPIENTS_SQL), batch_size=args.batch_size
                )
            users = 0
            answer_seconds = 0.0
            for batch_no in range(plan.batch_count):
                with batches:
                    prepared = prepare_users(read_batch_users(conn, ScanBatch(plan.scan_id, batch_no)))
                    started = time.process_time()
                    onay = answer_of_iys(prepared)  # stands in for İYS: not local work, not counted
                    answer_seconds += time.process_time() - started
                    record_checked_users(
                        conn,
                        brand_code=BRAND_CODE,
                        prepared=prepared,
                        onay=onay,
                        checked_at=datetime.now(UTC),
                        batch=ScanBatch(plan.scan_id, batch_no),
                    )
                users += prepared.users
            batches.client -= answer_seconds
            batches.wall -= answer_seconds
            # What the tables hold, not what the writer meant to write.
            consents, links, fingerprints = conn.execute(
                "SELECT (SELECT count(*) FROM iys.consents), (SELECT count(*) FROM iys.user_recipients), "
                "(SELECT count(*) FROM iys.user_sources)"
            ).fetchone()
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        if not args.keep:
            local_stack.drop_database(args.postgres_server, db_name)

    server_note = "" if backend.available else " (server CPU not visible: not on this machine)"
    print(
        f"\nLocal work of the initial sync, {users:,} users, {plan.batch_count} batches of {plan.batch_size:,}{server_note}\n"
    )
    print(
        "| phase | wall s | users/s | client CPU s | server CPU s | users/s per client core "
        "| users/s per server core | users/s per core, both |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, meter in (("plan (snapshot)", planning), ("batches (read, normalise, write)", batches)):
        print(
            f"| {name} | {meter.wall:.1f} | {users / meter.wall:,.0f} | {meter.client:.1f} | {meter.server:.1f} "
            f"| {_per_cpu(users, meter.client)} | {_per_cpu(users, meter.server)} "
            f"| {_per_cpu(users, meter.client + meter.server)} |"
        )
    print(
        f"\nrows written: {consents:,} consents + {links:,} user links + {fingerprints:,} fingerprints "
        f"= {(consents + links + fingerprints) / batches.wall:,.0f} rows/s; peak RSS {peak_rss_mb:.0f} MB"
    )
    figures = {
        "users": users,
        "batches": plan.batch_count,
        "batch_size": plan.batch_size,
        "server_cpu_visible": backend.available,
        "phases": {
            name: {"wall_s": meter.wall, "client_cpu_s": meter.client, "server_cpu_s": meter.server}
            for name, meter in (("plan", planning), ("batches", batches))
        },
        "rows_written": {"consents": consents, "user_links": links, "fingerprints": fingerprints},
        "peak_rss_mb": peak_rss_mb,
    }
    write_results(args, "local_work", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
