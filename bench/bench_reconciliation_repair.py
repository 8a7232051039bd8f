"""Benchmark of the reconciliation's repair path: download İYS's file, read and diff it, store what we lack.

Run from the repo root (``make bench-reconciliation-repair`` /
``make bench-reconciliation-repair REPAIR_DAYS=100000,1000000 REPAIR_MISSING=0.1``)::

    .venv/bin/python bench/bench_reconciliation_repair.py --days 100000,1000000 --missing 0.1

For each size it makes a throw-away database with one day of N movements (the rows of
``bench_reconciliation.py``: phones and e-mails, both streams, TACIR rows without a consent date),
writes İYS's file of the day from them (``literal`` reading, or ``--reading``), then deletes the
``--missing`` share of the day's movements from ``iys.consent_events`` (the feed "lost" them) and
runs the steps ``IysReconcileDayOperator`` runs when the hashes differ, with its functions:

1. **download**: a streamed GET of the file from a local HTTP server in another process, in 1 MiB
   blocks to a temporary file, as ``IysHook.download_daily_file`` does, then the served bytes
   hashed (SHA-384 + SHA-256) and the reading recognised from the first 64 KiB;
2. **diff**: ``load_iys_file`` (every line read or reported) and ``compare_with_file``;
3. **store**: ``repair_from_file`` through the change feed's ``store_change_page`` (1000 a page);
4. **re-hash**: our file of the day again, which must now hash to the file's value.

A file without status (``--reading faq_seven_columns``) asks an in-process stand-in for İYS's
multi status (the calls are counted, not sent). It prints, per size, the seconds of each step,
the total, movements per second and this process's peak RSS from a fresh high-water mark (Linux
``clear_refs``): the goal is a peak RSS flat in the day's size.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import psycopg
import requests
from bench_reconciliation import BRAND_CODE, fill_day
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

from iys_provider.reconciliation.rules import (
    MultiHasher,
    detect_file_format,
    file_format,
    hash_stream,
    turkey_day_bounds,
)
from iys_provider.reconciliation.store import (
    compare_with_file,
    drop_file_stage,
    load_iys_file,
    repair_from_file,
    save_reconciliation,
    stream_day_file,
)
from iys_provider.schema import migrate

FIRST_DAY = date(2026, 11, 1)
CHUNK = 1 << 20

DROP_SQL = """
DELETE FROM iys.consent_events
 WHERE brand_code = %(brand)s AND creation_date >= %(start)s AND creation_date < %(end)s
   AND abs(hashtext(transaction_id)) %% 1000 < %(per_mille)s
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FileServer:
    """``python -m http.server`` over a folder, in its own process (its memory is not ours)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.head(self.url, timeout=1)
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the local file server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class StatusStandIn:
    """İYS's multi status for the benchmark: the addresses the day's file holds as ONAY, calls counted."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.calls = 0

    def __call__(self, recipient_type: str, channel: str, recipients: list[str]) -> set[str]:
        if len(recipients) > 1000:
            raise AssertionError("multi status takes at most 1000 recipients a call")
        self.calls += 1
        # The bench's rows: ONAY unless n % 4 == 0; the truth is the deleted rows' statuses, kept aside.
        rows = self.conn.execute(
            "SELECT recipient FROM bench_truth WHERE recipient_type = %s AND type = %s AND recipient = ANY(%s) "
            "AND status = 'ONAY'",
            (recipient_type, channel, recipients),
        ).fetchall()
        return {row[0] for row in rows}


def run_size(conn: psycopg.Connection, day: date, size: int, missing: float, reading: str, workdir: Path, server):
    fmt = file_format(reading)
    fill_seconds = fill_day(conn, day, size)
    served_name = f"iys_{day}.csv"
    with (workdir / served_name).open("wb") as out:
        stream_day_file(conn, BRAND_CODE, day, fmt, out.write)
    start, end = turkey_day_bounds(day)
    conn.execute("DROP TABLE IF EXISTS bench_truth")
    conn.execute(
        "CREATE TEMP TABLE bench_truth AS SELECT recipient, recipient_type, type, status FROM iys.consent_events "
        "WHERE brand_code = %(brand)s AND creation_date >= %(start)s AND creation_date < %(end)s "
        "AND abs(hashtext(transaction_id)) %% 1000 < %(per_mille)s",
        {"brand": BRAND_CODE, "start": start, "end": end, "per_mille": round(missing * 1000)},
    )
    conn.execute("CREATE INDEX ON bench_truth (recipient)")
    dropped = conn.execute(
        DROP_SQL, {"brand": BRAND_CODE, "start": start, "end": end, "per_mille": round(missing * 1000)}
    ).rowcount
    save_reconciliation(conn, BRAND_CODE, day, run_id="bench")
    conn.execute("VACUUM ANALYZE iys.consent_events")
    print(f"{day}: {size:,} movements filled in {fill_seconds:.1f} s, {dropped:,} dropped from ours", flush=True)

    lookup = StatusStandIn(conn)
    measured = reset_peak_rss()
    before = rss_mb()
    times: dict[str, float] = {}
    started = time.perf_counter()
    iys_path = workdir / "download.csv"
    with requests.get(f"{server.url}/{served_name}", stream=True, timeout=60) as response, iys_path.open("wb") as out:
        response.raise_for_status()
        size_bytes = 0
        for block in response.iter_content(chunk_size=CHUNK):
            out.write(block)
            size_bytes += len(block)
    with iys_path.open("rb") as source:
        file_hasher, head = hash_stream(source, CHUNK)
    detected = detect_file_format(head).fmt
    assert detected == fmt, (detected, fmt)
    times["download"] = time.perf_counter() - started

    mark = time.perf_counter()
    try:
        with iys_path.open("rb") as lines:
            file_reading = load_iys_file(conn, lines, detected)
        with_status = "status" in file_reading.columns
        difference = compare_with_file(conn, BRAND_CODE, day, with_status=with_status)
        times["diff"] = time.perf_counter() - mark
        mark = time.perf_counter()
        outcome = repair_from_file(conn, BRAND_CODE, day, with_status=with_status, onay_lookup=lookup)
        times["store"] = time.perf_counter() - mark
    finally:
        drop_file_stage(conn)
    mark = time.perf_counter()
    ours = MultiHasher()
    rows = stream_day_file(conn, BRAND_CODE, day, detected, ours.update)
    times["rehash"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - started
    peak = peak_rss_mb()
    assert file_reading.rows == size and file_reading.unreadable == 0, file_reading.to_json()
    assert difference.total("missing") == dropped and difference.total("extra") == 0
    assert outcome.stored == dropped and rows == size
    assert ours.hexdigests() == file_hasher.hexdigests(), "after the repair our file must hash to İYS's"
    iys_path.unlink()
    (workdir / served_name).unlink()
    return {
        "rows": size,
        "bytes": size_bytes,
        "missing": dropped,
        "times": times,
        "rss_before": before,
        "peak_rss": peak,
        "fresh_peak": measured,
        "status_calls": lookup.calls,
        "status_from": outcome.status_from,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", default="100000,1000000", help="movements per day, one day per size")
    parser.add_argument("--missing", type=float, default=0.1, help="share of the day's movements our side lacks")
    parser.add_argument("--reading", default="literal", help="the reading İYS's file is served in")
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    parser.add_argument("--keep", action="store_true", help="keep the throw-away database")
    add_results_argument(parser, "reconciliation_repair")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)
    sizes = [int(size) for size in args.days.split(",") if size.strip()]
    if not 0 < args.missing <= 1:
        parser.error("--missing is a share of the day: more than 0, at most 1")

    db_name = f"iys_bench_reconciliation_repair_{uuid.uuid4().hex[:8]}"
    dsn = local_stack.ensure_database(args.postgres_server, db_name)
    results = []
    with tempfile.TemporaryDirectory(prefix="iys-bench-repair-") as folder:
        server = FileServer(Path(folder))
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate(conn)
                for index, size in enumerate(sizes):
                    day = FIRST_DAY + timedelta(days=index)
                    results.append(run_size(conn, day, size, args.missing, args.reading, Path(folder), server))
        finally:
            server.stop()
            if not args.keep:
                local_stack.drop_database(args.postgres_server, db_name)

    print(
        f"\nrepair path of one day, İYS's file in the '{args.reading}' reading, {args.missing:.0%} of it missing "
        "from ours (download over local HTTP → read + diff in Postgres → store through the feed's rules → re-hash)"
    )
    print(
        f"{'movements':>10} {'file MB':>8} {'missing':>9} {'download':>9} {'diff':>7} {'store':>7} {'re-hash':>8} "
        f"{'total s':>8} {'rows/s':>9} {'RSS before':>11} {'peak RSS':>9}"
    )
    for r in results:
        t = r["times"]
        print(
            f"{r['rows']:>10,} {r['bytes'] / 1e6:>8.1f} {r['missing']:>9,} {t['download']:>9.2f} {t['diff']:>7.2f} "
            f"{t['store']:>7.2f} {t['rehash']:>8.2f} {t['total']:>8.2f} {r['rows'] / t['total']:>9,.0f} "
            f"{r['rss_before'] or 0:>8.1f} MB {r['peak_rss']:>6.1f} MB"
        )
        if r["status_from"] == "multi_status":
            print(f"{'':>10} statuses from multi status: {r['status_calls']:,} calls of at most 1000 addresses")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print_peak_rss_growth(a, b, a["rows"], b["rows"])
    write_results(args, "reconciliation_repair", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
