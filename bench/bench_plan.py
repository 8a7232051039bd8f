"""Benchmark of the initial sync's planning (the ``plan_batches`` task's work), without Airflow or İYS.

Run from the repo root (``make bench-plan`` / ``make bench-plan PLAN_USERS=1000000``)::

    .venv/bin/python bench/bench_plan.py --users 100000,1000000

For each size it creates a throw-away database, COPYs N users into ``public.users`` (the dev
stack's demo users: messy spellings, shared, missing and broken addresses) and times
:func:`~iys_provider.initial_sync.scan_ledger_store.schedule_scan`, everything the plan task does besides
connecting, in two cases:

* **first plan**: nobody known yet (``iys.user_sources`` empty);
* **known users**: every user known from an earlier scan, plus 1 % known users the source no
  longer returns (leavers, forgotten by the plan).

Each is run ``--repeat`` times from the same state; the fastest run is printed, with the CPU
seconds of this process (reading, numbering, COPY) and of the writing PostgreSQL backend (when
the server runs on this machine). ``--without-queue-fk`` drops the queue's foreign key in the
throw-away database first, to show what its per-row check costs.

Then it counts the multi-status calls the plan implies: each batch's users are normalised and
deduplicated exactly as its task does (``prepare_users``), and its calls are
⌈unique recipients ÷ 1000⌉ per (recipient type, channel). The floor is the same over the whole
scan at once; the same users cut into equal batches of ``--compare-batch-size`` (the old
default, 10,000) are counted too.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import sys
import time
import uuid

import psycopg

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_support import (  # noqa: E402
    POSTGRES_SERVER_HELP,
    add_results_argument,
    postgres_server_uri,
    write_results,
)

import local_stack  # noqa: E402
from iys_provider.initial_sync.recipients import prepare_users  # noqa: E402
from iys_provider.initial_sync.scan_ledger import DEFAULT_BATCH_SIZE, ScanBatch  # noqa: E402
from iys_provider.initial_sync.scan_ledger_store import read_batch_users, schedule_scan  # noqa: E402
from iys_provider.people.user_source import DEFAULT_RECIPIENTS_SQL, SourceUser, UserSource  # noqa: E402
from iys_provider.schema import migrate  # noqa: E402

BRAND_CODE = local_stack.SIM_BRAND_CODE
PER_CALL = 1000
LEAVER_SHARE = 0.01
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FORGET_PLANS_SQL = "TRUNCATE iys.initial_sync_queue, iys.initial_sync_batches, iys.initial_sync_scans"
# Known users the source does not return: ids no source row has.
SEED_KNOWN_SQL = """
INSERT INTO iys.user_sources (brand_code, user_id, digest)
SELECT %(brand)s, id::text, 'bench' FROM public.users
UNION ALL
SELECT %(brand)s, 'gone-' || g, 'bench' FROM generate_series(1, %(leavers)s) AS g
"""


def backend_cpu(conn: psycopg.Connection) -> float | None:
    stat = pathlib.Path(f"/proc/{conn.info.backend_pid}/stat")
    if not os.access(stat, os.R_OK):
        return None
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def timed_plans(conn: psycopg.Connection, source: UserSource, batch_size: int, repeat: int):
    """The fastest of ``repeat`` plans from the same state: (wall s, client CPU s, writer CPU s or None, schedule, forgotten).

    With ``repeat`` > 1 every plan is rolled back, so the next one starts from the same state.
    """
    best = None
    for _ in range(repeat):
        conn.execute(FORGET_PLANS_SQL)
        writer = backend_cpu(conn)
        wall, client = time.monotonic(), time.process_time()
        with conn.transaction():
            schedule, forgotten = schedule_scan(conn, brand_code=BRAND_CODE, source=source, batch_size=batch_size)
            wall, client = time.monotonic() - wall, time.process_time() - client
            writer = None if writer is None else backend_cpu(conn) - writer
            if repeat > 1:
                raise psycopg.Rollback()  # every run finds the same state (its forgetting undone too)
        if best is None or wall < best[0]:
            best = (wall, client, writer, schedule, forgotten)
    return best


def count_calls(batches: list[list[SourceUser]]) -> tuple[int, int]:
    """Multi-status calls of these batches, and the floor: every unique recipient asked once, in full calls."""
    total = 0
    everyone: dict[object, set[str]] = {}
    for users in batches:
        prepared = prepare_users(users)
        total += prepared.planned_requests(PER_CALL)
        for key, recipients in prepared.to_check.items():
            everyone.setdefault(key, set()).update(recipients)
    return total, sum(math.ceil(len(recipients) / PER_CALL) for recipients in everyone.values())


def bench(server: str, users: int, args: argparse.Namespace) -> tuple[list[str], str | None]:
    db_name = f"iys_bench_plan_{uuid.uuid4().hex[:8]}"
    dsn = local_stack.ensure_database(server, db_name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(local_stack.USERS_DDL)
            with conn.transaction():
                local_stack.copy_users(conn, local_stack.demo_rows(users))
            conn.execute("VACUUM ANALYZE public.users")
            migrate(conn)
            if args.without_queue_fk:
                conn.execute("ALTER TABLE iys.initial_sync_queue DROP CONSTRAINT initial_sync_queue_scan_id_fkey")
            source = UserSource(DEFAULT_RECIPIENTS_SQL)
            leavers = max(1, int(users * LEAVER_SHARE))
            conn.execute(SEED_KNOWN_SQL, {"brand": BRAND_CODE, "leavers": leavers})
            conn.execute("VACUUM ANALYZE iys.user_sources")
            known = timed_plans(conn, source, args.batch_size, args.repeat)
            conn.execute("TRUNCATE iys.user_sources")
            first = timed_plans(conn, source, args.batch_size, args.repeat)
            lines = [
                _plan_figures(users, "first plan", first, None),
                _plan_figures(users, f"{users + leavers:,} known users", known, known[4].leavers),
            ]
            if args.no_calls:
                return lines, None
            if args.repeat > 1:  # the fastest run was rolled back: plan once more, to count its calls
                conn.execute(FORGET_PLANS_SQL)
                first = timed_plans(conn, source, args.batch_size, 1)
            plan = first[3].planned
            batches = [read_batch_users(conn, ScanBatch(plan.scan_id, b)) for b in range(plan.batch_count)]
            planned, floor = count_calls(batches)
            everyone = [user for batch in batches for user in batch]
            step = args.compare_batch_size
            before, _ = count_calls([everyone[i : i + step] for i in range(0, len(everyone), step)])
            calls = {
                "users": users,
                "floor": floor,
                "equal_batches": {"batches": math.ceil(len(everyone) / step), "batch_size": step, "calls": before},
                "this_plan": {"batches": plan.batch_count, "calls": planned},
            }
            return lines, calls
    finally:
        local_stack.drop_database(server, db_name)


def _plan_figures(users: int, case: str, timed, forgotten: int | None) -> dict:
    wall, client, writer, schedule, _ = timed
    planned = schedule.planned
    return {
        "users": users,
        "case": case,
        "wall_s": wall,
        "planned_users": planned.users,
        "client_cpu_s": client,
        "writer_cpu_s": writer,
        "batches": schedule.batch_count,
        "batch_size": planned.batch_size,
        "forgotten": forgotten,
    }


def _plan_row(f: dict) -> str:
    writer = "—" if f["writer_cpu_s"] is None else f"{f['writer_cpu_s']:.2f}"
    leavers = "—" if f["forgotten"] is None else f"{f['forgotten']:,} forgotten"
    return (
        f"| {f['users']:,} | {f['case']} | **{f['wall_s']:.2f}** | {f['planned_users'] / f['wall_s']:,.0f} "
        f"| {f['client_cpu_s']:.2f} | {writer} | {f['batches']} (≤{f['batch_size']:,}) | {leavers} |"
    )


def _calls_row(c: dict) -> str:
    floor, equal, ours = c["floor"], c["equal_batches"], c["this_plan"]
    return (
        f"| {c['users']:,} | {floor:,} | {equal['batches']} × ≤{equal['batch_size']:,}: {equal['calls']:,} "
        f"(+{equal['calls'] - floor:,}, {_over(equal['calls'], floor)}) | {ours['batches']} planned: "
        f"{ours['calls']:,} (+{ours['calls'] - floor:,}, {_over(ours['calls'], floor)}) |"
    )


def _over(calls_made: int, floor: int) -> str:
    return f"{(calls_made - floor) / floor:.1%} over the floor" if floor else "—"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="100000,1000000", help="comma-separated user counts")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--repeat", type=int, default=3, help="plans per case; the fastest is printed")
    parser.add_argument("--compare-batch-size", type=int, default=10_000)
    parser.add_argument("--no-calls", action="store_true", help="time the plans only")
    parser.add_argument("--without-queue-fk", action="store_true", help="drop the queue's foreign key first")
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    add_results_argument(parser, "plan")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)

    rows, calls = [], []
    for users in (int(n) for n in args.users.split(",")):
        lines, counted = bench(args.postgres_server, users, args)
        rows += lines
        calls += [counted] if counted else []
    fk = ", without the queue's foreign key" if args.without_queue_fk else ""
    print(f"\nPlanning (schedule_scan), batch_size {args.batch_size:,}{fk}; fastest of {args.repeat}\n")
    print("| users | case | wall s | users/s | client CPU s | writer CPU s | batches | leavers |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(_plan_row(f) for f in rows))
    if calls:
        print("\nMulti-status calls the plan implies (floor: every unique recipient once, in full calls)\n")
        print("| users | floor | equal batches | this plan |")
        print("|---|---|---|---|")
        print("\n".join(_calls_row(c) for c in calls))
    write_results(args, "plan", {"plans": rows, "calls": calls})
    return 0


if __name__ == "__main__":
    sys.exit(main())
