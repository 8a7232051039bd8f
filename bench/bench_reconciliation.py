"""Benchmark of the reconciliation's hash: one day of movements, from Postgres, in İYS's file format, SHA-384.

Run from the repo root (``make bench-reconciliation`` / ``make bench-reconciliation RECONCILIATION_DAYS=100000,1000000``)::

    .venv/bin/python bench/bench_reconciliation.py --days 100000,1000000

It creates a throw-away database, fills ``iys.consent_events`` with one day of N movements per size
(each size its own day; phones and e-mails, both streams, TACIR rows without a consent date, about
200 bytes a row as İYS's file), then hashes each day exactly as ``IysReconcileDayOperator`` does:
``reconciliation_store.stream_day_file`` (``COPY … TO STDOUT``, the server formats the rows) into
``reconciliation.MultiHasher`` (SHA-384 and SHA-256 in one pass). For each size it prints the rows,
the file's bytes, wall seconds, MB/s, and this process's peak RSS during the hash, measured from a
fresh high-water mark (Linux ``clear_refs``): memory must not grow with the day's size.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import date, timedelta

import psycopg
from bench_support import (
    POSTGRES_SERVER_HELP,
    add_results_argument,
    local_stack,
    peak_rss_mb,
    postgres_server_uri,
    print_peak_rss_growth,
    reset_peak_rss,
    rss_mb,
    write_results,
)

from iys_provider.reconciliation.rules import LITERAL, MultiHasher, file_format, turkey_day_bounds
from iys_provider.reconciliation.store import stream_day_file
from iys_provider.schema import migrate

BRAND_CODE = local_stack.SIM_BRAND_CODE
FIRST_DAY = date(2026, 11, 1)

# One day of ``rows`` movements, spread over its 86,400 seconds, made by the server (no client memory).
FILL_DAY_SQL = """
INSERT INTO iys.consent_events (transaction_id, brand_code, recipient, recipient_type, type, status,
                                consent_date, creation_date, source, stream)
SELECT md5(%(day)s::text || n) || md5(n || %(day)s::text),
       %(brand)s,
       CASE WHEN n %% 3 = 2 THEN 'user' || n || '@example.com' ELSE '+90532' || lpad((n %% 10000000)::text, 7, '0') END,
       CASE WHEN n %% 10 = 0 THEN 'TACIR' ELSE 'BIREYSEL' END,
       (ARRAY['MESAJ', 'ARAMA', 'EPOSTA'])[n %% 3 + 1],
       CASE WHEN n %% 4 = 0 THEN 'RET' ELSE 'ONAY' END,
       CASE WHEN n %% 10 = 0 THEN NULL ELSE %(start)s::timestamptz + (n %% 86400) * interval '1 second'
                                                - interval '1 minute' END,
       %(start)s::timestamptz + (n %% 86400) * interval '1 second',
       CASE WHEN n %% 5 = 0 THEN 'IYS_MOBIL' ELSE 'HS_WEB' END,
       CASE WHEN n %% 5 = 0 THEN 'IYS' ELSE 'HS' END
  FROM generate_series(1, %(rows)s) AS n
"""


def fill_day(conn: psycopg.Connection, day: date, rows: int) -> float:
    started = time.perf_counter()
    start, _ = turkey_day_bounds(day)
    conn.execute(FILL_DAY_SQL, {"day": day, "brand": BRAND_CODE, "start": start, "rows": rows})
    return time.perf_counter() - started


def hash_day(conn: psycopg.Connection, day: date, fmt_name: str) -> dict:
    fmt = file_format(fmt_name) or LITERAL  # 'auto' writes the day as the first guess does
    measured = reset_peak_rss()
    before = rss_mb()
    hasher = MultiHasher()
    started = time.perf_counter()
    rows = stream_day_file(conn, BRAND_CODE, day, fmt, hasher.update)
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "bytes": hasher.size,
        "seconds": seconds,
        "rss_before": before,
        "peak_rss": peak_rss_mb(),
        "fresh_peak": measured,
        "sha384": hasher.hexdigests()["sha384"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", default="100000,1000000", help="movements per day, one day per size")
    parser.add_argument("--file-format", default="literal")
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    parser.add_argument("--keep", action="store_true", help="keep the throw-away database")
    add_results_argument(parser, "reconciliation")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)
    sizes = [int(size) for size in args.days.split(",") if size.strip()]

    db_name = f"iys_bench_reconciliation_{uuid.uuid4().hex[:8]}"
    dsn = local_stack.ensure_database(args.postgres_server, db_name)
    results = []
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            days = [FIRST_DAY + timedelta(days=i) for i in range(len(sizes))]
            for day, size in zip(days, sizes, strict=True):
                fill = fill_day(conn, day, size)
                print(f"filled {day} with {size:,} movements in {fill:.1f} s", flush=True)
            conn.execute("VACUUM ANALYZE iys.consent_events")
            hash_day(conn, days[0], args.file_format)  # warm-up: imports, plan cache, first blocks
            for day, size in zip(days, sizes, strict=True):
                results.append((size, hash_day(conn, day, args.file_format)))
    finally:
        if not args.keep:
            local_stack.drop_database(args.postgres_server, db_name)

    print(f"\nhash of one day in the '{args.file_format}' format (COPY from Postgres → SHA-384 + SHA-256, one pass)")
    print(
        f"{'movements':>10} {'file MB':>8} {'seconds':>8} {'MB/s':>7} {'rows/s':>10} {'RSS before':>11} {'peak RSS':>9}"
    )
    for size, r in results:
        megabytes = r["bytes"] / 1e6
        print(
            f"{r['rows']:>10,} {megabytes:>8.1f} {r['seconds']:>8.2f} {megabytes / r['seconds']:>7.1f} "
            f"{r['rows'] / r['seconds']:>10,.0f} {r['rss_before'] or 0:>9.1f} MB {r['peak_rss']:>6.1f} MB"
        )
        assert r["rows"] == size, f"expected {size} rows, hashed {r['rows']}"
    if len(results) >= 2:
        (small, a), (large, b) = results[0], results[-1]
        print_peak_rss_growth(a, b, small, large)
    write_results(args, "reconciliation", [{"movements": size, **r} for size, r in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
