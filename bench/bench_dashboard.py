"""Benchmark of the İYS page's panel queries (issue #16) at a million users.

Run from the repo root (``make bench-dashboard`` / ``make bench-dashboard DASHBOARD_USERS=1000000``)::

    .venv/bin/python bench/bench_dashboard.py --users 1000000

Creates a throw-away database, migrates the ``iys`` schema and fills it with what a brand of N users
leaves behind after months of syncing (generated in SQL, in the shapes the sync writes):

* links: a phone for 95 % of the users, an e-mail for 70 % (a few share an address); consents for
  each (MESAJ and ARAMA per phone, EPOSTA per e-mail), ONAY / RET / unknown mixed;
* quarantine: 2 % of the users, across the stored reasons;
* the initial sync: one finished scan and one open scan with half of its batches done;
* ``--runs`` incremental runs (default 8,760: a year of hourly runs), a settled outbox of 10 % of the
  users plus pending and failed rows (RETs among them), a month of the İYS ledger, token log and a block;
* a year of pushed movements (a fifth of the users' worth, over the three channels, two unapplied)
  and 500 quarantined push items.

Then times each panel's query in the read-only transaction the page uses: ``--repeat`` times
each (after one warm-up), printing the median and the slowest in ms against the 300 ms target.
The page reads the ``iys.sendable`` count from ``iys.sendable_counts``; counting it (a join of
the links and the consents) is the sync's job at the end of a run, timed too but not held to the
page's target. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

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
from iys_provider.consent_store import record_sendable_counts, recorded_sendable_counts  # noqa: E402
from iys_provider.outbox.store import unsent_rets_by_day  # noqa: E402
from iys_provider.plugins import dashboard_store as store  # noqa: E402
from iys_provider.schema import migrate  # noqa: E402

BRAND = local_stack.SIM_BRAND_CODE
OTHER_BRAND = BRAND + 1  # a second, small brand in the same tables: every query must keep to its own
TARGET_MS = 300
BUDGET_KEY = "https://api.iys.org.tr"

FILL_SQL = """
INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient)
SELECT %(brand)s, g::text, 'phone', '+90532' || lpad((g %% (%(users)s - %(users)s / 200))::text, 7, '0')
  FROM generate_series(1, %(users)s) g WHERE g %% 20 <> 0;
INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient)
SELECT %(brand)s, g::text, 'email', 'user' || g || '@example.com' FROM generate_series(1, %(users)s) g WHERE g %% 10 < 7;

INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status, checked_at)
SELECT DISTINCT ON (recipient, t) %(brand)s, recipient, 'BIREYSEL', t,
       (ARRAY['ONAY', 'ONAY', 'RET', NULL])[1 + (hashtext(recipient || t) & 3)], now()
  FROM iys.user_recipients, unnest(ARRAY['MESAJ', 'ARAMA']) AS t
 WHERE brand_code = %(brand)s AND kind = 'phone';
INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status, checked_at)
SELECT %(brand)s, recipient, 'BIREYSEL', 'EPOSTA', (ARRAY['ONAY', 'RET', NULL])[1 + (hashtext(recipient) & 1)], now()
  FROM iys.user_recipients WHERE brand_code = %(brand)s AND kind = 'email';
INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status)
SELECT %(other)s, '+90542' || lpad(g::text, 7, '0'), 'BIREYSEL', 'MESAJ', 'ONAY' FROM generate_series(1, 1000) g;

INSERT INTO iys.rejected_recipients (brand_code, user_id, field, raw_value, reason)
SELECT %(brand)s, g::text, CASE WHEN g %% 3 = 0 THEN 'email' ELSE 'phone' END, 'raw-' || g,
       (ARRAY['EMPTY', 'PHONE_INVALID', 'PHONE_NOT_TR', 'PHONE_NOT_MOBILE', 'EMAIL_INVALID', 'EMAIL_TURKISH_CHARS'])[1 + g %% 6]
  FROM generate_series(1, %(users)s, 50) g;

INSERT INTO iys.initial_sync_scans (scan_id, brand_code, recipients_sql, batch_size, total_users, batch_count,
                                    started_at, finished_at)
VALUES (1, %(brand)s, 'q', 75000, %(users)s, 14, now() - interval '200 days', now() - interval '199 days'),
       (2, %(brand)s, 'q', 75000, %(users)s, 14, now() - interval '2 hours', NULL);
INSERT INTO iys.initial_sync_batches (scan_id, batch_no, first_user_id, last_user_id, users, requests, finished_at)
SELECT s, b, b::text, b::text || 'z',
       CASE WHEN s = 1 OR b < 7 THEN %(users)s / 14 END, CASE WHEN s = 1 OR b < 7 THEN 3 * %(users)s / 14000 END,
       CASE WHEN s = 1 THEN now() - interval '199 days' WHEN b < 7 THEN now() - make_interval(mins => 60 - b) END
  FROM generate_series(1, 2) s, generate_series(0, 13) b;
INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%(brand)s, 'initial_sync', now()),
                                                                     (%(other)s, 'initial_sync', now()),
                                                                     (%(brand)s, 'changes:IYS', now()),
                                                                     (%(brand)s, 'changes:HS', now());

INSERT INTO iys.sync_runs (run_id, brand_code, dag_id, started_at, finished_at, pulled_iys, pulled_hs, applied,
                           new_users_checked, pushed, skipped, rejected, failed, feed_lag_seconds)
SELECT 'scheduled__' || to_char(now() - make_interval(hours => g), 'YYYY-MM-DD"T"HH24:00:00'), b,
       'iys_incremental_sync', now() - make_interval(hours => g) - interval '5 minutes', now() - make_interval(hours => g),
       g %% 97, g %% 13, g %% 97, g %% 11, g %% 7, g %% 3, g %% 2, 0, 3600 + g %% 7200
  FROM generate_series(1, %(runs)s) g, (VALUES (%(brand)s), (%(other)s)) AS brands(b);

INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state, error_code,
                                 processed_at, created_at)
SELECT %(brand)s, 'user' || g || '@example.com', 'EPOSTA', CASE WHEN g %% 4 = 0 THEN 'ONAY' ELSE 'RET' END,
       now() - make_interval(hours => g %% 2000), 'HS_WEB',
       (ARRAY['sent', 'sent', 'sent', 'skipped', 'rejected'])[1 + g %% 5],
       CASE WHEN g %% 5 = 4 THEN (ARRAY['H174', 'H467', 'H101'])[1 + g %% 3] END,
       now() - make_interval(hours => g %% 2000), now() - make_interval(hours => g %% 2000)
  FROM generate_series(1, %(users)s / 10) g;
INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state, error_code)
SELECT %(brand)s, 'user' || g || '@example.com', 'EPOSTA', CASE WHEN g %% 2 = 0 THEN 'ONAY' ELSE 'RET' END,
       now() - make_interval(mins => g), 'HS_WEB', CASE WHEN g %% 10 = 0 THEN 'failed' ELSE 'pending' END,
       CASE WHEN g %% 10 = 0 THEN 'H500' END
  FROM generate_series(1, 2000) g;

INSERT INTO iys.api_responses (budget_key, hour, status, response_class, responses)
SELECT %(key)s, date_trunc('hour', now()) - make_interval(hours => h), s, c, 1000 + h %% 500
  FROM generate_series(0, 24 * 30) h,
       (VALUES (200, 'success'), (404, 'client_error'), (429, 'rate_limited'), (500, 'server_error'), (0, 'transport_error')) AS r(s, c);
INSERT INTO iys.token_requests (budget_key, account_key, grant_type, requested_at)
SELECT %(key)s, 'account', 'refresh_token', now() - make_interval(mins => 6 * g) FROM generate_series(1, 24 * 10 * 30) g;
INSERT INTO iys.ip_blocks (budget_key, blocked_until, block_reason) VALUES (%(key)s, now() + interval '30 minutes', 'H084');
INSERT INTO iys.rate_limiter (limiter_key, rate) VALUES (%(key)s, 8.7);

INSERT INTO iys.push_inbox (brand_code, transaction_id, channel, movement, creation_date, received_at,
                            last_delivery_at, applied_at, announced_at)
SELECT %(brand)s, 'push-' || g, t, jsonb_build_object('recipient', '+90532' || lpad(g::text, 7, '0'), 'type', t,
       'status', 'RET', 'source', 'IYS_KISAMESAJ', 'transactionId', 'push-' || g),
       now() - make_interval(secs => g * %(push_spacing)s + 1), now() - make_interval(secs => g * %(push_spacing)s),
       now() - make_interval(secs => g * %(push_spacing)s), now() - make_interval(secs => g * %(push_spacing)s),
       CASE WHEN g > 20 THEN now() - make_interval(secs => g * %(push_spacing)s) END
  FROM generate_series(1, %(users)s / 5) g, LATERAL (SELECT (ARRAY['MESAJ', 'ARAMA', 'EPOSTA'])[1 + g %% 3] AS t) c;
UPDATE iys.push_inbox SET applied_at = NULL, announced_at = NULL WHERE brand_code = %(brand)s AND transaction_id IN ('push-1', 'push-2');
INSERT INTO iys.push_channels (brand_code, channel, last_push_at, last_test_at)
SELECT %(brand)s, t, now() - interval '1 minute', now() - interval '90 days' FROM unnest(ARRAY['MESAJ', 'ARAMA', 'EPOSTA']) t;
INSERT INTO iys.push_quarantine (brand_code, channel, position, reason, item, item_hash, received_at)
SELECT %(brand)s, 'MESAJ', 0, 'no transactionId', '{}', md5(g::text), now() - make_interval(hours => g)
  FROM generate_series(1, 500) g;
"""


def fill(conn: psycopg.Connection, users: int, runs: int) -> float:
    """Fill the migrated ``iys`` schema for ``users`` users of BRAND; seconds taken (VACUUM ANALYZE included)."""
    started = time.monotonic()
    # A year of citizen-side movements by push, a fifth of the users' worth, evenly spaced.
    push_spacing = 365 * 86400 / max(users // 5, 1)
    params = {
        "brand": BRAND,
        "other": OTHER_BRAND,
        "users": users,
        "runs": runs,
        "key": BUDGET_KEY,
        "push_spacing": push_spacing,
    }
    for statement in filter(str.strip, FILL_SQL.split(";\n")):  # one statement per call: they take parameters
        conn.execute(statement, params)
    conn.execute("VACUUM ANALYZE")  # as autovacuum leaves a table that has settled: index-only scans need it
    return time.monotonic() - started


def panel_queries() -> dict[str, Callable[[psycopg.Connection], object]]:
    """What each panel of the page runs (``read_panels`` is all of them, as one page load)."""
    now = datetime.now(UTC)
    return {
        "brands (selector)": store.brands,
        "consents by channel × status": lambda c: store.consent_matrix(c, BRAND, None, None),
        "sendable users (recorded by the sync)": lambda c: recorded_sendable_counts(c, BRAND),
        "initial sync": lambda c: store.initial_sync_progress(c, BRAND),
        "last 30 runs": lambda c: store.recent_runs(c, BRAND),
        "feed read to its end (change streams)": lambda c: store.feed_read_to_end_at(c, BRAND),
        "outbox by state and code": lambda c: c.execute(store.OUTBOX_SQL, (BRAND,)).fetchall(),
        "outbox: unsent RETs by day": lambda c: unsent_rets_by_day(c, BRAND),
        "quarantine by reason": lambda c: c.execute(store.QUARANTINE_SQL, (BRAND,)).fetchall(),
        "İYS budget (per IP)": store.budget_keys,
        "reconciliation": lambda c: store.reconciliations(c, BRAND),
        "push receiver (per channel)": lambda c: store.push_health(c, BRAND, now),
        "whole page (read_panels)": lambda c: store.read_panels(c, BRAND, now, *recorded_sendable_counts(c, BRAND)),
    }


def time_query(dsn: str, query: Callable[[psycopg.Connection], object], repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` runs after one warm-up, each in the page's read-only transaction."""
    times = []
    with store.read_only(lambda: psycopg.connect(dsn)) as conn:
        query(conn)
        for _ in range(repeat):
            started = time.perf_counter()
            query(conn)
            times.append(1000 * (time.perf_counter() - started))
    return times


def bench(server: str, users: int, runs: int, repeat: int) -> list[str]:
    db_name = f"iys_bench_dashboard_{uuid.uuid4().hex[:8]}"
    dsn = local_stack.ensure_database(server, db_name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            seconds = fill(conn, users, runs)
            record_sendable_counts(conn, BRAND)
            consents = conn.execute("SELECT count(*) FROM iys.consents WHERE brand_code = %s", (BRAND,)).fetchone()[0]
        print(f"filled {users:,} users ({consents:,} consent rows, {runs:,} runs) in {seconds:.1f} s", flush=True)
        timings = []
        for name, query in panel_queries().items():
            times = time_query(dsn, query, repeat)
            timings.append({"users": users, "query": name, "times_ms": times, "page_query": True})
        times = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(max(1, repeat // 2)):
                started = time.perf_counter()
                record_sendable_counts(conn, BRAND)
                times.append(1000 * (time.perf_counter() - started))
        timings.append(
            {
                "users": users,
                "query": "counting sendable users (the sync, once at the end of a run; not a page query)",
                "times_ms": times,
                "page_query": False,
            }
        )
        return timings
    finally:
        local_stack.drop_database(server, db_name)


def table_row(timing: dict) -> str:
    median, slowest = statistics.median(timing["times_ms"]), max(timing["times_ms"])
    if not timing["page_query"]:
        verdict = "by the sync"
    elif slowest < TARGET_MS or timing["query"].startswith("whole page"):
        verdict = "✓"
    else:
        verdict = "✗ over target"
    return f"| {timing['users']:,} | {timing['query']} | {median:.1f} | {slowest:.1f} | {verdict} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1000000", help="comma-separated user counts")
    parser.add_argument("--runs", type=int, default=8760, help="incremental runs recorded (8,760: a year, hourly)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query, after one warm-up")
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    add_results_argument(parser, "dashboard")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)

    timings = []
    for users in (int(n) for n in args.users.split(",")):
        timings += bench(args.postgres_server, users, args.runs, args.repeat)
    rows = [table_row(timing) for timing in timings]
    print(
        f"\nİYS page queries, read-only transaction; {args.repeat} runs each after a warm-up (target < {TARGET_MS} ms)\n"
    )
    print("| users | panel query | median ms | slowest ms | target |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    write_results(args, "dashboard", {"target_ms": TARGET_MS, "timings": timings})
    return 0


if __name__ == "__main__":
    sys.exit(main())
