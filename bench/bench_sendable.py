"""Benchmark of reading ``iys.sendable`` before and after open opt-outs count in it.

Run from the repo root (``make bench-sendable`` / ``make bench-sendable SENDABLE_USERS=1000000``)::

    .venv/bin/python bench/bench_sendable.py --users 1000000 --open-rets 10000

Creates a throw-away database and migrates the ``iys`` schema to the version *before* the view
looked at the outbox (V016). Fills it in SQL with a brand of N users (a phone for 95 %, an e-mail
for 70 %; ONAY / RET / unknown mixed), an outbox of settled rows (10 % of the users) and
``--open-rets`` RETs not yet in İYS, written as an application writes them (national phone
numbers with spaces, e-mail in mixed case). Then times the reads a campaign tool makes, migrates
to today's schema (timing the upgrade) and times them again:

* ``count per channel``: ``SELECT type, count(*) FROM iys.sendable WHERE brand_code = … GROUP BY type``
* ``audience export``: every ``(user_id, recipient, type)`` of the brand, through ``COPY … TO STDOUT``
* ``one user``: ``SELECT … WHERE brand_code = … AND user_id = …``, 200 users

Each read runs ``--repeat`` times after a warm-up; the median and the slowest are printed, with
the ratio after/before against the 1.2× goal, and the rows the open RETs take out. The database
is dropped at the end.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
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
from iys_provider.schema import migrate  # noqa: E402

BRAND = local_stack.SIM_BRAND_CODE
BEFORE_VERSION = 16
GOAL = 1.2

FILL_SQL = """
INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient)
SELECT %(brand)s, g::text, 'phone', '+90532' || lpad(g::text, 7, '0') FROM generate_series(1, %(users)s) g WHERE g %% 20 <> 0;
INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient)
SELECT %(brand)s, g::text, 'email', 'user' || g || '@example.com' FROM generate_series(1, %(users)s) g WHERE g %% 10 < 7;
INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status, consent_date, checked_at)
SELECT %(brand)s, recipient, 'BIREYSEL', t, (ARRAY['ONAY', 'ONAY', 'RET', NULL])[1 + (hashtext(recipient || t) & 3)],
       now() - interval '200 days', now()
  FROM iys.user_recipients, unnest(ARRAY['MESAJ', 'ARAMA']) AS t WHERE kind = 'phone';
INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status, consent_date, checked_at)
SELECT %(brand)s, recipient, 'BIREYSEL', 'EPOSTA', (ARRAY['ONAY', 'ONAY', 'RET', NULL])[1 + (hashtext(recipient) & 3)],
       now() - interval '200 days', now()
  FROM iys.user_recipients WHERE kind = 'email';
INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state, processed_at)
SELECT %(brand)s, 'user' || g || '@example.com', 'EPOSTA', CASE WHEN g %% 4 = 0 THEN 'ONAY' ELSE 'RET' END,
       now() - make_interval(hours => g %% 2000), 'HS_WEB', (ARRAY['sent', 'sent', 'skipped', 'rejected'])[1 + g %% 4],
       now() - make_interval(hours => g %% 2000)
  FROM generate_series(1, %(users)s / 10) g;
INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state)
SELECT %(brand)s,
       CASE WHEN g %% 3 = 0 THEN ' User' || (g * 7) || '@Example.com'
            ELSE '0532 ' || substr(lpad((g * 7)::text, 7, '0'), 1, 3) || ' ' || substr(lpad((g * 7)::text, 7, '0'), 4) END,
       CASE WHEN g %% 3 = 0 THEN 'EPOSTA' WHEN g %% 3 = 1 THEN 'MESAJ' ELSE 'ARAMA' END, 'RET',
       now() - interval '5 minutes', 'HS_MOBIL', (ARRAY['pending', 'pending', 'submitted', 'failed'])[1 + g %% 4]
  FROM generate_series(1, %(open_rets)s) g
"""

READS = {
    "count per channel": "SELECT type, count(*) FROM iys.sendable WHERE brand_code = %(brand)s GROUP BY type",
    "audience export": "COPY (SELECT user_id, recipient, type FROM iys.sendable WHERE brand_code = {brand}) TO STDOUT",
    "one user": "SELECT type FROM iys.sendable WHERE brand_code = %(brand)s AND user_id = %(user)s",
}


def fill(conn: psycopg.Connection, users: int, open_rets: int) -> float:
    started = time.monotonic()
    params = {"brand": BRAND, "users": users, "open_rets": open_rets}
    for statement in filter(str.strip, FILL_SQL.split(";\n")):
        conn.execute(statement, params)
    conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def time_read(conn: psycopg.Connection, name: str, users: int) -> float:
    """Seconds of one read as a campaign tool makes it."""
    started = time.perf_counter()
    if name == "audience export":
        with conn.cursor().copy(READS[name].format(brand=BRAND)) as copy:
            for _ in copy:
                pass
    elif name == "one user":
        for i in range(200):
            conn.execute(READS[name], {"brand": BRAND, "user": str(1 + (i * 4999) % users)}).fetchall()
    else:
        conn.execute(READS[name], {"brand": BRAND}).fetchall()
    return time.perf_counter() - started


def measure(conn: psycopg.Connection, users: int, repeat: int) -> dict[str, list[float]]:
    times = {}
    for name in READS:
        time_read(conn, name, users)  # warm-up
        times[name] = [time_read(conn, name, users) for _ in range(repeat)]
    return times


def sendable_rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM iys.sendable WHERE brand_code = %s", (BRAND,)).fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--open-rets", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    add_results_argument(parser, "sendable")
    args = parser.parse_args()
    server = postgres_server_uri(args.postgres_server)
    name = f"iys_bench_sendable_{uuid.uuid4().hex[:8]}"
    dsn = local_stack.ensure_database(server, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, up_to=BEFORE_VERSION)
            filled = fill(conn, args.users, args.open_rets)
            print(
                f"users {args.users:,}, open RETs {args.open_rets:,}; filled in {filled:.1f} s at schema V{BEFORE_VERSION}"
            )
            rows_before = sendable_rows(conn)
            before = measure(conn, args.users, args.repeat)
            started = time.monotonic()
            migrate(conn)
            conn.execute("VACUUM ANALYZE iys.consent_updates")
            print(f"upgrade to today's schema: {time.monotonic() - started:.1f} s")
            rows_after = sendable_rows(conn)
            after = measure(conn, args.users, args.repeat)
        print(
            f"iys.sendable rows: {rows_before:,} before, {rows_after:,} after ({rows_before - rows_after:,} held out)"
        )
        print(f"{'read':<20} {'before ms':>18} {'after ms':>18} {'ratio':>7}  (median / slowest of {args.repeat})")
        worst = 0.0
        for read in READS:
            b, a = statistics.median(before[read]) * 1000, statistics.median(after[read]) * 1000
            ratio = a / b
            worst = max(worst, ratio)
            print(
                f"{read:<20} {b:>9.1f} / {max(before[read]) * 1000:>6.1f} {a:>9.1f} / {max(after[read]) * 1000:>6.1f}"
                f" {ratio:>6.2f}×"
            )
        print(f"verdict: worst median ratio {worst:.2f}× ({'within' if worst <= GOAL else 'above'} the {GOAL}× goal)")
        figures = {
            "users": args.users,
            "open_rets": args.open_rets,
            "sendable_rows": {"before": rows_before, "after": rows_after},
            "seconds": {"before": before, "after": after},
            "worst_median_ratio": worst,
            "goal_ratio": GOAL,
        }
        write_results(args, "sendable", figures)
    finally:
        local_stack.drop_database(server, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
