"""Storing change-feed pages: events, consent state and the cursor advance in one transaction.

A page is appended to ``iys.consent_events`` (``transaction_id`` is the primary key) and each
new movement is applied to ``iys.consents`` when it is newer than what is stored — by consent
date, then creation date, then its place in the feed — and not older than the last status
check of that address minus ``check_margin`` (clocks differ: see below). A movement without a
consent date (an operator line closure, a first TACIR record) is ordered by its creation date.

Rules for what İYS sends that we did not expect:

* **The same transaction id twice.** İYS gives several movements of one address made in the
  same second one transaction id. The movement kept (in ``consent_events``) and applied is the
  newest: the later creation date, and at equal creation dates the one İYS lists later (the feed
  is ordered; a later page is later in the feed). A replay of the same movement changes nothing.
* **A value İYS did not document** (a new ``status``, channel or recipient type) is stored in
  ``consent_events`` as sent and never applied to ``iys.consents``. A new ``source`` is stored as
  text and applied (the status is what decides).
* **Clocks.** ``checked_at`` is our worker's clock, İYS stamps ``creationDate`` with its own. A
  movement created up to ``check_margin`` before our check is still applied, in feed order; that
  is safe because the feed is ordered and a later movement always wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from iys_provider.exceptions import IysMalformedResponseError
from iys_provider.models import ChangePage, ChangeStream

#: Movements created this long before our last status check of an address are still applied.
DEFAULT_CHECK_MARGIN = timedelta(minutes=2)

CREATE_STAGE_SQL = """
CREATE TEMP TABLE stage_events (
    ordinal int, transaction_id text, recipient text, recipient_type text, type text, status text,
    consent_date timestamptz, creation_date timestamptz, source text
) ON COMMIT DROP
"""

# One statement: keep the newest movement per transaction id, store it (a replay changes nothing),
# and apply what was stored, newest per address, when newer than the stored state.
STORE_EVENTS_SQL = """
WITH staged AS (
    SELECT DISTINCT ON (transaction_id) *,
           status IN ('ONAY', 'RET') AND type IN ('MESAJ', 'ARAMA', 'EPOSTA')
           AND recipient_type IN ('BIREYSEL', 'TACIR') AS applicable
      FROM stage_events
     ORDER BY transaction_id, creation_date DESC, ordinal DESC
), stored AS (
    INSERT INTO iys.consent_events AS e
           (transaction_id, brand_code, recipient, recipient_type, type, status,
            consent_date, creation_date, source, stream)
    SELECT transaction_id, %(brand)s, recipient, recipient_type, type, status,
           consent_date, creation_date, source, %(stream)s
      FROM staged
    ON CONFLICT (transaction_id) DO UPDATE
       SET recipient = EXCLUDED.recipient, recipient_type = EXCLUDED.recipient_type, type = EXCLUDED.type,
           status = EXCLUDED.status, consent_date = EXCLUDED.consent_date,
           creation_date = EXCLUDED.creation_date, source = EXCLUDED.source, received_at = now()
     WHERE EXCLUDED.creation_date >= e.creation_date
       AND (EXCLUDED.recipient, EXCLUDED.recipient_type, EXCLUDED.type, EXCLUDED.status, EXCLUDED.consent_date,
            EXCLUDED.source)
           IS DISTINCT FROM (e.recipient, e.recipient_type, e.type, e.status, e.consent_date, e.source)
    RETURNING e.transaction_id, (xmax = 0) AS inserted
), applied AS (
    INSERT INTO iys.consents AS c
           (brand_code, recipient, recipient_type, type, status, consent_date, source, creation_date,
            transaction_id, updated_at)
    SELECT DISTINCT ON (recipient, recipient_type, type)
           %(brand)s, recipient, recipient_type, type, status, consent_date, source, creation_date,
           transaction_id, now()
      FROM staged JOIN stored USING (transaction_id)
     WHERE staged.applicable
     ORDER BY recipient, recipient_type, type,
              coalesce(consent_date, creation_date) DESC, creation_date DESC, ordinal DESC
    ON CONFLICT (brand_code, recipient, recipient_type, type) DO UPDATE
       SET status = EXCLUDED.status, consent_date = EXCLUDED.consent_date, source = EXCLUDED.source,
           creation_date = EXCLUDED.creation_date, transaction_id = EXCLUDED.transaction_id,
           updated_at = now()
     -- İYS dates have whole seconds; our check time is our clock, İYS's creation date its own.
     WHERE EXCLUDED.creation_date >= date_trunc('second', coalesce(c.checked_at, '-infinity') - %(check_margin)s)
       AND ((coalesce(EXCLUDED.consent_date, EXCLUDED.creation_date), EXCLUDED.creation_date)
            > (coalesce(c.consent_date, c.creation_date, '-infinity'), coalesce(c.creation_date, '-infinity'))
            -- a later movement under the same transaction id replaces the one it shares it with
            OR (EXCLUDED.transaction_id = c.transaction_id
                AND (coalesce(EXCLUDED.consent_date, EXCLUDED.creation_date), EXCLUDED.creation_date)
                    >= (coalesce(c.consent_date, c.creation_date, '-infinity'), coalesce(c.creation_date, '-infinity'))))
    RETURNING 1
)
SELECT (SELECT count(*) FILTER (WHERE inserted) FROM stored),
       (SELECT count(*) FILTER (WHERE NOT inserted) FROM stored),
       (SELECT count(*) FROM applied),
       (SELECT count(*) FROM staged JOIN stored USING (transaction_id) WHERE NOT staged.applicable)
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
    replaced: int = 0
    held: int = 0  # stored with a value İYS never documented, not applied

    @property
    def ignored_stale(self) -> int:
        return self.new + self.replaced - self.applied - self.held


def store_change_page(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    stream: ChangeStream,
    page: ChangePage,
    check_margin: timedelta = DEFAULT_CHECK_MARGIN,
    advance_cursor: bool = True,
) -> PageOutcome:
    """Append one page, apply what is newer, and move the cursor past it — atomically.

    ``advance_cursor=False`` stores and applies movements that did not come from the feed (the
    daily reconciliation's repair, :mod:`iys_provider.reconciliation.store`) by the same rules,
    leaving the stream's cursor where the feed left it.
    """
    params = {
        "brand": brand_code,
        "stream": ChangeStream(stream).value,
        "state_stream": state_stream(stream),
        "check_margin": check_margin,
    }
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
            "COPY stage_events (ordinal, transaction_id, recipient, recipient_type, type, status, consent_date, "
            "creation_date, source) FROM STDIN"
        ) as copy:
            for ordinal, change in enumerate(page.changes):
                recipient = change.recipient.strip()
                if change.type == "EPOSTA":
                    recipient = recipient.lower()  # İYS stores e-mail lower-case; be robust anyway
                copy.write_row(
                    (
                        ordinal,
                        change.transaction_id,
                        recipient,
                        str(change.recipient_type),
                        str(change.type),
                        str(change.status),
                        change.consent_date,
                        change.creation_date,
                        str(change.source) if change.source is not None else None,
                    )
                )
        new, replaced, applied, held = cur.execute(STORE_EVENTS_SQL, params).fetchone()
        if advance_cursor:
            cur.execute(SAVE_CURSOR_SQL, {**params, "cursor": page.after, "newest": newest})
    return PageOutcome(received=len(page.changes), new=new, applied=applied, replaced=replaced, held=held)


def mark_pull_complete(conn: psycopg.Connection, *, brand_code: int, stream: ChangeStream, at: datetime) -> None:
    conn.execute(MARK_PULL_COMPLETE_SQL, {"brand": brand_code, "state_stream": state_stream(stream), "at": at})


def read_stream_state(conn: psycopg.Connection, brand_code: int, stream: ChangeStream):
    return conn.execute(READ_STATE_SQL, (brand_code, state_stream(stream))).fetchone()
