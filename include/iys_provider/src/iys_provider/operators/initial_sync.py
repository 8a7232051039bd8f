"""Operators of the initial sync: plan batches, check each batch against İYS, finish the scan.

Compose them with dynamic task mapping::

    plan = IysPlanInitialSyncOperator(task_id="plan_batches")
    batches = IysInitialSyncBatchOperator.partial(task_id="sync_batch", pool="iys_api").expand(batch=plan.output)
    plan >> batches >> IysFinishInitialSyncOperator(task_id="finish_scan")

A scan's plan is stored in ``iys.initial_sync_batches``; every run processes only the batches not
finished yet, so a run that dies halfway is simply run (or cleared) again.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import psycopg
from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowException

from iys_provider.consent_store import BatchLedgerEntry, write_checked_users
from iys_provider.hooks.iys import MAX_RECIPIENTS_PER_STATUS_CALL
from iys_provider.operators.base import IysBaseOperator
from iys_provider.recipients import prepare_users
from iys_provider.user_source import DEFAULT_RECIPIENTS_SQL, RECIPIENTS_SQL_VARIABLE, SourceUser, UserSource

#: Mapped task instances are scheduler and database rows; stay far below ``max_map_length`` (1024).
DEFAULT_MAX_BATCHES = 500
DEFAULT_BATCH_SIZE = 10_000
INITIAL_SYNC_STREAM = "initial_sync"
# Snapshotting a million users sorts them twice over; in memory that takes half the time, and
# JIT compilation costs more than it saves on a statement that runs once.
BULK_PLANNING_SETTINGS_SQL = "SET LOCAL work_mem = '256MB'; SET LOCAL jit = off"

OPEN_SCAN_SQL = """
SELECT scan_id, batch_count, total_users FROM iys.initial_sync_scans
 WHERE brand_code = %s AND finished_at IS NULL
"""
LAST_FINISHED_SCAN_SQL = """
SELECT scan_id, finished_at, total_users FROM iys.initial_sync_scans
 WHERE brand_code = %s AND finished_at IS NOT NULL AND NOT abandoned
 ORDER BY scan_id DESC LIMIT 1
"""
ABANDON_OPEN_SCAN_SQL = """
WITH abandoned AS (
    UPDATE iys.initial_sync_scans SET finished_at = now(), abandoned = true
     WHERE brand_code = %s AND finished_at IS NULL RETURNING scan_id
)
DELETE FROM iys.initial_sync_queue WHERE scan_id IN (SELECT scan_id FROM abandoned)
"""
INSERT_SCAN_SQL = """
INSERT INTO iys.initial_sync_scans (brand_code, recipients_sql, batch_size, total_users, batch_count)
VALUES (%s, %s, %s, 0, 0) RETURNING scan_id
"""
INSERT_BATCHES_SQL = """
WITH planned AS (
    INSERT INTO iys.initial_sync_batches (scan_id, batch_no, first_user_id, last_user_id)
    SELECT scan_id, batch_no, min(user_id COLLATE "C"), max(user_id COLLATE "C")
      FROM iys.initial_sync_queue WHERE scan_id = %(scan)s GROUP BY scan_id, batch_no
    RETURNING batch_no
)
UPDATE iys.initial_sync_scans SET total_users = %(users)s, batch_count = (SELECT count(*) FROM planned)
 WHERE scan_id = %(scan)s RETURNING batch_count
"""
PENDING_BATCHES_SQL = """
SELECT batch_no, first_user_id, last_user_id FROM iys.initial_sync_batches
 WHERE scan_id = %s AND finished_at IS NULL ORDER BY batch_no
"""
BATCH_SQL = """
SELECT b.finished_at, s.batch_count, s.brand_code, s.abandoned
  FROM iys.initial_sync_batches b JOIN iys.initial_sync_scans s USING (scan_id)
 WHERE b.scan_id = %s AND b.batch_no = %s
"""
QUEUED_USERS_SQL = """
SELECT user_id, phone, email, recipient_type, digest FROM iys.initial_sync_queue
 WHERE scan_id = %s AND batch_no = %s
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
 WHERE scan_id = %s AND finished_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM iys.initial_sync_batches WHERE scan_id = %s AND finished_at IS NULL)
RETURNING total_users
"""
MARK_STREAM_SYNCED_SQL = """
INSERT INTO iys.sync_state (brand_code, stream, last_success_at, details)
VALUES (%s, %s, now(), %s::jsonb)
ON CONFLICT (brand_code, stream) DO UPDATE
   SET last_success_at = EXCLUDED.last_success_at, details = EXCLUDED.details, updated_at = now()
"""


def choose_batch_size(total_users: int, requested: int, max_batches: int = DEFAULT_MAX_BATCHES) -> int:
    """The requested size, grown just enough that the batch count stays within ``max_batches``."""
    return max(requested, math.ceil(total_users / max_batches) if total_users else requested)


class PlannedScan(NamedTuple):
    scan_id: int
    users: int
    batch_count: int
    batch_size: int
    repeated_user_ids: int
    null_user_ids: int


def plan_scan(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    source: UserSource,
    batch_size: int,
    max_batches: int = DEFAULT_MAX_BATCHES,
) -> PlannedScan:
    """Snapshot every user of ``source`` into a new scan's numbered batches (call in a transaction)."""
    counts = source.count_rows(conn)
    size = choose_batch_size(counts.users, batch_size, max_batches)
    scan_id = conn.execute(INSERT_SCAN_SQL, (brand_code, source.recipients_sql, size)).fetchone()[0]
    conn.execute(BULK_PLANNING_SETTINGS_SQL)
    queued = source.enqueue_scan(conn, scan_id, size)
    # Fresh statistics, or every batch would plan a sequential scan of the whole queue.
    conn.execute("ANALYZE iys.initial_sync_queue")
    batch_count = conn.execute(INSERT_BATCHES_SQL, {"scan": scan_id, "users": queued}).fetchone()[0]
    return PlannedScan(scan_id, queued, batch_count, size, counts.users - queued, counts.null_user_ids)


def read_batch_users(conn: psycopg.Connection, scan_id: int, batch_no: int) -> list[SourceUser]:
    """The users a scan's batch snapshotted when it was planned."""
    return list(map(SourceUser._make, conn.execute(QUEUED_USERS_SQL, (scan_id, batch_no)).fetchall()))


class IysPlanInitialSyncOperator(IysBaseOperator):
    """Plan (or resume) a scan of every user; returns the batches still to process.

    The first run snapshots the users of the source query into numbered batches (one
    server-side ``INSERT … SELECT``); later runs return only the unfinished batches of the open
    scan, and nothing once the scan is complete (unless ``rescan``). The returned list is what
    ``IysInitialSyncBatchOperator`` is mapped over.

    :param recipients_sql: source query; default: the ``iys_recipients_sql`` Variable, else
        ``SELECT id::text AS user_id, phone, email FROM public.users``.
    :param batch_size: users per batch (grown automatically to keep ≤ ``max_batches`` batches).
    :param rescan: abandon the current or finished scan and start over.
    :param dry_run: plan and report, write nothing.
    """

    template_fields: Sequence[str] = (
        *IysBaseOperator.template_fields,
        "recipients_sql",
        "batch_size",
        "rescan",
        "dry_run",
    )

    def __init__(
        self,
        *,
        recipients_sql: str | None = None,
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        max_batches: int = DEFAULT_MAX_BATCHES,
        rescan: bool | str = False,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recipients_sql = recipients_sql
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.rescan = rescan
        self.dry_run = dry_run

    def execute(self, context) -> list[dict[str, Any]]:
        brand_code = self.iys_hook.brand_code
        sql_text = self.recipients_sql or Variable.get(RECIPIENTS_SQL_VARIABLE, default=DEFAULT_RECIPIENTS_SQL)
        source = UserSource(sql_text)
        conn = self.connect()
        try:
            if _truthy(self.dry_run):
                total = source.count_rows(conn).users
                size = choose_batch_size(total, int(self.batch_size), self.max_batches)
                self.log.info(
                    "Dry run: %d users would be processed in %d batches of up to %d; nothing written",
                    total,
                    math.ceil(total / size),
                    size,
                )
                return []
            with conn.transaction():
                if _truthy(self.rescan):
                    abandoned = conn.execute(ABANDON_OPEN_SCAN_SQL, (brand_code,)).rowcount
                    self.log.info("Rescan requested: starting over%s", " (open scan abandoned)" if abandoned else "")
                else:
                    open_scan = conn.execute(OPEN_SCAN_SQL, (brand_code,)).fetchone()
                    if open_scan:
                        return self._pending(conn, open_scan[0], open_scan[1], resumed=True)
                    finished = conn.execute(LAST_FINISHED_SCAN_SQL, (brand_code,)).fetchone()
                    if finished:
                        self.log.info(
                            "Every existing user was processed (scan %s finished %s, %s users); nothing to do. "
                            "New and changed users are picked up by iys_incremental_sync; trigger with "
                            "rescan=true to start over.",
                            finished[0],
                            finished[1],
                            finished[2],
                        )
                        return []
                plan = plan_scan(
                    conn,
                    brand_code=brand_code,
                    source=source,
                    batch_size=int(self.batch_size),
                    max_batches=self.max_batches,
                )
                if plan.repeated_user_ids:
                    self.log.warning(
                        "%d source rows repeat a user_id already seen; only the first row of each user is used",
                        plan.repeated_user_ids,
                    )
                if plan.null_user_ids:
                    self.log.warning(
                        "%d source rows have a NULL user_id and cannot be linked; fix the source query",
                        plan.null_user_ids,
                    )
                self.log.info(
                    "Planned scan %s: %d users in %d batches of up to %d",
                    plan.scan_id,
                    plan.users,
                    plan.batch_count,
                    plan.batch_size,
                )
                return self._pending(conn, plan.scan_id, plan.batch_count, resumed=False)
        finally:
            conn.close()

    def _pending(self, conn, scan_id: int, batch_count: int, *, resumed: bool) -> list[dict[str, Any]]:
        rows = conn.execute(PENDING_BATCHES_SQL, (scan_id,)).fetchall()
        if resumed:
            self.log.info("Resuming scan %s: %d of %d batches still to process", scan_id, len(rows), batch_count)
        return [
            {"scan_id": scan_id, "batch_no": no, "of": batch_count, "first": first, "last": last}
            for no, first, last in rows
        ]


class IysInitialSyncBatchOperator(IysBaseOperator):
    """Check one planned batch of users against İYS and record the result in one transaction.

    Reads the batch's users, normalises phones and e-mails (invalid ones go to
    ``iys.rejected_recipients`` with a reason), asks multi status about each unique recipient
    per channel in calls of ≤1000, then writes consents, user links, quarantine rows and the
    batch's completion together. A batch already finished (by an earlier try or run) is a no-op.

    :param batch: one element of ``IysPlanInitialSyncOperator``'s result.
    :param request_concurrency: status calls in flight at once; the shared rate limiter still
        bounds the aggregate rate, this only keeps latency from capping it.
    """

    def __init__(self, *, batch: dict[str, Any], request_concurrency: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch = batch
        self.request_concurrency = request_concurrency

    def execute(self, context) -> dict[str, Any]:
        scan_id, batch_no = int(self.batch["scan_id"]), int(self.batch["batch_no"])
        conn = self.connect()
        try:
            row = conn.execute(BATCH_SQL, (scan_id, batch_no)).fetchone()
            if row is None:
                raise AirflowException(f"batch {batch_no} of scan {scan_id} is not planned; rerun plan_batches")
            finished_at, batch_count, brand_code, abandoned = row
            if abandoned:
                # Its snapshot was dropped by a rescan, which covers these users again.
                self.log.info(
                    "Batch %d/%d belongs to scan %s, abandoned by a rescan; nothing to do",
                    batch_no + 1,
                    batch_count,
                    scan_id,
                )
                return {"batch_no": batch_no, "abandoned": True}
            if finished_at is not None:
                self.log.info(
                    "Batch %d/%d was already finished at %s; nothing to do", batch_no + 1, batch_count, finished_at
                )
                return {"batch_no": batch_no, "already_done": True}
            if brand_code != self.iys_hook.brand_code:
                raise AirflowException(
                    f"scan {scan_id} belongs to brand {brand_code}, the connection to brand {self.iys_hook.brand_code}"
                )
            started = time.monotonic()
            prepared = prepare_users(read_batch_users(conn, scan_id, batch_no))
            local_seconds = time.monotonic() - started
            checked_at = datetime.now(UTC)
            requests_before = self.iys_hook.stats.requests
            api_started = time.monotonic()
            onay = self.iys_hook.get_onay_recipients_by_channel(
                {key: sorted(recipients) for key, recipients in prepared.to_check.items()},
                concurrency=self.request_concurrency,
            )
            api_seconds = time.monotonic() - api_started
            requests = self.iys_hook.stats.requests - requests_before
            write_started = time.monotonic()
            outcome = write_checked_users(
                conn,
                brand_code=brand_code,
                prepared=prepared,
                onay=onay,
                checked_at=checked_at,
                requests=requests,
                ledger=BatchLedgerEntry(scan_id, batch_no),
            )
            write_seconds = time.monotonic() - write_started
            local_seconds += write_seconds
            self._log_progress(conn, scan_id, batch_no, batch_count, prepared, requests, api_seconds, local_seconds)
            return {
                "batch_no": batch_no,
                "users": prepared.users,
                "recipients": prepared.unique_recipients,
                "quarantined": outcome.quarantined,
                "status_changes": outcome.status_changes,
                "requests": requests,
                "retries": self.iys_hook.stats.retries,
                "rate_limited": self.iys_hook.stats.rate_limited,
                "api_seconds": round(api_seconds, 3),
                "local_seconds": round(local_seconds, 3),
                "write_seconds": round(write_seconds, 3),
                "rows_written": outcome.consents + outcome.links + prepared.users,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        finally:
            conn.close()
            self.iys_hook.close()

    def _log_progress(self, conn, scan_id, batch_no, batch_count, prepared, requests, api_seconds, local_seconds):
        done, total, users_done, elapsed = conn.execute(SCAN_PROGRESS_SQL, (scan_id,)).fetchone()
        eta = (total - done) * float(elapsed) / done if done else float("nan")
        self.log.info(
            "Batch %d/%d done: %d users, %d unique recipients, %d quarantined, %d İYS requests in %.1f s "
            "(%.2f req/s; %d ≤%d-recipient calls), local work %.2f s (%.0f users/s). Scan: %d/%d batches, "
            "%d users, ETA %s",
            batch_no + 1,
            batch_count,
            prepared.users,
            prepared.unique_recipients,
            prepared.quarantined,
            requests,
            api_seconds,
            requests / api_seconds if api_seconds else 0.0,
            prepared.planned_requests(),
            MAX_RECIPIENTS_PER_STATUS_CALL,
            local_seconds,
            prepared.users / local_seconds if local_seconds else 0.0,
            done,
            total,
            users_done,
            f"{eta:.0f} s" if eta == eta else "unknown",
        )


class IysFinishInitialSyncOperator(IysBaseOperator):
    """Close the scan once every batch is finished, and record it in ``iys.sync_state``.

    Fails (so the run is visibly incomplete) if batches remain; the next run resumes them.
    """

    def execute(self, context) -> dict[str, Any]:
        brand_code = self.iys_hook.brand_code
        conn = self.connect()
        try:
            open_scan = conn.execute(OPEN_SCAN_SQL, (brand_code,)).fetchone()
            if open_scan is None:
                self.log.info("No open scan: the initial sync is complete")
                return {"complete": True}
            scan_id = open_scan[0]
            with conn.transaction():
                finished = conn.execute(FINISH_SCAN_SQL, (scan_id, scan_id)).fetchone()
                if finished is None:
                    pending = len(conn.execute(PENDING_BATCHES_SQL, (scan_id,)).fetchall())
                    raise AirflowException(
                        f"Scan {scan_id} still has {pending} unfinished batches; the next run (or clearing the "
                        "failed sync_batch tasks) resumes them."
                    )
                conn.execute(
                    MARK_STREAM_SYNCED_SQL,
                    (brand_code, INITIAL_SYNC_STREAM, f'{{"scan_id": {scan_id}, "users": {finished[0]}}}'),
                )
            summary = conn.execute(SUMMARY_SQL, {"brand": brand_code}).fetchall()
            self.log.info("Initial sync scan %s complete: %d users. Consents now:", scan_id, finished[0])
            for ctype, onay, ret, none in summary:
                self.log.info("  %-6s ONAY %d, RET %d, none %d", ctype, onay, ret, none)
            return {"complete": True, "scan_id": scan_id, "users": finished[0]}
        finally:
            conn.close()


SUMMARY_SQL = """
SELECT type, count(*) FILTER (WHERE status = 'ONAY'), count(*) FILTER (WHERE status = 'RET'),
       count(*) FILTER (WHERE status IS NULL)
  FROM iys.consents WHERE brand_code = %(brand)s GROUP BY type ORDER BY type
"""


def _truthy(value: object) -> bool:
    """Params rendered without native objects arrive as strings."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
