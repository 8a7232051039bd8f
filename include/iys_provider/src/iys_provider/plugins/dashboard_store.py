"""SQL of the İYS page: read-only queries on schema ``iys``, one per panel (the meaning is in ``dashboard``).

Each query answers from an index or a small table, so a panel stays fast at a million users
(``make bench-dashboard`` times each): consent counts from an index-only scan of
``consents_brand_type_status`` (V014), the outbox and quarantine from ``(brand_code, state,
error_code)`` and ``(brand_code, reason)`` indexes, runs from ``sync_runs_brand_finished``, the
İYS budget from the hourly ledger and the per-IP rows of the shared state. The ``iys.sendable``
count, a join of two tables of a million rows each, is not counted here: the sync's tasks record
it at the end of each run (``iys.sendable_counts``, V015) and the page shows it with the time it
was counted. The push panel reads the receiver's inbox tables (V019); :func:`push_panel` is
also served alone, for the page to refresh it every 30 seconds.

Everything runs in a ``READ ONLY`` transaction, so the page cannot change what it shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from iys_provider.hooks.settings import extra_default
from iys_provider.limits.success_ratio_store import success_ratio_24h
from iys_provider.models import IYS_TIMEZONE
from iys_provider.outbox.deadline_watch import ret_deadline, watch_ret_deadlines
from iys_provider.outbox.store import (
    acknowledged_rets,
    held_out_now,
    held_updates,
    undelivered_rets,
    unsent_rets_by_day,
)
from iys_provider.plugins.dashboard import (
    CHANNELS,
    PUSH_QUARANTINE_WINDOW,
    PUSH_RECENT,
    RECONCILIATION_DAY_TASK,
    RUNS_SHOWN,
    BudgetKey,
    ConsentMatrix,
    InitialSyncProgress,
    Level,
    PushChannelHealth,
    RunRow,
    dag_path,
    deadline_level,
    initial_sync_dag_id,
    push_dag_id,
    reconciliation_dag_id,
    reconciliation_level,
    run_path,
    task_path,
    worst_level,
)

STATEMENT_TIMEOUT_MS = 10_000
#: The oldest RETs not in İYS the outbox panel lists (the counts cover all of them).
UNDELIVERED_SHOWN = 20
# SET LOCAL takes no parameters; set_config(..., true) is its parameterised form.
SET_STATEMENT_TIMEOUT_SQL = "SELECT set_config('statement_timeout', %s, true)"

# The brands this database syncs: its bookkeeping tables (a few rows per brand), plus any brand with runs.
BRANDS_SQL = """
SELECT brand_code FROM unnest(iys.synced_brands()) AS b(brand_code)
UNION SELECT DISTINCT brand_code FROM iys.sync_runs
ORDER BY 1
"""
# Index-only scan of consents_brand_type_status (V014).
CONSENT_COUNTS_SQL = "SELECT type, status, count(*) FROM iys.consents WHERE brand_code = %s GROUP BY 1, 2"
# The open scan, else the last finished one (an abandoned scan never counts); its batches summed.
INITIAL_SYNC_SQL = """
WITH scan AS (
    SELECT scan_id, started_at, finished_at, batch_count, total_users
      FROM iys.initial_sync_scans
     WHERE brand_code = %s AND NOT abandoned
     ORDER BY finished_at IS NULL DESC, started_at DESC, scan_id DESC
     LIMIT 1
)
SELECT s.scan_id, s.started_at, s.finished_at,
       count(b.finished_at)::int, s.batch_count, coalesce(sum(b.users) FILTER (WHERE b.finished_at IS NOT NULL), 0)::bigint,
       s.total_users, coalesce(sum(b.requests) FILTER (WHERE b.finished_at IS NOT NULL), 0)::bigint,
       extract(epoch FROM coalesce(s.finished_at, clock_timestamp()) - s.started_at)::float8
  FROM scan s LEFT JOIN iys.initial_sync_batches b USING (scan_id)
 GROUP BY s.scan_id, s.started_at, s.finished_at, s.batch_count, s.total_users
"""
RUNS_SQL = f"""
SELECT run_id, dag_id, finished_at, pulled_iys + pulled_hs, applied, new_users_checked, pushed, skipped,
       rejected, failed, feed_lag_seconds
  FROM iys.sync_runs WHERE brand_code = %s
 ORDER BY finished_at DESC LIMIT {RUNS_SHOWN}
"""
OUTBOX_SQL = """
SELECT state, error_code, count(*) FROM iys.consent_updates WHERE brand_code = %s GROUP BY 1, 2 ORDER BY 1, 2
"""
QUARANTINE_SQL = "SELECT reason, count(*) FROM iys.rejected_recipients WHERE brand_code = %s GROUP BY 1 ORDER BY 2 DESC"
# Every client IP the shared state knows (each of these tables has a few rows per IP or per IP and hour).
BUDGET_KEYS_SQL = """
SELECT limiter_key FROM iys.rate_limiter
UNION SELECT budget_key FROM iys.ip_blocks
UNION SELECT DISTINCT budget_key FROM iys.api_responses WHERE hour > now() - interval '25 hours'
ORDER BY 1
"""
TOKEN_REQUESTS_SQL = """
SELECT count(*)::int FROM iys.token_requests WHERE budget_key = %s AND requested_at > now() - interval '1 hour'
"""
IP_BLOCK_SQL = "SELECT blocked_until, block_reason FROM iys.ip_blocks WHERE budget_key = %s"
# The ledger counts per clock hour: the previous hour's bucket and the current one.
REQUESTS_SQL = """
SELECT date_trunc('hour', now()) - interval '1 hour',
       sum(responses) FILTER (WHERE status <> 0)::bigint,
       coalesce(sum(responses) FILTER (WHERE status = 429), 0)::bigint
  FROM iys.api_responses
 WHERE budget_key = %s AND hour >= date_trunc('hour', now()) - interval '1 hour'
"""
LEARNED_RATE_SQL = "SELECT rate FROM iys.rate_limiter WHERE limiter_key = %s"
# The daily reconciliation's days (V013, written by iys_reconciliation).
RECONCILIATIONS_SQL = """
SELECT report_date, status, agreed_at, run_id, updated_at, archived_file IS NOT NULL AND archived_timestamp IS NOT NULL,
       map_index
  FROM iys.reconciliations WHERE brand_code = %s
 ORDER BY report_date DESC LIMIT 30
"""
# When every change stream of the brand was last read to its end (the start of its last complete
# pull): a run that pulled nothing records no feed lag, and this says how current the feed is.
# NULL when a stream was never pulled completely (then the feed cannot be called caught up).
FEED_READ_TO_END_SQL = """
SELECT CASE WHEN bool_and(last_success_at IS NOT NULL) THEN min(last_success_at) END
  FROM iys.sync_state WHERE brand_code = %s AND stream LIKE 'changes:%%'
"""

# Per channel of the brand's push receiver. Received counts and "heard from" come from the
# (brand, channel, received_at) index, unapplied and unannounced from V019's partial indexes,
# the quarantine is small. "Applied in the last hour" has no index on applied_at: one pass over
# the brand's inbox for the three channels (about 30 ms for 200,000 pushed movements, a year of a
# million users' citizen-side changes). The window ends at %(now)s, not now(), so a reading is
# reproducible.
PUSH_HEALTH_SQL = """
WITH applied AS (
    SELECT channel, count(*)::int AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY lag) AS p95,
           max(lag) AS max
      FROM (SELECT channel, extract(epoch FROM applied_at - creation_date)::float8 AS lag FROM iys.push_inbox
             WHERE brand_code = %(brand)s AND applied_at > %(now)s - %(recent)s AND applied_at <= %(now)s) a
     GROUP BY channel
)
SELECT c.channel,
       pc.channel IS NOT NULL OR heard.inbox OR heard.quarantine,
       pc.last_push_at, pc.last_test_at,
       received.n, coalesce(applied.n, 0), applied.p50, applied.p95, applied.max,
       pending.unapplied, pending.oldest, unannounced.n, quarantined.n
  FROM unnest(%(channels)s::text[]) WITH ORDINALITY AS c(channel, position)
  LEFT JOIN iys.push_channels pc ON pc.brand_code = %(brand)s AND pc.channel = c.channel
 CROSS JOIN LATERAL (
       SELECT EXISTS (SELECT FROM iys.push_inbox WHERE brand_code = %(brand)s AND channel = c.channel) AS inbox,
              EXISTS (SELECT FROM iys.push_quarantine WHERE brand_code = %(brand)s AND channel = c.channel) AS quarantine
       ) heard
 CROSS JOIN LATERAL (
       SELECT count(*)::int AS n FROM iys.push_inbox
        WHERE brand_code = %(brand)s AND channel = c.channel
          AND received_at > %(now)s - %(recent)s AND received_at <= %(now)s
       ) received
 LEFT JOIN applied ON applied.channel = c.channel
 CROSS JOIN LATERAL (
       SELECT count(*)::int AS unapplied, min(received_at) AS oldest FROM iys.push_inbox
        WHERE brand_code = %(brand)s AND applied_at IS NULL AND channel = c.channel
       ) pending
 CROSS JOIN LATERAL (
       SELECT count(*)::int AS n FROM iys.push_inbox
        WHERE brand_code = %(brand)s AND announced_at IS NULL AND applied_at IS NOT NULL AND channel = c.channel
       ) unannounced
 CROSS JOIN LATERAL (
       SELECT count(*)::int AS n FROM iys.push_quarantine
        WHERE brand_code = %(brand)s AND channel = c.channel
          AND received_at > %(now)s - %(quarantine_window)s AND received_at <= %(now)s
       ) quarantined
 ORDER BY c.position
"""


@contextmanager
def read_only(connect: Callable[[], psycopg.Connection]) -> Iterator[psycopg.Connection]:
    """A connection whose every statement runs in one ``READ ONLY`` transaction, rolled back on exit."""
    conn = connect()
    try:
        conn.autocommit = False
        conn.read_only = True
        conn.execute(SET_STATEMENT_TIMEOUT_SQL, (f"{STATEMENT_TIMEOUT_MS}ms",))
        yield conn
    finally:
        conn.rollback()
        conn.close()


def brands(conn: psycopg.Connection) -> list[int]:
    return [row[0] for row in conn.execute(BRANDS_SQL)]


def consent_matrix(
    conn: psycopg.Connection, brand_code: int, sendable: dict[str, int] | None, counted_at: datetime | None
) -> ConsentMatrix:
    return ConsentMatrix.from_rows(conn.execute(CONSENT_COUNTS_SQL, (brand_code,)).fetchall(), sendable, counted_at)


def initial_sync_progress(conn: psycopg.Connection, brand_code: int) -> InitialSyncProgress | None:
    row = conn.execute(INITIAL_SYNC_SQL, (brand_code,)).fetchone()
    return InitialSyncProgress(*row) if row else None


def recent_runs(conn: psycopg.Connection, brand_code: int) -> list[RunRow]:
    """The brand's last runs, oldest first (the order of a time series)."""
    return [RunRow(*row) for row in reversed(conn.execute(RUNS_SQL, (brand_code,)).fetchall())]


def feed_read_to_end_at(conn: psycopg.Connection, brand_code: int) -> datetime | None:
    """The oldest of the brand's change streams' last complete pulls; ``None`` before every stream had one."""
    return conn.execute(FEED_READ_TO_END_SQL, (brand_code,)).fetchone()[0]


def budget_keys(conn: psycopg.Connection) -> list[BudgetKey]:
    limit = extra_default("auth_requests_per_hour")
    keys = []
    for (key,) in conn.execute(BUDGET_KEYS_SQL).fetchall():
        (tokens,) = conn.execute(TOKEN_REQUESTS_SQL, (key,)).fetchone()
        block = conn.execute(IP_BLOCK_SQL, (key,)).fetchone() or (None, None)
        since, requests, limited = conn.execute(REQUESTS_SQL, (key,)).fetchone()
        rate = conn.execute(LEARNED_RATE_SQL, (key,)).fetchone()
        keys.append(
            BudgetKey(
                budget_key=key,
                token_requests_last_hour=tokens,
                token_limit=limit,
                blocked_until=block[0],
                block_reason=block[1],
                requests_window_start=since,
                requests=requests,  # NULL: no answer recorded in the window
                rate_limited=limited if requests is not None else None,
                ratio_24h=success_ratio_24h(conn, key),
                learned_rate=rate[0] if rate else None,
            )
        )
    return keys


def reconciliations(conn: psycopg.Connection, brand_code: int) -> list[tuple] | None:
    """The brand's last 30 days of reconciliation, newest first; ``None`` before the first was recorded."""
    return conn.execute(RECONCILIATIONS_SQL, (brand_code,)).fetchall() or None


def push_health(conn: psycopg.Connection, brand_code: int, now: datetime) -> list[PushChannelHealth]:
    """The brand's push receiver per channel, in the page's channel order, as of ``now``."""
    rows = conn.execute(
        PUSH_HEALTH_SQL,
        {
            "brand": brand_code,
            "channels": list(CHANNELS),
            "now": now,
            "recent": PUSH_RECENT,
            "quarantine_window": PUSH_QUARANTINE_WINDOW,
        },
    ).fetchall()
    return [PushChannelHealth(*row) for row in rows]


def push_panel(
    conn: psycopg.Connection, brand_code: int, now: datetime, incremental_dag_id: str | None = None
) -> dict[str, Any]:
    """The push panel's JSON; ``incremental_dag_id`` (the brand's last run's DAG) names its push DAG."""
    if incremental_dag_id is None:
        runs = recent_runs(conn, brand_code)
        incremental_dag_id = runs[-1].dag_id if runs else None
    channels = [channel.as_json(now) for channel in push_health(conn, brand_code, now)]
    return {
        "generated_at": now.isoformat(),
        "channels": channels,
        "level": str(worst_level(Level(channel["level"]) for channel in channels)),
        "link": dag_path(push_dag_id(incremental_dag_id)),
    }


def undelivered_ret(row: tuple, now: datetime) -> dict[str, Any]:
    """One RET not in İYS as the page lists it, by outbox id (no recipient, even masked), with its legal deadline."""
    row_id, state, code, consent_date, _recipient, type_, acknowledged_at = row
    deadline = ret_deadline(consent_date.astimezone(IYS_TIMEZONE).date())
    return {
        "id": row_id,
        "type": type_,
        "state": state,
        "code": code,
        "consent_date": consent_date.isoformat(),
        "deadline": deadline.isoformat(),
        "overdue": deadline <= now,
        "acknowledged_at": acknowledged_at.isoformat() if acknowledged_at else None,
    }


def read_panels(
    conn: psycopg.Connection,
    brand_code: int,
    now: datetime,
    sendable: dict[str, int] | None = None,
    sendable_counted_at: datetime | None = None,
) -> dict[str, Any]:
    """Every panel of one brand as the page's JSON (``None``: not recorded)."""
    runs = recent_runs(conn, brand_code)
    last = runs[-1] if runs else None
    incremental_dag = last.dag_id if last else None
    initial_dag = initial_sync_dag_id(incremental_dag)

    def last_task(task_id: str) -> str | None:
        return task_path(last.dag_id, last.run_id, task_id) if last else None

    matrix = consent_matrix(conn, brand_code, sendable, sendable_counted_at)
    scan = initial_sync_progress(conn, brand_code)
    outbox_rows = conn.execute(OUTBOX_SQL, (brand_code,)).fetchall()
    watch = watch_ret_deadlines(unsent_rets_by_day(conn, brand_code), now)
    undelivered = [undelivered_ret(row, now) for row in undelivered_rets(conn, brand_code, UNDELIVERED_SHOWN)]
    quarantine = conn.execute(QUARANTINE_SQL, (brand_code,)).fetchall()
    keys = budget_keys(conn)
    reconciled = reconciliations(conn, brand_code)
    return {
        "brand_code": brand_code,
        "generated_at": now.isoformat(),
        "consents": {
            "counts": matrix.counts,
            "total": matrix.total,
            "sendable": matrix.sendable,
            "sendable_counted_at": sendable_counted_at.isoformat() if sendable_counted_at else None,
            "held_out_now": held_out_now(conn, brand_code),
            "link": run_path(last.dag_id, last.run_id) if last else dag_path(initial_dag),
        },
        "initial_sync": None
        if scan is None
        else {
            "scan_id": scan.scan_id,
            "started_at": scan.started_at.isoformat(),
            "finished_at": scan.finished_at.isoformat() if scan.finished_at else None,
            "batches_done": scan.batches_done,
            "batch_count": scan.batch_count,
            "users_done": scan.users_done,
            "total_users": scan.total_users,
            "requests_per_second": scan.requests_per_second,
            "learned_rate": max((k.learned_rate for k in keys if k.learned_rate), default=None),
            "estimated_finish": (eta.isoformat() if (eta := scan.estimated_finish(now)) else None),
            "level": str(scan.level),
            "link": dag_path(initial_dag),
        },
        "runs": {
            "rows": [run.as_json() for run in runs],
            "feed_read_to_end_at": _iso(feed_read_to_end_at(conn, brand_code)),
            "link": dag_path(incremental_dag) if last else None,
        },
        "outbox": {
            "by_state": [{"state": s, "code": c, "count": n} for s, c, n in outbox_rows],
            "unsent_rets": watch.unsent,
            "due_within_24h": watch.due_within_24h,
            "overdue_rets": watch.overdue,
            "acknowledged_rets": acknowledged_rets(conn, brand_code),
            "held_for_approval": held_updates(conn, brand_code),
            "undelivered": undelivered,
            "earliest_deadline": watch.earliest_deadline.isoformat() if watch.earliest_deadline else None,
            # Legal deadlines are days of Turkish law: the page shows them in this zone, labelled.
            "deadline_time_zone": IYS_TIMEZONE.key,
            "level": str(deadline_level(watch.earliest_deadline, watch.overdue, now)),
            "link": last_task("push_consent_updates"),
        },
        "quarantine": {
            "by_reason": [{"reason": r, "count": n} for r, n in quarantine],
            "link": last_task("check_new_users") or dag_path(initial_dag),
        },
        "budget": {"keys": [key.as_json(now) for key in keys], "link": last_task("report")},
        "reconciliation": None
        if reconciled is None
        else {
            "days": [
                {
                    "report_date": day.isoformat(),
                    "status": status,
                    "agreed_at": agreed.isoformat() if agreed else None,
                    "link": _day_link(reconciliation_dag_id(incremental_dag), run_id, map_index),
                    "evidence_kept": archived,
                }
                for day, status, agreed, run_id, _, archived, map_index in reconciled
            ],
            "level": str(reconciliation_level(row[1] for row in reconciled)),
        },
        "push": push_panel(conn, brand_code, now, incremental_dag),
    }


def _day_link(dag_id: str, run_id: str | None, map_index: int | None) -> str | None:
    """The day's own task instance in the run that last worked on it; the run when its index is unknown."""
    if not run_id:
        return None
    if map_index is None:  # a row written before the map index was recorded
        return run_path(dag_id, run_id)
    return task_path(dag_id, run_id, RECONCILIATION_DAY_TASK, map_index)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
