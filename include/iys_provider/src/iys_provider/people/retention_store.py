"""SQL of retention: deleting a brand's old change-feed events, pushed movements and settled outbox rows, in chunks.

The rules (what is kept, for how long at least, and why) are in :mod:`iys_provider.people.retention`.
Each chunk is one statement, committed on its own: a long purge never holds a long transaction,
and an interrupted one has kept what it deleted so far. Both deletes pick rows by index
(V010: ``consent_events_received``, ``consent_updates_finished``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from iys_provider.people.retention import DEFAULT_RETENTION_CHUNK_SIZE, FINAL_OUTBOX_STATES, RetentionPolicy, cutoff

DELETE_OLD_EVENTS_SQL = """
DELETE FROM iys.consent_events
 WHERE transaction_id IN (
       SELECT transaction_id FROM iys.consent_events
        WHERE brand_code = %(brand)s AND received_at < %(before)s
        LIMIT %(limit)s)
"""

# Pushed movements age like the change feed's (the same clock, the same days); one whose apply
# still fails is kept, in sight on the İYS page, until it is applied.
DELETE_OLD_PUSHED_SQL = """
DELETE FROM iys.push_inbox
 WHERE id IN (
       SELECT id FROM iys.push_inbox
        WHERE brand_code = %(brand)s AND received_at < %(before)s AND applied_at IS NOT NULL
        LIMIT %(limit)s)
"""

DELETE_OLD_QUARANTINED_PUSHES_SQL = """
DELETE FROM iys.push_quarantine
 WHERE id IN (
       SELECT id FROM iys.push_quarantine
        WHERE brand_code = %(brand)s AND received_at < %(before)s
        LIMIT %(limit)s)
"""

# The states spelt as in the partial index's predicate, so the planner can use it.
_FINAL_STATES = ", ".join(f"'{state.value}'" for state in FINAL_OUTBOX_STATES)
# A RET that never reached İYS (failed, or refused as too old) is the record of a citizen's "no"
# İYS does not hold: it keeps the user out of iys.sendable, so it is never deleted. Its status is
# compared as the push reads it (trimmed, any case), not only as the deadline watch does.
DELETE_FINISHED_UPDATES_SQL = f"""
DELETE FROM iys.consent_updates
 WHERE id IN (
       SELECT id FROM iys.consent_updates
        WHERE brand_code = %(brand)s AND state IN ({_FINAL_STATES}) AND processed_at < %(before)s
          AND NOT (upper(btrim(status)) = 'RET'
                   AND (state = 'failed' OR (state = 'rejected' AND error_code IS NOT DISTINCT FROM 'EXPIRED')))
        LIMIT %(limit)s)
"""


@dataclass(frozen=True)
class RetentionOutcome:
    consent_events_deleted: int = 0
    finished_updates_deleted: int = 0
    pushed_movements_deleted: int = 0  # iys.push_inbox and iys.push_quarantine rows


def apply_retention(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    policy: RetentionPolicy,
    now: datetime | None = None,
    chunk_size: int = DEFAULT_RETENTION_CHUNK_SIZE,
) -> RetentionOutcome:
    """Delete what ``policy`` no longer keeps of the brand's rows, as of ``now`` (default: our clock).

    Call it on an autocommit connection: every chunk is its own transaction.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size!r}")
    now = now or datetime.now(UTC)
    events = updates = pushed = 0
    events_before = cutoff(now, policy.consent_events_days)
    if events_before is not None:
        params = {"brand": brand_code, "before": events_before}
        events = _delete_in_chunks(conn, DELETE_OLD_EVENTS_SQL, params, chunk_size)
        pushed = _delete_in_chunks(conn, DELETE_OLD_PUSHED_SQL, params, chunk_size)
        pushed += _delete_in_chunks(conn, DELETE_OLD_QUARANTINED_PUSHES_SQL, params, chunk_size)
    updates_before = cutoff(now, policy.finished_updates_days)
    if updates_before is not None:
        params = {"brand": brand_code, "before": updates_before}
        updates = _delete_in_chunks(conn, DELETE_FINISHED_UPDATES_SQL, params, chunk_size)
    return RetentionOutcome(events, updates, pushed)


def _delete_in_chunks(conn: psycopg.Connection, statement: str, params: dict, chunk_size: int) -> int:
    deleted = 0
    while True:
        with conn.transaction():
            count = conn.execute(statement, {**params, "limit": chunk_size}).rowcount
        deleted += count
        if count < chunk_size:
            return deleted
