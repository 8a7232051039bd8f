"""Writing what İYS said into the ``iys`` schema: COPY into staging tables, then set-based upserts.

Everything one group of checked users taught us (consents, user links, quarantine rows, source
fingerprints) is written in one transaction, so a group is either fully recorded or not at all,
and a rerun of it converges to the same state. The initial sync marks its batch finished in that
same transaction (:func:`iys_provider.initial_sync.consent_checks.record_checked_users`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import NamedTuple

import psycopg
from psycopg import sql

from iys_provider.models import ConsentType, PreparedUsers, RecipientType, WriteOutcome

# Every join of a write pairs one batch of staged rows with a table that grows to millions of
# rows; the staging tables have no statistics, and a hash or merge join chosen on a stale
# estimate would read the whole table for every batch. Index lookups keep a write O(batch).
JOIN_SETTINGS_SQL = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"

CREATE_STAGING_SQL = """
CREATE TEMP TABLE stage_users (
    user_id text, digest text, linked_kinds text[], rejected_fields text[]
) ON COMMIT DROP;
CREATE TEMP TABLE stage_links (user_id text, kind text, recipient text, recipient_type text) ON COMMIT DROP;
CREATE TEMP TABLE stage_rejections (user_id text, field text, raw_value text, reason text) ON COMMIT DROP;
CREATE TEMP TABLE stage_checks (recipient text, recipient_type text, type text, onay boolean) ON COMMIT DROP;
"""

# Only users with a field that does not link any more are looked up: a batch of users whose
# phone and e-mail are both valid costs no lookup at all.
DELETE_STALE_LINKS_SQL = """
DELETE FROM iys.user_recipients ur
 USING stage_users u
 WHERE cardinality(u.linked_kinds) < 2
   AND ur.brand_code = %(brand)s AND ur.user_id = u.user_id AND ur.kind <> ALL (u.linked_kinds)
"""

UPSERT_LINKS_SQL = """
INSERT INTO iys.user_recipients AS ur (brand_code, user_id, kind, recipient, recipient_type)
SELECT %(brand)s, user_id, kind, recipient, recipient_type FROM stage_links
ON CONFLICT (brand_code, user_id, kind) DO UPDATE
   SET recipient = EXCLUDED.recipient, recipient_type = EXCLUDED.recipient_type, updated_at = now()
 WHERE (ur.recipient, ur.recipient_type) IS DISTINCT FROM (EXCLUDED.recipient, EXCLUDED.recipient_type)
"""

CLEAR_FIXED_QUARANTINE_SQL = """
DELETE FROM iys.rejected_recipients r
 USING stage_users u
 WHERE r.brand_code = %(brand)s AND r.user_id = u.user_id AND r.field <> ALL (u.rejected_fields)
"""

UPSERT_QUARANTINE_SQL = """
INSERT INTO iys.rejected_recipients AS r (brand_code, user_id, field, raw_value, reason, seen_at)
SELECT %(brand)s, user_id, field, raw_value, reason, now() FROM stage_rejections
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


_UPSERTED_STATUS = _status_after_check("EXCLUDED.status = 'ONAY'", "EXCLUDED.checked_at")

# A status change invalidates the movement details we held (date, source, transaction): the
# multi-status answer does not carry them, and stale ones would mislead the H178 guard.
# The statement counts its own status changes: a changed or newly known row is stamped with this
# statement's timestamp, which no earlier write can carry. (A separate count joined with the
# consents would cost a pass over the whole table for every batch.)
UPSERT_CHECKED_CONSENTS_SQL = f"""
WITH upserted AS (
    INSERT INTO iys.consents AS c (brand_code, recipient, recipient_type, type, status, checked_at, updated_at)
    SELECT %(brand)s, recipient, recipient_type, type, CASE WHEN onay THEN 'ONAY' END, %(checked)s,
           statement_timestamp()
      FROM stage_checks
    ON CONFLICT (brand_code, recipient, recipient_type, type) DO UPDATE
       SET status         = {_UPSERTED_STATUS},
           consent_date   = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.consent_date END,
           source         = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.source END,
           creation_date  = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.creation_date END,
           transaction_id = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN NULL ELSE c.transaction_id END,
           updated_at     = CASE WHEN ({_UPSERTED_STATUS}) IS DISTINCT FROM c.status THEN statement_timestamp()
                                 ELSE c.updated_at END,
           checked_at     = greatest(c.checked_at, EXCLUDED.checked_at)
    RETURNING status IS NOT NULL AND updated_at = statement_timestamp() AS status_changed
)
SELECT count(*) FILTER (WHERE status_changed) FROM upserted
"""

UPSERT_DIGESTS_SQL = """
INSERT INTO iys.user_sources AS us (brand_code, user_id, digest, seen_at)
SELECT %(brand)s, user_id, digest, now() FROM stage_users
ON CONFLICT (brand_code, user_id) DO UPDATE SET digest = EXCLUDED.digest, seen_at = EXCLUDED.seen_at
"""

CONSENT_TOTALS_SQL = """
SELECT type, count(*) FILTER (WHERE status = 'ONAY'), count(*) FILTER (WHERE status = 'RET'),
       count(*) FILTER (WHERE status IS NULL)
  FROM iys.consents WHERE brand_code = %s GROUP BY type ORDER BY type
"""

# Every channel gets a row, a channel nobody may be messaged on included (0, not "not recorded").
RECORD_SENDABLE_COUNTS_SQL = """
INSERT INTO iys.sendable_counts AS s (brand_code, type, users, counted_at)
SELECT %(brand)s, channel, coalesce(counted.users, 0), now()
  FROM unnest(%(channels)s::text[]) AS channel
  LEFT JOIN (SELECT type, count(*) AS users FROM iys.sendable WHERE brand_code = %(brand)s GROUP BY type) counted
    ON counted.type = channel
ON CONFLICT (brand_code, type) DO UPDATE SET users = EXCLUDED.users, counted_at = EXCLUDED.counted_at
"""
READ_SENDABLE_COUNTS_SQL = "SELECT type, users, counted_at FROM iys.sendable_counts WHERE brand_code = %s"


class ConsentTotals(NamedTuple):
    type: str
    onay: int
    ret: int
    unknown: int  # İYS holds no ONAY we know of: not sendable


def write_checked_users(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    prepared: PreparedUsers,
    onay: Mapping[tuple[RecipientType, ConsentType], set[str]],
    checked_at: datetime,
) -> WriteOutcome:
    """Record a checked group of users in one transaction (see module docstring).

    Call it on an autocommit connection, or in a transaction that ends right after it: its
    ``SET LOCAL`` settings (no hash or merge joins, asynchronous commit) last until the end of
    the enclosing transaction.
    """
    params = {"brand": brand_code, "checked": checked_at}
    with conn.transaction(), conn.cursor() as cur:
        # Safe without a flush: a commit lost in a crash loses what marks the work done with it
        # (the users' fingerprints, a batch's ledger entry), so the work is simply done again.
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.execute(JOIN_SETTINGS_SQL)
        cur.execute(CREATE_STAGING_SQL)
        # User ids come from the source and may hold anything; one search over the batch tells
        # whether any of them needs escaping, which spares an escape call per row.
        escape_id = _escape if _COPY_SPECIALS.search("".join([u[0] for u in prepared.user_rows])) else str
        _copy_text(
            cur,
            "stage_users",
            (
                f"{escape_id(u)}\t{digest}\t{{{','.join(linked)}}}\t{{{','.join(rejected)}}}\n"
                for u, digest, linked, rejected in prepared.user_rows
            ),
        )
        _copy_text(cur, "stage_links", (f"{escape_id(a)}\t{b}\t{c}\t{d}\n" for a, b, c, d in prepared.links))
        _copy_text(cur, "stage_rejections", ("\t".join(map(_escape, row)) + "\n" for row in prepared.rejections))
        consent_rows = 0
        for (rtype, ctype), recipients in prepared.to_check.items():
            onay_set = onay.get((rtype, ctype), set())
            suffix_onay, suffix_not = f"\t{rtype.value}\t{ctype.value}\tt\n", f"\t{rtype.value}\t{ctype.value}\tf\n"
            _copy_text(cur, "stage_checks", (r + (suffix_onay if r in onay_set else suffix_not) for r in recipients))
            consent_rows += len(recipients)
        cur.execute(DELETE_STALE_LINKS_SQL, params)
        cur.execute(UPSERT_LINKS_SQL, params)
        cur.execute(CLEAR_FIXED_QUARANTINE_SQL, params)
        cur.execute(UPSERT_QUARANTINE_SQL, params)
        status_changes = cur.execute(UPSERT_CHECKED_CONSENTS_SQL, params).fetchone()[0]
        cur.execute(UPSERT_DIGESTS_SQL, params)
    return WriteOutcome(consent_rows, status_changes, prepared.linked, prepared.quarantined)


def record_sendable_counts(conn: psycopg.Connection, brand_code: int) -> None:
    """Count ``iys.sendable`` per channel into ``iys.sendable_counts``: a task that wrote consents or links does it last.

    A join of the user links with the consents (about 1.4 s at a million users): done once per run
    here, so a reader (the İYS page) gets the figure from a row.
    """
    conn.execute(RECORD_SENDABLE_COUNTS_SQL, {"brand": brand_code, "channels": [c.value for c in ConsentType]})


def recorded_sendable_counts(
    conn: psycopg.Connection, brand_code: int
) -> tuple[dict[str, int] | None, datetime | None]:
    """The brand's last recorded sendable users per channel and when they were counted; ``(None, None)`` before any."""
    rows = conn.execute(READ_SENDABLE_COUNTS_SQL, (brand_code,)).fetchall()
    if not rows:
        return None, None
    return {channel: users for channel, users, _ in rows}, min(counted_at for _, _, counted_at in rows)


def consent_totals(conn: psycopg.Connection, brand_code: int) -> list[ConsentTotals]:
    """The brand's consents per channel by status."""
    return list(map(ConsentTotals._make, conn.execute(CONSENT_TOTALS_SQL, (brand_code,)).fetchall()))


# COPY's text format: one line per row, tab-separated, \N for NULL. Building the lines in Python
# and sending them in large chunks costs a fraction of a write_row() call per row. Normalised
# recipients, kinds, types, reasons and digests never hold a special character; source values
# (user ids, rejected raw values) are escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIALS = re.compile(r"[\\\t\n\r]")
_COPY_CHUNK_LINES = 20_000


def _escape(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def _copy_text(cur: psycopg.Cursor, table: str, lines) -> None:
    with cur.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as copy:
        chunk: list[str] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) == _COPY_CHUNK_LINES:
                copy.write("".join(chunk))
                chunk.clear()
        if chunk:
            copy.write("".join(chunk))
