"""Storing change-feed pages: events, consent state and the cursor advance in one transaction.

A page is appended to ``iys.consent_events`` (``transaction_id`` is the primary key, so a replayed
page inserts nothing) and each new movement is applied to ``iys.consents`` only when it is newer
than what is stored — by consent date, then creation date — and newer than the last status check
of that address. A movement without a consent date (an operator line closure, a first TACIR
record) is ordered by its creation date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from iys_provider.exceptions import IysMalformedResponseError
from iys_provider.models import ChangePage, ChangeStream

CREATE_STAGE_SQL = """
CREATE TEMP TABLE stage_events (
    transaction_id text, recipient text, recipient_type text, type text, status text,
    consent_date timestamptz, creation_date timestamptz, source text
) ON COMMIT DROP
"""

# One statement: append the page's movements (a replayed page inserts nothing) and apply only the
# movements it inserted, newest per address, when newer than the stored state and its last check.
STORE_EVENTS_SQL = """
WITH inserted AS (
    INSERT INTO iys.consent_events AS e
           (transaction_id, brand_code, recipient, recipient_type, type, status,
            consent_date, creation_date, source, stream)
    SELECT DISTINCT ON (transaction_id)
           transaction_id, %(brand)s, recipient, recipient_type, type, status,
           consent_date, creation_date, source, %(stream)s
      FROM stage_events
    ON CONFLICT (transaction_id) DO NOTHING
    RETURNING e.*
), applied AS (
    INSERT INTO iys.consents AS c
           (brand_code, recipient, recipient_type, type, status, consent_date, source, creation_date,
            transaction_id, updated_at)
    SELECT DISTINCT ON (recipient, recipient_type, type)
           brand_code, recipient, recipient_type, type, status, consent_date, source, creation_date,
           transaction_id, now()
      FROM inserted
     ORDER BY recipient, recipient_type, type,
              coalesce(consent_date, creation_date) DESC, creation_date DESC, transaction_id DESC
    ON CONFLICT (brand_code, recipient, recipient_type, type) DO UPDATE
       SET status = EXCLUDED.status, consent_date = EXCLUDED.consent_date, source = EXCLUDED.source,
           creation_date = EXCLUDED.creation_date, transaction_id = EXCLUDED.transaction_id,
           updated_at = now()
     -- İYS dates have whole seconds: a movement in the same second as our last check is applied.
     WHERE EXCLUDED.creation_date >= date_trunc('second', coalesce(c.checked_at, '-infinity'))
       AND (coalesce(EXCLUDED.consent_date, EXCLUDED.creation_date), EXCLUDED.creation_date)
           > (coalesce(c.consent_date, c.creation_date, '-infinity'), coalesce(c.creation_date, '-infinity'))
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM applied)
"""

SAVE_CURSOR_SQL = """
INSERT INTO iys.sync_state (brand_code, stream, cursor, details)
VALUES (%(brand)s, %(state_stream)s, %(cursor)s, jsonb_build_object('newest_creation_date', %(newest)s::text))
ON CONFLICT (brand_code, stream) DO UPDATE
   SET cursor = EXCLUDED.cursor, details = iys.sync_state.details || EXCLUDED.details, updated_at = now()
"""

MARK_PULL_COMPLETE_SQL = """
INSERT INTO iys.sync_state (brand_code, stream, last_success_at)
VALUES (%(brand)s, %(state_stream)s, %(at)s)
ON CONFLICT (brand_code, stream) DO UPDATE SET last_success_at = EXCLUDED.last_success_at, updated_at = now()
"""

READ_STATE_SQL = """
SELECT cursor, last_success_at, details FROM iys.sync_state WHERE brand_code = %s AND stream = %s
"""


def state_stream(stream: ChangeStream) -> str:
    return f"changes:{ChangeStream(stream).value}"


@dataclass(frozen=True)
class PageOutcome:
    received: int
    new: int
    applied: int

    @property
    def ignored_stale(self) -> int:
        return self.new - self.applied


def store_change_page(conn: psycopg.Connection, *, brand_code: int, stream: ChangeStream, page: ChangePage) -> PageOutcome:
    """Append one page, apply what is newer, and move the cursor past it — atomically."""
    params = {"brand": brand_code, "stream": ChangeStream(stream).value, "state_stream": state_stream(stream)}
    incomplete = [i for i, c in enumerate(page.changes) if not c.transaction_id or not c.creation_date]
    if incomplete:
        raise IysMalformedResponseError(
            f"change-feed movements without transactionId or creationDate at positions {incomplete[:5]}; "
            "nothing from this page was stored",
            endpoint="changes",
        )
    newest = max(c.creation_date for c in page.changes) if page.changes else None
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(CREATE_STAGE_SQL)
        with cur.copy(
            "COPY stage_events (transaction_id, recipient, recipient_type, type, status, consent_date, "
            "creation_date, source) FROM STDIN"
        ) as copy:
            for change in page.changes:
                recipient = change.recipient.strip()
                if change.type.value == "EPOSTA":
                    recipient = recipient.lower()  # İYS stores e-mail lower-case; be robust anyway
                copy.write_row(
                    (
                        change.transaction_id,
                        recipient,
                        change.recipient_type.value,
                        change.type.value,
                        change.status.value,
                        change.consent_date,
                        change.creation_date,
                        change.source.value if change.source else None,
                    )
                )
        new, applied = cur.execute(STORE_EVENTS_SQL, params).fetchone()
        cur.execute(SAVE_CURSOR_SQL, {**params, "cursor": page.after, "newest": newest})
    return PageOutcome(received=len(page.changes), new=new, applied=applied)


def mark_pull_complete(conn: psycopg.Connection, *, brand_code: int, stream: ChangeStream, at: datetime) -> None:
    conn.execute(MARK_PULL_COMPLETE_SQL, {"brand": brand_code, "state_stream": state_stream(stream), "at": at})


def read_stream_state(conn: psycopg.Connection, brand_code: int, stream: ChangeStream):
    return conn.execute(READ_STATE_SQL, (brand_code, state_stream(stream))).fetchone()
