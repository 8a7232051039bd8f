"""SQL of the initial sync's ledger: planning a scan, its queue of users, its batches, finishing it.

The rules and states are in :mod:`iys_provider.initial_sync.scan_ledger`. "The initial sync is done" has one
definition here (:func:`last_finished_scan`), used by the initial sync, the new-users check and
the change feed's 7-day guard alike.

Planning a scan also forgets the brand's known users its snapshot does not hold: they left the
source (:mod:`iys_provider.people.leavers`), in the plan's transaction, so a plan the safety rule refuses
(or that fails) forgets nobody and plans nothing.
"""

from __future__ import annotations

import json
from itertools import accumulate

import psycopg

from iys_provider.database import second_connection
from iys_provider.initial_sync.scan_claims_store import drop_claims
from iys_provider.initial_sync.scan_ledger import (
    DEFAULT_MAX_BATCHES,
    DEFAULT_PARALLEL_BATCHES,
    INITIAL_SYNC_STREAM,
    BatchRecord,
    FinishedScan,
    OpenScan,
    PendingBatch,
    PlannedScan,
    ScanBatch,
    ScanProgress,
    ScanSchedule,
    ScanStep,
    batch_sizes,
    next_scan_step,
)
from iys_provider.models import DEFAULT_MAX_LEAVER_SHARE, Forgotten, SourceUser
from iys_provider.people.leavers_store import forget_leavers
from iys_provider.people.user_source import UserSource

OPEN_SCAN_SQL = """
SELECT scan_id, batch_count, total_users FROM iys.initial_sync_scans
 WHERE brand_code = %s AND finished_at IS NULL
"""
# The latest start wins: the change feed's guard counts from the moment the scan read İYS.
LAST_FINISHED_SCAN_SQL = """
SELECT scan_id, started_at, finished_at, total_users FROM iys.initial_sync_scans
 WHERE brand_code = %s AND finished_at IS NOT NULL AND NOT abandoned
 ORDER BY started_at DESC, scan_id DESC LIMIT 1
"""
ABANDON_OPEN_SCAN_SQL = """
WITH abandoned AS (
    UPDATE iys.initial_sync_scans SET finished_at = now(), abandoned = true
     WHERE brand_code = %s AND finished_at IS NULL RETURNING scan_id
), dropped AS (
    DELETE FROM iys.initial_sync_queue WHERE scan_id IN (SELECT scan_id FROM abandoned)
)
SELECT scan_id FROM abandoned
"""
INSERT_SCAN_SQL = """
INSERT INTO iys.initial_sync_scans (brand_code, recipients_sql, batch_size, total_users, batch_count)
VALUES (%s, %s, %s, 0, 0) RETURNING scan_id
"""
# Snapshotting a million users sorts them (user_id order); in memory that takes half the time, and
# JIT compilation costs more than it saves on a statement that runs once. Set for the source's
# read-only transaction only.
BULK_READ_SETTINGS = {"work_mem": "256MB", "jit": "off"}
# The source query runs read-only on a connection of its own; its users are copied from there
# into the package's own queue.
COPY_QUEUE_SQL = """
COPY iys.initial_sync_queue (scan_id, batch_no, user_id, phone, email, recipient_type, digest) FROM STDIN
"""
COPY_BATCHES_SQL = "COPY iys.initial_sync_batches (scan_id, batch_no, first_user_id, last_user_id) FROM STDIN"
RECORD_PLAN_SQL = """
UPDATE iys.initial_sync_scans SET batch_size = %(size)s, total_users = %(users)s, batch_count = %(batches)s
 WHERE scan_id = %(scan)s
"""
# Fresh statistics, or every batch would plan a sequential scan of the whole queue.
ANALYZE_QUEUE_SQL = "ANALYZE iys.initial_sync_queue"
# Leavers at plan time. The queue was just analysed, so this is one anti-join, not a lookup per known user.
UNQUEUED_USERS_SQL = """
SELECT us.user_id FROM iys.user_sources us
 WHERE us.brand_code = %(brand)s
   AND NOT EXISTS (SELECT FROM iys.initial_sync_queue q WHERE q.scan_id = %(scan)s AND q.user_id = us.user_id)
 ORDER BY us.user_id COLLATE "C"
"""
PENDING_BATCHES_SQL = """
SELECT batch_no, first_user_id, last_user_id FROM iys.initial_sync_batches
 WHERE scan_id = %s AND finished_at IS NULL ORDER BY batch_no
"""
BATCH_RECORD_SQL = """
SELECT b.finished_at, s.batch_count, s.brand_code, s.abandoned
  FROM iys.initial_sync_batches b JOIN iys.initial_sync_scans s USING (scan_id)
 WHERE b.scan_id = %s AND b.batch_no = %s
"""
QUEUED_USERS_SQL = """
SELECT user_id, phone, email, recipient_type, digest FROM iys.initial_sync_queue
 WHERE scan_id = %s AND batch_no = %s
"""
FINISH_BATCH_SQL = """
WITH done AS (
    UPDATE iys.initial_sync_batches
       SET users = %(users)s, recipients = %(recipients)s, quarantined = %(quarantined)s,
           requests = %(requests)s, finished_at = now()
     WHERE scan_id = %(scan_id)s AND batch_no = %(batch_no)s
)
DELETE FROM iys.initial_sync_queue WHERE scan_id = %(scan_id)s AND batch_no = %(batch_no)s
"""
SCAN_PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE b.finished_at IS NOT NULL), count(*),
       coalesce(sum(b.users) FILTER (WHERE b.finished_at IS NOT NULL), 0),
       extract(epoch FROM clock_timestamp() - s.started_at)
  FROM iys.initial_sync_batches b JOIN iys.initial_sync_scans s USING (scan_id)
 WHERE b.scan_id = %s GROUP BY s.started_at
"""
FINISH_SCAN_SQL = """
UPDATE iys.initial_sync_scans SET finished_at = now()
 WHERE scan_id = %(scan_id)s AND finished_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM iys.initial_sync_batches WHERE scan_id = %(scan_id)s AND finished_at IS NULL)
RETURNING total_users
"""
MARK_SCAN_SYNCED_SQL = """
INSERT INTO iys.sync_state (brand_code, stream, last_success_at, details)
VALUES (%s, %s, now(), %s::jsonb)
ON CONFLICT (brand_code, stream) DO UPDATE
   SET last_success_at = EXCLUDED.last_success_at, details = EXCLUDED.details, updated_at = now()
"""


def open_scan(conn: psycopg.Connection, brand_code: int) -> OpenScan | None:
    row = conn.execute(OPEN_SCAN_SQL, (brand_code,)).fetchone()
    return OpenScan._make(row) if row else None


def last_finished_scan(conn: psycopg.Connection, brand_code: int) -> FinishedScan | None:
    """The brand's most recent scan that processed every user (an abandoned one never counts)."""
    row = conn.execute(LAST_FINISHED_SCAN_SQL, (brand_code,)).fetchone()
    return FinishedScan._make(row) if row else None


def initial_sync_done(conn: psycopg.Connection, brand_code: int) -> bool:
    return last_finished_scan(conn, brand_code) is not None


def abandon_open_scan(conn: psycopg.Connection, brand_code: int) -> bool:
    """Abandon the brand's open scan and drop its queue and claims; whether there was one."""
    abandoned = [row[0] for row in conn.execute(ABANDON_OPEN_SCAN_SQL, (brand_code,)).fetchall()]
    for scan_id in abandoned:
        drop_claims(conn, scan_id)
    return bool(abandoned)


def plan_scan(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    source: UserSource,
    batch_size: int,
    max_batches: int = DEFAULT_MAX_BATCHES,
    parallel_batches: int = DEFAULT_PARALLEL_BATCHES,
) -> PlannedScan:
    """Snapshot every user of ``source`` into a new scan's numbered batches (call in a transaction).

    The source is read once, in a read-only transaction on a second connection
    (:meth:`~iys_provider.people.user_source.UserSource.read_snapshot`), and streamed into the queue by
    COPY in the caller's transaction: PostgreSQL cannot run one statement partly read-only, and
    the source must never run with the right to write. Its rows arrive counted and sorted, so
    they are numbered into batches (:func:`~iys_provider.initial_sync.scan_ledger.batch_sizes` of the rows
    with a user_id, as counted before the first is read) and each batch's first and last user
    id noted on the way. A user_id the query returns twice is ambiguous; the first row in a
    stable order is kept.
    """
    with second_connection(conn) as reader:
        rows, snapshot = source.read_snapshot(reader, settings=BULK_READ_SETTINGS)
        scan_id = conn.execute(INSERT_SCAN_SQL, (brand_code, source.recipients_sql, batch_size)).fetchone()[0]
        nulls = repeated = queued = 0
        sizes: tuple[int, ...] = ()
        ends = iter(())  # where each planned batch ends, in users queued
        end = batch_no = 0
        firsts: list[str] = []
        lasts: list[str] = []
        previous = None
        with conn.cursor() as cur, cur.copy(COPY_QUEUE_SQL) as copy:
            write = copy.write_row
            for user in snapshot:
                user_id = user[0]
                if user_id is None:
                    nulls += 1
                    continue
                if user_id == previous:
                    repeated += 1
                    continue
                if not sizes:
                    # NULL user_ids come first: once past them, the rows to number are known.
                    sizes = batch_sizes(rows - nulls, batch_size, max_batches=max_batches, parallel=parallel_batches)
                    ends = accumulate(sizes)
                if queued == end:
                    if firsts:
                        lasts.append(previous)
                    batch_no = len(firsts)
                    firsts.append(user_id)
                    end = next(ends)
                write((scan_id, batch_no, *user))
                queued += 1
                previous = user_id
        if firsts:
            lasts.append(previous)
    with conn.cursor() as cur, cur.copy(COPY_BATCHES_SQL) as copy:
        for number, first_last in enumerate(zip(firsts, lasts, strict=True)):
            copy.write_row((scan_id, number, *first_last))
    size = max(sizes, default=batch_size)
    conn.execute(RECORD_PLAN_SQL, {"size": size, "users": queued, "batches": len(firsts), "scan": scan_id})
    conn.execute(ANALYZE_QUEUE_SQL)
    return PlannedScan(scan_id, queued, len(firsts), size, repeated, nulls)


def pending_batches(conn: psycopg.Connection, scan_id: int) -> tuple[PendingBatch, ...]:
    return tuple(map(PendingBatch._make, conn.execute(PENDING_BATCHES_SQL, (scan_id,)).fetchall()))


def unqueued_users(conn: psycopg.Connection, brand_code: int, scan_id: int) -> list[str]:
    """User ids of the brand's known users that the snapshot of ``scan_id`` does not hold."""
    return [row[0] for row in conn.execute(UNQUEUED_USERS_SQL, {"brand": brand_code, "scan": scan_id})]


def schedule_scan(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    source: UserSource,
    batch_size: int,
    max_batches: int = DEFAULT_MAX_BATCHES,
    parallel_batches: int = DEFAULT_PARALLEL_BATCHES,
    rescan: bool = False,
    max_leaver_share: float = DEFAULT_MAX_LEAVER_SHARE,
) -> tuple[ScanSchedule, Forgotten]:
    """Plan a scan, resume the open one, or find the last one finished: one transaction.

    A new plan forgets the known users its snapshot does not hold, in that transaction; a refusal
    of the safety rule (:class:`~iys_provider.people.leavers.TooManyLeaversError`) rolls the plan back,
    a rescan's abandoning of the open scan included.
    """
    with conn.transaction():
        current, finished = open_scan(conn, brand_code), last_finished_scan(conn, brand_code)
        step = next_scan_step(rescan=rescan, open_scan=current, last_finished=finished)
        if step is ScanStep.DONE:
            return ScanSchedule(step, last_finished=finished), Forgotten()
        if step is ScanStep.RESUME:
            pending = pending_batches(conn, current.scan_id)
            return ScanSchedule(step, current.scan_id, current.batch_count, pending), Forgotten()
        abandoned = abandon_open_scan(conn, brand_code) if step is ScanStep.RESCAN else False
        plan = plan_scan(
            conn,
            brand_code=brand_code,
            source=source,
            batch_size=batch_size,
            max_batches=max_batches,
            parallel_batches=parallel_batches,
        )
        forgotten = forget_leavers(
            conn,
            brand_code=brand_code,
            user_ids=unqueued_users(conn, brand_code, plan.scan_id),
            max_share=max_leaver_share,
            open_scan_queue=False,
        )
        schedule = ScanSchedule(
            step,
            plan.scan_id,
            plan.batch_count,
            pending_batches(conn, plan.scan_id),
            planned=plan,
            abandoned_open_scan=abandoned,
        )
        return schedule, forgotten


def read_batch_record(conn: psycopg.Connection, batch: ScanBatch) -> BatchRecord | None:
    row = conn.execute(BATCH_RECORD_SQL, batch).fetchone()
    return BatchRecord._make(row) if row else None


def read_batch_users(conn: psycopg.Connection, batch: ScanBatch) -> list[SourceUser]:
    """The users the batch snapshotted when its scan was planned."""
    return list(map(SourceUser._make, conn.execute(QUEUED_USERS_SQL, batch).fetchall()))


def finish_batch(
    conn: psycopg.Connection, batch: ScanBatch, *, users: int, recipients: int, quarantined: int, requests: int
) -> None:
    """Record the batch as done and drop its queue rows; call it in the transaction that wrote its users."""
    conn.execute(
        FINISH_BATCH_SQL,
        {
            "users": users,
            "recipients": recipients,
            "quarantined": quarantined,
            "requests": requests,
            "scan_id": batch.scan_id,
            "batch_no": batch.batch_no,
        },
    )


def scan_progress(conn: psycopg.Connection, scan_id: int) -> ScanProgress:
    done, total, users_done, elapsed = conn.execute(SCAN_PROGRESS_SQL, (scan_id,)).fetchone()
    return ScanProgress(done, total, users_done, float(elapsed))


def finish_scan(conn: psycopg.Connection, brand_code: int, scan_id: int) -> int | None:
    """Close the scan, drop its claims and record it in ``iys.sync_state``; its user count, or None while batches remain."""
    with conn.transaction():
        row = conn.execute(FINISH_SCAN_SQL, {"scan_id": scan_id}).fetchone()
        if row is None:
            return None
        drop_claims(conn, scan_id)
        details = json.dumps({"scan_id": scan_id, "users": row[0]})
        conn.execute(MARK_SCAN_SYNCED_SQL, (brand_code, INITIAL_SYNC_STREAM, details))
    return row[0]
