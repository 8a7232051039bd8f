"""Writing what İYS said into the ``iys`` schema: COPY into staging tables, then set-based upserts.

Everything one batch learnt (consents, user links, quarantine rows, source fingerprints and
the batch's completion) is written in one transaction, so a batch is either fully recorded or
not at all, and a rerun of it converges to the same state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import psycopg

from iys_provider.models import ConsentType, RecipientType
from iys_provider.recipients import PreparedUsers

CREATE_STAGING_SQL = """
CREATE TEMP TABLE stage_addresses (
    user_id text, kind text, recipient text, recipient_type text, reason text, raw_value text
) ON COMMIT DROP;
CREATE TEMP TABLE stage_checks (recipient text, recipient_type text, type text, onay boolean) ON COMMIT DROP;
CREATE TEMP TABLE stage_digests (user_id text, digest text) ON COMMIT DROP;
"""

DELETE_STALE_LINKS_SQL = """
DELETE FROM iys.user_recipients ur
 USING stage_addresses s
 WHERE ur.brand_code = %(brand)s AND ur.user_id = s.user_id AND ur.kind = s.kind
   AND s.kind IN ('phone', 'email') AND s.recipient IS NULL
"""

UPSERT_LINKS_SQL = """
INSERT INTO iys.user_recipients AS ur (brand_code, user_id, kind, recipient, recipient_type)
SELECT %(brand)s, user_id, kind, recipient, recipient_type FROM stage_addresses WHERE recipient IS NOT NULL
ON CONFLICT (brand_code, user_id, kind) DO UPDATE
   SET recipient = EXCLUDED.recipient, recipient_type = EXCLUDED.recipient_type, updated_at = now()
 WHERE (ur.recipient, ur.recipient_type) IS DISTINCT FROM (EXCLUDED.recipient, EXCLUDED.recipient_type)
"""

CLEAR_FIXED_QUARANTINE_SQL = """
DELETE FROM iys.rejected_recipients r
 USING stage_addresses s
 WHERE r.brand_code = %(brand)s AND r.user_id = s.user_id AND r.field = s.kind AND s.reason IS NULL
"""

UPSERT_QUARANTINE_SQL = """
INSERT INTO iys.rejected_recipients AS r (brand_code, user_id, field, raw_value, reason, seen_at)
SELECT %(brand)s, user_id, kind, raw_value, reason, now() FROM stage_addresses WHERE reason IS NOT NULL
ON CONFLICT (brand_code, user_id, field) DO UPDATE
   SET raw_value = EXCLUDED.raw_value, reason = EXCLUDED.reason, seen_at = EXCLUDED.seen_at
"""

# The status a multi-status answer leads to. Only ONAY recipients are listed, so "absent" means
# RET or unknown: an address we knew as ONAY or RET is RET now (İYS never deletes a record), an
# address we never knew stays NULL. Knowledge newer than this check (a change-feed movement
# created after it, or a later check) wins.


def _status_after_check(onay: str, checked_at: str) -> str:
    return f"""CASE WHEN c.creation_date > {checked_at} OR c.checked_at > {checked_at} THEN c.status
                    WHEN {onay} THEN 'ONAY'
                    WHEN c.status IS NOT NULL THEN 'RET'
               END"""


_STAGED_STATUS = _status_after_check("s.onay", "s.checked_at")
_UPSERTED_STATUS = _status_after_check("EXCLUDED.status = 'ONAY'", "EXCLUDED.checked_at")

# A per-row index lookup: the staging table has no statistics, and a join plan chosen on a bad
# estimate would scan every consent of the brand for every batch.
COUNT_STATUS_CHANGES_SQL = f"""
SELECT count(*)
  FROM (SELECT st.*, %(checked)s::timestamptz AS checked_at FROM stage_checks st) s
  LEFT JOIN LATERAL (
        SELECT status, creation_date, checked_at FROM iys.consents
         WHERE brand_code = %(brand)s AND recipient = s.recipient
           AND recipient_type = s.recipient_type AND type = s.type
  ) c ON true
 WHERE ({_STAGED_STATUS}) IS DISTINCT FROM c.status
"""

# A status change invalidates the movement details we held (date, source, transaction): the
# multi-status answer does not carry them, and stale ones would mislead the H178 guard.
UPSERT_CHECKED_CONSENTS_SQL = f"""
INSERT INTO iys.consents AS c (brand_code, recipient, recipient_type, type, status, checked_at)
SELECT %(brand)s, recipient, recipient_type, type, CASE WHEN onay THEN 'ONAY' END, %(checked)s
  FROM stage_checks
ON CONFLICT (brand_code, recipient, recipient_type, type) DO UPDATE
   SET status         = {_UPSERTED_STATUS},
       consent_date   = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.consent_date END,
       source         = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.source END,
       creation_date  = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.creation_date END,
       transaction_id = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.transaction_id END,
       updated_at     = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN now() ELSE c.updated_at END,
       checked_at     = greatest(c.checked_at, EXCLUDED.checked_at)
"""

UPSERT_DIGESTS_SQL = """
INSERT INTO iys.user_sources AS us (brand_code, user_id, digest, seen_at)
SELECT %(brand)s, user_id, digest, now() FROM stage_digests
ON CONFLICT (brand_code, user_id) DO UPDATE SET digest = EXCLUDED.digest, seen_at = EXCLUDED.seen_at
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


@dataclass(frozen=True)
class BatchLedgerEntry:
    scan_id: int
    batch_no: int


@dataclass(frozen=True)
class WriteOutcome:
    consents: int
    status_changes: int
    links: int
    quarantined: int


def write_checked_users(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    prepared: PreparedUsers,
    onay: Mapping[tuple[RecipientType, ConsentType], set[str]],
    checked_at: datetime,
    requests: int = 0,
    ledger: BatchLedgerEntry | None = None,
) -> WriteOutcome:
    """Record a checked group of users in one transaction (see module docstring)."""
    params = {"brand": brand_code, "checked": checked_at}
    with conn.transaction(), conn.cursor() as cur:
        # Safe without a flush: a commit lost in a crash loses the batch's ledger entry with it,
        # so the batch is simply processed again.
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.execute(CREATE_STAGING_SQL)
        with cur.copy(
            "COPY stage_addresses (user_id, kind, recipient, recipient_type, reason, raw_value) FROM STDIN"
        ) as copy:
            for a in prepared.addresses:
                copy.write_row((a.user_id, a.kind, a.recipient, a.recipient_type, a.reason, a.raw_value))
        consent_rows = 0
        with cur.copy("COPY stage_checks (recipient, recipient_type, type, onay) FROM STDIN") as copy:
            for (rtype, ctype), recipients in prepared.to_check.items():
                onay_set = onay.get((rtype, ctype), set())
                for recipient in recipients:
                    copy.write_row((recipient, rtype.value, ctype.value, recipient in onay_set))
                    consent_rows += 1
        with cur.copy("COPY stage_digests (user_id, digest) FROM STDIN") as copy:
            for row in prepared.digests:
                copy.write_row(row)
        status_changes = cur.execute(COUNT_STATUS_CHANGES_SQL, params).fetchone()[0]
        cur.execute(DELETE_STALE_LINKS_SQL, params)
        cur.execute(UPSERT_LINKS_SQL, params)
        cur.execute(CLEAR_FIXED_QUARANTINE_SQL, params)
        cur.execute(UPSERT_QUARANTINE_SQL, params)
        cur.execute(UPSERT_CHECKED_CONSENTS_SQL, params)
        cur.execute(UPSERT_DIGESTS_SQL, params)
        if ledger is not None:
            cur.execute(
                FINISH_BATCH_SQL,
                {
                    "users": prepared.users,
                    "recipients": prepared.unique_recipients,
                    "quarantined": prepared.quarantined,
                    "requests": requests,
                    "scan_id": ledger.scan_id,
                    "batch_no": ledger.batch_no,
                },
            )
    return WriteOutcome(consent_rows, status_changes, prepared.linked, prepared.quarantined)
