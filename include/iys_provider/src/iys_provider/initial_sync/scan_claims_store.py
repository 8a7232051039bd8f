"""SQL of a scan's address claims (the rules are in :mod:`iys_provider.initial_sync.scan_claims`).

Each open scan keeps its claims in a table of its own, ``iys.initial_sync_claims_<scan_id>``,
created by the first batch that claims and dropped with one statement when the scan is finished
or abandoned: deleting a million rows would add seconds to the end of every initial sync. The
table is UNLOGGED: claims only save İYS calls, so losing them in a server crash costs a few
repeated questions, never a wrong answer (a batch asks everything it claims, and whatever it
finds claimed by nobody).
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from iys_provider.initial_sync.scan_ledger import ScanBatch

CLAIMS_TABLE_PREFIX = "initial_sync_claims_"
CLAIMS_TABLE_EXISTS_SQL = "SELECT to_regclass(%s) IS NOT NULL"
# Creating and dropping a scan's table hold this lock: two batches must not create it at once
# (CREATE ... IF NOT EXISTS can still collide), nor a batch of a scan being abandoned recreate it.
LOCK_CLAIMS_TABLE_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('iys.initial_sync_claims', %s))"
SCAN_IS_OPEN_SQL = "SELECT EXISTS (SELECT FROM iys.initial_sync_scans WHERE scan_id = %s AND finished_at IS NULL)"
CREATE_CLAIMS_TABLE_SQL = """
CREATE UNLOGGED TABLE IF NOT EXISTS {table} (
    recipient_type  text     NOT NULL,
    recipient       text     NOT NULL,
    batch_no        integer  NOT NULL,
    PRIMARY KEY (recipient_type, recipient)
)
"""
# Addresses are personal data: nobody but the package's own role reads them.
REVOKE_CLAIMS_TABLE_SQL = "REVOKE ALL ON {table} FROM PUBLIC"
CREATE_STAGE_SQL = "CREATE TEMP TABLE stage_claims (recipient_type text, recipient text) ON COMMIT DROP"
COPY_STAGE_SQL = "COPY stage_claims (recipient_type, recipient) FROM STDIN"
# One statement claims what is free and reports what another batch holds. The conflict's no-op
# update (only of rows another batch holds) makes RETURNING show those rows with their holder;
# this batch's own earlier claims are neither updated nor returned. Rows are claimed in key order,
# the same in every batch, so two batches claiming overlapping addresses at once wait for each
# other instead of deadlocking.
CLAIM_SQL = """
WITH claimed AS (
    INSERT INTO {table} AS c (recipient_type, recipient, batch_no)
    SELECT recipient_type, recipient, %(batch_no)s FROM stage_claims ORDER BY recipient_type, recipient
    ON CONFLICT (recipient_type, recipient) DO UPDATE SET batch_no = c.batch_no
     WHERE c.batch_no <> EXCLUDED.batch_no
    RETURNING c.recipient_type, c.recipient, c.batch_no
)
SELECT recipient_type, recipient FROM claimed WHERE batch_no <> %(batch_no)s
"""
DROP_CLAIMS_TABLE_SQL = "DROP TABLE IF EXISTS {table}"


def claims_table_name(scan_id: int) -> str:
    return f"iys.{CLAIMS_TABLE_PREFIX}{int(scan_id)}"


def claims_table(scan_id: int) -> sql.Identifier:
    return sql.Identifier(*claims_table_name(scan_id).split("."))


def claim_addresses(
    conn: psycopg.Connection, batch: ScanBatch, addresses: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Claim the (recipient type, address) pairs for ``batch``; those another batch of the scan holds.

    Commits on its own (other batches must see the claims at once): call it outside a transaction.
    A batch of a scan no longer open (abandoned by a rescan meanwhile) claims nothing and is left
    nothing: what it writes no longer matters to the scan.
    """
    table = claims_table(batch.scan_id)
    if not _ensure_claims_table(conn, batch.scan_id):
        return set()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(CREATE_STAGE_SQL)
        with cur.copy(COPY_STAGE_SQL) as copy:
            # Normalised addresses and recipient types hold no tab, newline or backslash.
            copy.write("".join(f"{rtype}\t{address}\n" for rtype, address in addresses))
        cur.execute(sql.SQL(CLAIM_SQL).format(table=table), {"batch_no": batch.batch_no})
        return {(rtype, address) for rtype, address in cur.fetchall()}


def _ensure_claims_table(conn: psycopg.Connection, scan_id: int) -> bool:
    """Create the scan's claims table unless it exists; whether it does now (not for a closed scan)."""
    table = claims_table(scan_id)
    if conn.execute(CLAIMS_TABLE_EXISTS_SQL, (claims_table_name(scan_id),)).fetchone()[0]:
        return True
    with conn.transaction():
        conn.execute(LOCK_CLAIMS_TABLE_SQL, (scan_id,))
        if not conn.execute(SCAN_IS_OPEN_SQL, (scan_id,)).fetchone()[0]:
            return False
        conn.execute(sql.SQL(CREATE_CLAIMS_TABLE_SQL).format(table=table))
        conn.execute(sql.SQL(REVOKE_CLAIMS_TABLE_SQL).format(table=table))
    return True


def drop_claims(conn: psycopg.Connection, scan_id: int) -> None:
    """Forget a finished or abandoned scan's claims (call it in the transaction that closes the scan)."""
    conn.execute(LOCK_CLAIMS_TABLE_SQL, (scan_id,))
    conn.execute(sql.SQL(DROP_CLAIMS_TABLE_SQL).format(table=claims_table(scan_id)))
