"""The SQL of ``iys.sync_runs``: one row per incremental run (see :mod:`iys_provider.run_report.sync_runs`)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg

from iys_provider.run_report.sync_runs import RunDetails, RunFigures

INSERT_RUN_SQL = """
INSERT INTO iys.sync_runs (run_id, brand_code, dag_id, started_at, pulled_iys, pulled_hs, applied, ignored_stale,
                           new_users_checked, pushed, skipped, rejected, failed, feed_lag_seconds, details,
                           unsent_rets, rets_due_within_24h, oldest_unsent_ret_deadline,
                           success_ratio_24h, calls_24h, client_errors_24h, leavers)
VALUES (%(run_id)s, %(brand)s, %(dag_id)s, %(started_at)s, %(pulled_iys)s, %(pulled_hs)s, %(applied)s,
        %(ignored_stale)s, %(new_users_checked)s, %(pushed)s, %(skipped)s, %(rejected)s, %(failed)s,
        %(feed_lag_seconds)s, %(details)s::jsonb, %(unsent_rets)s, %(rets_due_within_24h)s,
        %(oldest_unsent_ret_deadline)s, %(success_ratio_24h)s, %(calls_24h)s, %(client_errors_24h)s, %(leavers)s)
ON CONFLICT (run_id, brand_code, dag_id) DO UPDATE
   SET finished_at = now(), pulled_iys = EXCLUDED.pulled_iys, pulled_hs = EXCLUDED.pulled_hs,
       applied = EXCLUDED.applied, ignored_stale = EXCLUDED.ignored_stale,
       new_users_checked = EXCLUDED.new_users_checked, pushed = EXCLUDED.pushed, skipped = EXCLUDED.skipped,
       rejected = EXCLUDED.rejected, failed = EXCLUDED.failed, feed_lag_seconds = EXCLUDED.feed_lag_seconds,
       details = EXCLUDED.details, unsent_rets = EXCLUDED.unsent_rets,
       rets_due_within_24h = EXCLUDED.rets_due_within_24h,
       oldest_unsent_ret_deadline = EXCLUDED.oldest_unsent_ret_deadline,
       success_ratio_24h = EXCLUDED.success_ratio_24h, calls_24h = EXCLUDED.calls_24h,
       client_errors_24h = EXCLUDED.client_errors_24h, leavers = EXCLUDED.leavers
"""


def record_sync_run(
    conn: psycopg.Connection,
    *,
    run_id: str,
    brand_code: int,
    dag_id: str,
    started_at: datetime,
    figures: RunFigures,
    details: RunDetails,
    unsent_rets: int,
    rets_due_within_24h: int,
    oldest_unsent_ret_deadline: datetime | None,
    success_ratio_24h: float | None,
    calls_24h: int,
    client_errors_24h: int,
) -> None:
    """Write the run's row; a rerun of the same run (or a retry of its report) replaces its figures."""
    values: dict[str, Any] = {
        **figures,
        "run_id": run_id,
        "brand": brand_code,
        "dag_id": dag_id,
        "started_at": started_at,
        "details": json.dumps(details),
        "unsent_rets": unsent_rets,
        "rets_due_within_24h": rets_due_within_24h,
        "oldest_unsent_ret_deadline": oldest_unsent_ret_deadline,
        "success_ratio_24h": success_ratio_24h,
        "calls_24h": calls_24h,
        "client_errors_24h": client_errors_24h,
    }
    conn.execute(INSERT_RUN_SQL, values)
