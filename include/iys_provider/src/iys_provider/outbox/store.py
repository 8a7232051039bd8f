"""SQL of the outbox ``iys.consent_updates`` and of recording what İYS confirmed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

import psycopg

from iys_provider.models import Consent, ConsentRecord
from iys_provider.outbox.approval import OutboxVolume
from iys_provider.outbox.rules import KnownConsent, OutboxRow, Verdict

FETCH_PENDING_SQL = """
SELECT id, recipient, type, recipient_type, status, consent_date, source, attempts
  FROM iys.consent_updates WHERE brand_code = %s AND state = 'pending' ORDER BY id LIMIT %s
"""

# One statement for all verdicts: a night settles thousands of rows, one round trip each was most of its time.
FINALISE_SQL = """
UPDATE iys.consent_updates AS u
   SET state = v.state, error_code = v.error_code, detail = v.detail,
       transaction_id = coalesce(v.transaction_id, u.transaction_id),
       processed_at = CASE WHEN v.state IN ('pending', 'submitted') THEN u.processed_at ELSE now() END,
       result_run_id = coalesce(%(run_id)s, u.result_run_id)
  FROM unnest(%(ids)s::bigint[], %(states)s::text[], %(codes)s::text[], %(details)s::text[], %(txids)s::text[])
       AS v(id, state, error_code, detail, transaction_id)
 WHERE u.id = v.id AND u.state IN ('pending', 'submitted')
"""

# Committed before the request: attempts > 0 means "İYS may already have it", which the next
# run checks instead of blindly resending.
COUNT_ATTEMPT_SQL = "UPDATE iys.consent_updates SET attempts = attempts + %s WHERE id = ANY(%s)"

MARK_SUBMITTED_SQL = """
UPDATE iys.consent_updates AS u
   SET state = 'submitted', request_id = %(request_id)s, request_index = v.ordinal - 1, submitted_at = now(),
       error_code = NULL, detail = NULL
  FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS v(id, ordinal)
 WHERE u.id = v.id AND u.state = 'pending'
"""

RECORD_TRANSIENT_FAILURE_SQL = """
UPDATE iys.consent_updates
   SET tries = tries + 1,
       state = CASE WHEN tries + 1 >= %(max)s THEN 'failed' ELSE 'pending' END,
       error_code = %(code)s, detail = %(detail)s, failure_retryable = %(retryable)s,
       processed_at = CASE WHEN tries + 1 >= %(max)s THEN now() ELSE processed_at END
 WHERE id = ANY(%(ids)s) AND state = 'pending'
RETURNING state
"""

# Rows that failed for a passing reason, for :func:`iys_provider.outbox.rules.may_requeue` to judge.
RETRYABLE_FAILURES_SQL = """
SELECT id, consent_date, requeues FROM iys.consent_updates
 WHERE brand_code = %s AND state = 'failed' AND failure_retryable ORDER BY id
"""

REQUEUE_SQL = """
UPDATE iys.consent_updates
   SET state = 'pending', tries = 0, requeues = requeues + 1, processed_at = NULL
 WHERE id = ANY(%s) AND state = 'failed'
"""

# A batch whose results never came (lost, unknown to İYS, or stuck in its queue) goes back to
# pending. ``attempts`` stays > 0, so the next push verifies it with İYS before any resend.
EXPIRE_SUBMITTED_SQL = """
UPDATE iys.consent_updates
   SET state = 'pending', request_id = NULL, request_index = NULL, submitted_at = NULL,
       error_code = %(code)s, detail = %(detail)s, result_run_id = coalesce(%(run_id)s, result_run_id)
 WHERE brand_code = %(brand)s AND state = 'submitted'
   AND (request_id = %(request_id)s OR submitted_at < %(submitted_before)s)
"""

# A batch item İYS reported with a status it never documented: the row stays submitted, with
# İYS's word kept on it, until the result settles or the batch expires.
NOTE_SUBMITTED_SQL = """
UPDATE iys.consent_updates SET error_code = %s, detail = %s WHERE id = ANY(%s) AND state = 'submitted'
"""

FETCH_PENDING_BY_ID_SQL = """
SELECT id, recipient, type, recipient_type, status, consent_date, source, attempts
  FROM iys.consent_updates WHERE brand_code = %s AND state = 'pending' AND id = ANY(%s) ORDER BY id
"""

# What the batch-result sensor of one DAG run settled (sent/skipped/rejected) or reopened. Run
# ids repeat across DAGs (every brand's scheduled run of one night has the same), hence the brand.
COLLECTED_BY_RUN_SQL = """
SELECT CASE WHEN state = 'pending' THEN 'reopened' ELSE state END, count(*)
  FROM iys.consent_updates WHERE brand_code = %s AND result_run_id = %s GROUP BY 1
"""

# RETs that never reached İYS and are not given up on by İYS's word: still on their way
# (pending, held, submitted, failed) or refused as too old (EXPIRED). Spelt as in the partial
# index consent_updates_unsent_rets (V017).
_UNDELIVERED_RET = (
    "status = 'RET' AND (state IN ('pending', 'held', 'submitted', 'failed') "
    "OR (state = 'rejected' AND error_code = 'EXPIRED'))"
)

# Undelivered opt-outs per Turkey-local consent day, apart for those a person acknowledged; the
# deadline itself needs the holiday calendar.
UNSENT_RET_DAYS_SQL = f"""
SELECT (consent_date AT TIME ZONE 'Europe/Istanbul')::date AS consent_day, acknowledged_at IS NOT NULL, count(*)
  FROM iys.consent_updates
 WHERE brand_code = %s AND {_UNDELIVERED_RET}
 GROUP BY 1, 2
"""

# A person has dealt with the undelivered RETs of these consent days: the record stays, the alarm ends.
ACKNOWLEDGE_RETS_SQL = f"""
UPDATE iys.consent_updates
   SET acknowledged_at = now(), acknowledged_by = %(by)s, acknowledgement = %(note)s
 WHERE brand_code = %(brand)s AND {_UNDELIVERED_RET} AND acknowledged_at IS NULL
   AND (consent_date AT TIME ZONE 'Europe/Istanbul')::date = ANY(%(days)s)
"""

# The İYS page's list: the oldest undelivered RETs first (the recipient is masked by the caller).
UNDELIVERED_RETS_SQL = f"""
SELECT id, state, error_code, consent_date, recipient, type, acknowledged_at
  FROM iys.consent_updates
 WHERE brand_code = %s AND {_UNDELIVERED_RET}
 ORDER BY consent_date, id LIMIT %s
"""

# ONAY addresses of our copy that an open RET keeps out of iys.sendable right now, per channel:
# the open RETs by index (consent_updates_open_rets, V017), each looked up in consents by key.
HELD_OUT_NOW_SQL = """
SELECT c.type, count(DISTINCT o.ret_key)
  FROM iys.consent_updates o
  JOIN iys.consents c
    ON c.brand_code = o.brand_code AND c.type = split_part(o.ret_key, ' ', 1)
   AND c.recipient_type = split_part(o.ret_key, ' ', 2) AND c.recipient = split_part(o.ret_key, ' ', 3)
 WHERE o.brand_code = %s AND o.ret_key IS NOT NULL
   AND (o.state IN ('pending', 'held', 'submitted', 'failed') OR (o.state = 'rejected' AND o.error_code = 'EXPIRED'))
   AND c.status = 'ONAY' AND o.consent_date >= coalesce(c.consent_date, '-infinity')
 GROUP BY 1
"""

# ------------------------------------------------------------------ approval of unusual volume

# What the push would send: pending rows nobody approved, and rows an earlier run held.
UNAPPROVED_VOLUME_SQL = """
SELECT upper(btrim(status)), count(*) FROM iys.consent_updates
 WHERE brand_code = %s AND ((state = 'pending' AND approved_at IS NULL) OR state = 'held')
 GROUP BY 1
"""

HELD_COUNT_SQL = "SELECT count(*) FROM iys.consent_updates WHERE brand_code = %s AND state = 'held'"

ONAY_CONSENTS_SQL = "SELECT count(*) FROM iys.consents WHERE brand_code = %s AND status = 'ONAY'"

# The state says why a row waits; its last error code (a 5xx of an earlier run, say) is kept.
HOLD_SQL = """
UPDATE iys.consent_updates
   SET state = 'held', held_by_run = %(run)s
 WHERE brand_code = %(brand)s AND ((state = 'pending' AND approved_at IS NULL) OR state = 'held')
"""

HELD_SAMPLE_SQL = """
SELECT upper(btrim(type)), upper(btrim(status)), recipient FROM iys.consent_updates
 WHERE brand_code = %s AND state = 'held' AND held_by_run = %s ORDER BY id LIMIT %s
"""

RELEASE_HELD_SQL = """
UPDATE iys.consent_updates
   SET state = 'pending', approved_at = now(), approved_by = %(by)s
 WHERE brand_code = %(brand)s AND state = 'held' AND held_by_run = %(run)s
"""

NOT_APPROVED_SQL = """
UPDATE iys.consent_updates SET error_code = 'NOT_APPROVED', detail = %(detail)s
 WHERE brand_code = %(brand)s AND state = 'held' AND held_by_run = %(run)s
"""

# A batch is polled under its own brand's path: under another brand's, İYS would not know it.
SUBMITTED_REQUESTS_SQL = """
SELECT request_id, min(submitted_at), count(*) FROM iys.consent_updates
 WHERE brand_code = %s AND state = 'submitted' GROUP BY request_id ORDER BY min(submitted_at)
"""

SUBMITTED_ROWS_SQL = """
SELECT request_index, id, recipient, type, recipient_type, status, consent_date, source
  FROM iys.consent_updates WHERE brand_code = %s AND state = 'submitted' AND request_id = %s
"""

KNOWN_CONSENTS_SQL = """
SELECT k.recipient, k.recipient_type, k.type, c.status, c.consent_date, c.transaction_id
  FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(recipient, recipient_type, type)
  JOIN iys.consents c
    ON c.brand_code = %s AND c.recipient = k.recipient AND c.recipient_type = k.recipient_type AND c.type = k.type
"""

# İYS's answer to a single-status query is its current truth for the address.
UPSERT_STATUS_ANSWER_SQL = """
INSERT INTO iys.consents AS c (brand_code, recipient, recipient_type, type, status, consent_date, source,
                               creation_date, transaction_id, checked_at, updated_at)
VALUES (%(brand)s, %(recipient)s, %(recipient_type)s, %(type)s, %(status)s, %(consent_date)s, %(source)s,
        %(creation_date)s, %(transaction_id)s, now(), now())
ON CONFLICT (brand_code, recipient, recipient_type, type) DO UPDATE
   SET status = EXCLUDED.status, consent_date = EXCLUDED.consent_date, source = EXCLUDED.source,
       creation_date = EXCLUDED.creation_date, transaction_id = EXCLUDED.transaction_id,
       checked_at = EXCLUDED.checked_at,
       updated_at = CASE WHEN c.status IS DISTINCT FROM EXCLUDED.status THEN now() ELSE c.updated_at END
"""

# Writes İYS confirmed, ordered like change-feed movements so a newer movement is never undone;
# of several for one address, the newest (the order the WHERE clause would end with one by one).
APPLY_CONFIRMED_SQL = """
INSERT INTO iys.consents AS c (brand_code, recipient, recipient_type, type, status, consent_date, source,
                               creation_date, transaction_id, updated_at)
SELECT DISTINCT ON (recipient, recipient_type, type)
       %(brand)s, recipient, recipient_type, type, status, consent_date, source, creation_date, transaction_id, now()
  FROM unnest(%(recipients)s::text[], %(recipient_types)s::text[], %(types)s::text[], %(statuses)s::text[],
              %(consent_dates)s::timestamptz[], %(sources)s::text[], %(creation_dates)s::timestamptz[],
              %(transaction_ids)s::text[])
       AS v(recipient, recipient_type, type, status, consent_date, source, creation_date, transaction_id)
 ORDER BY recipient, recipient_type, type, consent_date DESC, coalesce(creation_date, 'infinity') DESC
ON CONFLICT (brand_code, recipient, recipient_type, type) DO UPDATE
   SET status = EXCLUDED.status, consent_date = EXCLUDED.consent_date, source = EXCLUDED.source,
       creation_date = EXCLUDED.creation_date, transaction_id = EXCLUDED.transaction_id, updated_at = now()
 WHERE (EXCLUDED.consent_date, coalesce(EXCLUDED.creation_date, 'infinity'))
       > (coalesce(c.consent_date, '-infinity'), coalesce(c.creation_date, '-infinity'))
"""


def fetch_pending(conn: psycopg.Connection, brand_code: int, limit: int) -> list[OutboxRow]:
    return [OutboxRow(*row) for row in conn.execute(FETCH_PENDING_SQL, (brand_code, limit)).fetchall()]


def finalise(
    conn: psycopg.Connection, verdicts: Iterable[tuple[int, Verdict]], *, result_run_id: str | None = None
) -> None:
    """Store each row's verdict; ``result_run_id`` marks rows the batch-result sensor of that run settled.

    A row's first verdict counts (a later one for the same row would find it settled already)."""
    first: dict[int, Verdict] = {}
    for row_id, verdict in verdicts:
        first.setdefault(row_id, verdict)
    if not first:
        return
    conn.execute(
        FINALISE_SQL,
        {
            "ids": list(first),
            "states": [v.state.value for v in first.values()],
            "codes": [v.error_code for v in first.values()],
            "details": [v.detail for v in first.values()],
            "txids": [v.transaction_id for v in first.values()],
            "run_id": result_run_id,
        },
    )


def count_attempt(conn: psycopg.Connection, ids: Sequence[int], delta: int = 1) -> None:
    """``delta=-1`` takes an attempt back when the request provably never reached İYS."""
    conn.execute(COUNT_ATTEMPT_SQL, (delta, list(ids)))


def mark_submitted(conn: psycopg.Connection, request_id: str, ids: Sequence[int]) -> None:
    """The rows of one batch, ``ids`` in the batch's item order (``request_index`` is the position)."""
    conn.execute(MARK_SUBMITTED_SQL, {"request_id": request_id, "ids": list(ids)})


def record_transient_failure(
    conn: psycopg.Connection,
    ids: Sequence[int],
    *,
    max_attempts: int,
    code: str | None,
    detail: str,
    retryable: bool = True,
) -> int:
    """One more unsettled try for each row; returns how many reached ``max_attempts`` and are now failed.

    ``retryable``: the failure may pass (5xx, network, İYS's clock), so a failed row may be requeued."""
    states = conn.execute(
        RECORD_TRANSIENT_FAILURE_SQL,
        {"max": max_attempts, "code": code or "TRANSIENT", "detail": detail, "ids": list(ids), "retryable": retryable},
    ).fetchall()
    return sum(1 for (state,) in states if state == "failed")


def retryable_failures(conn: psycopg.Connection, brand_code: int) -> list[tuple[int, datetime, int]]:
    """``(id, consent_date, requeues)`` of the brand's rows that failed for a passing reason."""
    return conn.execute(RETRYABLE_FAILURES_SQL, (brand_code,)).fetchall()


def requeue(conn: psycopg.Connection, ids: Sequence[int]) -> int:
    return conn.execute(REQUEUE_SQL, (list(ids),)).rowcount


def note_submitted(conn: psycopg.Connection, ids: Sequence[int], *, code: str, detail: str) -> None:
    conn.execute(NOTE_SUBMITTED_SQL, (code, detail, list(ids)))


def fetch_pending_by_id(conn: psycopg.Connection, brand_code: int, ids: Sequence[int]) -> list[OutboxRow]:
    return [OutboxRow(*row) for row in conn.execute(FETCH_PENDING_BY_ID_SQL, (brand_code, list(ids))).fetchall()]


def expire_submissions(
    conn: psycopg.Connection,
    brand_code: int,
    *,
    code: str,
    detail: str,
    request_id: str | None = None,
    submitted_before: datetime | None = None,
    result_run_id: str | None = None,
) -> int:
    """Put the brand's submitted rows of one request, or of requests older than ``submitted_before``, back to pending."""
    return conn.execute(
        EXPIRE_SUBMITTED_SQL,
        {
            "brand": brand_code,
            "code": code,
            "detail": detail,
            "request_id": request_id,
            "submitted_before": submitted_before,
            "run_id": result_run_id,
        },
    ).rowcount


def collected_by_run(conn: psycopg.Connection, brand_code: int, result_run_id: str) -> dict[str, int]:
    return dict(conn.execute(COLLECTED_BY_RUN_SQL, (brand_code, result_run_id)).fetchall())


def unsent_rets_by_day(conn: psycopg.Connection, brand_code: int) -> dict[date, int]:
    """Undelivered RETs nobody acknowledged, per Turkey-local consent day."""
    return {day: count for day, acknowledged, count in _unsent_rets(conn, brand_code) if not acknowledged}


def acknowledged_rets(conn: psycopg.Connection, brand_code: int) -> int:
    return sum(count for _, acknowledged, count in _unsent_rets(conn, brand_code) if acknowledged)


def _unsent_rets(conn: psycopg.Connection, brand_code: int) -> list[tuple[date, bool, int]]:
    return conn.execute(UNSENT_RET_DAYS_SQL, (brand_code,)).fetchall()


def acknowledge_rets(conn: psycopg.Connection, brand_code: int, days: Sequence[date], *, by: str, note: str) -> int:
    """Acknowledge the brand's undelivered RETs of these Turkey-local consent days; returns how many."""
    if not days:
        return 0
    return conn.execute(
        ACKNOWLEDGE_RETS_SQL, {"brand": brand_code, "days": list(days), "by": by, "note": note}
    ).rowcount


def undelivered_rets(conn: psycopg.Connection, brand_code: int, limit: int) -> list[tuple]:
    """``(id, state, error_code, consent_date, recipient, type, acknowledged_at)``, oldest first."""
    return conn.execute(UNDELIVERED_RETS_SQL, (brand_code, limit)).fetchall()


def held_out_now(conn: psycopg.Connection, brand_code: int) -> dict[str, int]:
    """Per channel, the ONAY addresses an opt-out not yet in İYS keeps out of ``iys.sendable`` now."""
    return dict(conn.execute(HELD_OUT_NOW_SQL, (brand_code,)).fetchall())


def held_updates(conn: psycopg.Connection, brand_code: int) -> int:
    """The brand's updates waiting for a person's approval."""
    return conn.execute(HELD_COUNT_SQL, (brand_code,)).fetchone()[0]


def unapproved_volume(conn: psycopg.Connection, brand_code: int) -> OutboxVolume:
    """What the push would send without an approval, against the brand's ONAY consents."""
    by_status = dict(conn.execute(UNAPPROVED_VOLUME_SQL, (brand_code,)).fetchall())
    (onay,) = conn.execute(ONAY_CONSENTS_SQL, (brand_code,)).fetchone()
    return OutboxVolume(by_status, onay)


def hold_unapproved(conn: psycopg.Connection, brand_code: int, run_id: str) -> int:
    """Hold every update the push would send without an approval, for ``run_id`` to ask about."""
    return conn.execute(HOLD_SQL, {"brand": brand_code, "run": run_id}).rowcount


def held_sample(conn: psycopg.Connection, brand_code: int, run_id: str, size: int) -> list[tuple[str, str, str]]:
    return conn.execute(HELD_SAMPLE_SQL, (brand_code, run_id, size)).fetchall()


def release_held(conn: psycopg.Connection, brand_code: int, run_id: str, *, approved_by: str) -> int:
    """A person approved: ``run_id``'s held rows go back to the queue, approved."""
    return conn.execute(RELEASE_HELD_SQL, {"brand": brand_code, "run": run_id, "by": approved_by}).rowcount


def mark_not_approved(conn: psycopg.Connection, brand_code: int, run_id: str, *, detail: str) -> int:
    """A person rejected: ``run_id``'s held rows stay held, with the code ``NOT_APPROVED``."""
    return conn.execute(NOT_APPROVED_SQL, {"brand": brand_code, "run": run_id, "detail": detail}).rowcount


def submitted_requests(conn: psycopg.Connection, brand_code: int) -> list[tuple[str, datetime, int]]:
    """The brand's outstanding batches: request id, first submission, rows; oldest first."""
    return conn.execute(SUBMITTED_REQUESTS_SQL, (brand_code,)).fetchall()


def submitted_rows(conn: psycopg.Connection, brand_code: int, request_id: str) -> list[tuple]:
    """``(request_index, id, recipient, type, recipient_type, status, consent_date, source)`` of one batch."""
    return conn.execute(SUBMITTED_ROWS_SQL, (brand_code, request_id)).fetchall()


def known_consents(
    conn: psycopg.Connection, brand_code: int, consents: Sequence[Consent]
) -> dict[tuple[str, str, str], KnownConsent]:
    if not consents:
        return {}
    rows = conn.execute(
        KNOWN_CONSENTS_SQL,
        (
            [c.recipient for c in consents],
            [c.recipient_type.value for c in consents],
            [c.type.value for c in consents],
            brand_code,
        ),
    ).fetchall()
    return {(r, rt, t): KnownConsent(status, date, tx) for r, rt, t, status, date, tx in rows}


def record_status_answer(conn: psycopg.Connection, brand_code: int, record: ConsentRecord) -> None:
    conn.execute(
        UPSERT_STATUS_ANSWER_SQL,
        {
            "brand": brand_code,
            "recipient": record.recipient,
            "recipient_type": record.recipient_type.value,
            "type": record.type.value,
            "status": record.status.value,
            "consent_date": record.consent_date,
            "source": str(record.source) if record.source else None,
            "creation_date": record.creation_date,
            "transaction_id": record.transaction_id,
        },
    )


def apply_confirmed(
    conn: psycopg.Connection,
    brand_code: int,
    consent: Consent,
    transaction_id: str | None,
    creation_date: datetime | None,
) -> None:
    apply_confirmed_many(conn, brand_code, [(consent, transaction_id, creation_date)])


def apply_confirmed_many(
    conn: psycopg.Connection,
    brand_code: int,
    confirmed: Sequence[tuple[Consent, str | None, datetime | None]],
) -> None:
    """Writes İYS confirmed, as ``(consent, transaction id, creation date)``, in one statement."""
    if not confirmed:
        return
    consents = [consent for consent, _, _ in confirmed]
    conn.execute(
        APPLY_CONFIRMED_SQL,
        {
            "brand": brand_code,
            "recipients": [c.recipient for c in consents],
            "recipient_types": [c.recipient_type.value for c in consents],
            "types": [c.type.value for c in consents],
            "statuses": [c.status.value for c in consents],
            "consent_dates": [c.consent_date for c in consents],
            "sources": [c.source.value if c.source else None for c in consents],
            "creation_dates": [creation_date for _, _, creation_date in confirmed],
            "transaction_ids": [transaction_id for _, transaction_id, _ in confirmed],
        },
    )


def consent_key(consent: Consent) -> tuple[str, str, str]:
    return consent.recipient, consent.recipient_type.value, consent.type.value
