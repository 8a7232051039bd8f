"""The daily reconciliation's SQL: one day of movements in İYS's file format, ``iys.reconciliations``, the repair.

* **Our file** is streamed out of ``iys.consent_events`` by ``COPY (SELECT …) TO STDOUT``: the
  server formats the rows (Turkey-time dates, CSV quoting) and sends them in blocks, in the
  file's order (index ``consent_events_day``), so a day of a million movements never sits in
  memory; the caller hashes (and, for the archive, writes) each block as it comes.
* **İYS's file** (already on disk) is read line by line into a temporary table and compared
  with our day by transaction id, set-based: what İYS holds and we lack (``missing``), holds
  differently (``changed``), and what we hold and İYS's file lacks (``extra``). Each such
  movement is listed in ``iys.reconciliation_movements``.
* **The repair** stores the missing and changed movements, 1000 at a time, through the change
  feed's own path (:func:`iys_provider.change_feed.store.store_change_page`, without moving its
  cursor): the same newest-wins rules decide what reaches ``iys.consents``. A file without a
  ``status`` column (FAQ Q1's seven) leaves the status to İYS's multi status: the addresses of
  those movements are asked, 1000 per call per recipient type and channel, and each movement is
  stored with İYS's current status of its address (absent from the answer: ``RET``, as multi
  status lists only ``ONAY``). Each movement records where its status came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from iys_provider.change_feed.store import store_change_page
from iys_provider.models import ChangeMovement, ChangePage, ChangeStream
from iys_provider.normalize import normalize_email, normalize_phone
from iys_provider.reconciliation.rules import (
    Difference,
    FileFormat,
    FileReading,
    Summary,
    mask_transaction_id,
    read_file_rows,
    source_class,
    summary_from_counts,
    turkey_day_bounds,
)

#: Movements stored per repair step (one change-feed page).
REPAIR_PAGE_SIZE = 1000

_TURKEY_TEXT = "to_char({} AT TIME ZONE 'Europe/Istanbul', 'YYYY-MM-DD HH24:MI:SS')"
#: Each column of İYS's file as an expression over ``iys.consent_events``.
FILE_COLUMN_SQL = {
    "creationDate": _TURKEY_TEXT.format("creation_date"),
    "transactionId": "transaction_id",
    "recipient": "recipient",
    "recipientType": "recipient_type",
    "type": "type",
    "status": "status",
    "consentDate": _TURKEY_TEXT.format("consent_date"),
    "source": "source",
}

DAY_FILE_SQL = """
COPY (
    SELECT {columns}
      FROM iys.consent_events
     WHERE brand_code = {brand} AND creation_date >= {start} AND creation_date < {end}
     ORDER BY creation_date, transaction_id COLLATE "C"
) TO STDOUT (FORMAT csv, DELIMITER {delimiter})
"""

DAY_SUMMARY_SQL = """
SELECT type, CASE WHEN source LIKE 'IYS\\_%%' THEN 'IYS' ELSE 'HS' END AS source_class, status, count(*)
  FROM iys.consent_events
 WHERE brand_code = %(brand)s AND creation_date >= %(start)s AND creation_date < %(end)s
 GROUP BY 1, 2, 3
"""

RECONCILIATION_COLUMNS = (
    "status",
    "summary_ours",
    "summary_iys",
    "hash_ours",
    "hash_iys",
    "hash_method",
    "difference",
    "archived_file",
    "archived_timestamp",
    "agreed_at",
    "run_id",
    "process_status",
    "hash_queued_since",
    "hash_file",
    "movements_ours",
    "repaired",
    "detail",
    "file_layout",
    "hash_waiting_since",
    "repair",
    "map_index",
)
_JSON_COLUMNS = frozenset({"summary_ours", "summary_iys", "difference", "repair"})

READ_RECONCILIATIONS_SQL = """
SELECT report_date, {columns}, updated_at
  FROM iys.reconciliations
 WHERE brand_code = %(brand)s AND report_date = ANY(%(days)s)
 ORDER BY report_date DESC
""".format(columns=", ".join(RECONCILIATION_COLUMNS))

CREATE_FILE_STAGE_SQL = """
CREATE TEMP TABLE IF NOT EXISTS reconciliation_file (
    ordinal bigint PRIMARY KEY, transaction_id text, recipient text, recipient_type text, type text,
    status text, consent_date text, creation_date text, source text
);
TRUNCATE reconciliation_file
"""

# File rows compared with ours by transaction id. Dates compare as İYS writes them (Turkey time).
COMPARE_SQL = """
WITH file AS (
    SELECT DISTINCT ON (transaction_id) *
      FROM reconciliation_file ORDER BY transaction_id, ordinal DESC
), found AS (
    SELECT f.transaction_id, f.type, f.source,
           CASE
               WHEN e.transaction_id IS NULL THEN 'missing'
               WHEN (f.recipient, f.recipient_type, f.type, f.creation_date, nullif(f.source, ''),
                     nullif(f.consent_date, ''))
                    IS DISTINCT FROM
                    (e.recipient, e.recipient_type, e.type,
                     to_char(e.creation_date AT TIME ZONE 'Europe/Istanbul', 'YYYY-MM-DD HH24:MI:SS'), e.source,
                     to_char(e.consent_date AT TIME ZONE 'Europe/Istanbul', 'YYYY-MM-DD HH24:MI:SS'))
                 OR (%(with_status)s AND f.status IS DISTINCT FROM e.status)
               THEN 'changed'
           END AS kind
      FROM file f
      LEFT JOIN iys.consent_events e ON e.transaction_id = f.transaction_id
    UNION ALL
    SELECT e.transaction_id, e.type, e.source, 'extra'
      FROM iys.consent_events e
     WHERE e.brand_code = %(brand)s AND e.creation_date >= %(start)s AND e.creation_date < %(end)s
       AND NOT EXISTS (SELECT FROM file f WHERE f.transaction_id = e.transaction_id)
), listed AS (
    INSERT INTO iys.reconciliation_movements AS m (brand_code, report_date, transaction_id, kind, type, source)
    SELECT %(brand)s, %(day)s, transaction_id, kind, type, nullif(source, '') FROM found WHERE kind IS NOT NULL
    ON CONFLICT (brand_code, report_date, transaction_id) DO UPDATE
       SET kind = EXCLUDED.kind, type = EXCLUDED.type, source = EXCLUDED.source, found_at = now()
    RETURNING 1
)
SELECT kind, type, CASE WHEN source LIKE 'IYS\\_%%' THEN 'IYS' ELSE 'HS' END, count(*)
  FROM found WHERE kind IS NOT NULL GROUP BY 1, 2, 3
"""

FORGET_LISTED_SQL = "DELETE FROM iys.reconciliation_movements WHERE brand_code = %(brand)s AND report_date = %(day)s"

# The file rows to store, gathered once (a file without status takes it from İYS's multi status
# answer, repair_addresses; NULL: not known, not stored), then read in file order a page at a time by
# their ordinal: each page an index range, whatever the file's size.
GATHER_REPAIR_SQL = """
CREATE TEMP TABLE repair_rows AS
SELECT f.ordinal, f.transaction_id, f.recipient, f.recipient_type, f.type,
       coalesce(nullif(f.status, ''), {asked_status}) AS status,
       nullif(f.consent_date, '') AS consent_date, f.creation_date, nullif(f.source, '') AS source
  FROM reconciliation_file f
  JOIN iys.reconciliation_movements m
    ON m.brand_code = %(brand)s AND m.report_date = %(day)s AND m.transaction_id = f.transaction_id
   AND m.kind IN ('missing', 'changed')
  {join_asked}
"""
ASKED_JOIN = """LEFT JOIN repair_addresses a
    ON a.recipient_type = f.recipient_type AND a.type = f.type AND a.recipient = f.recipient"""
REPAIR_PAGE_SQL = """
SELECT ordinal, transaction_id, recipient, recipient_type, type, status, consent_date, creation_date, source
  FROM repair_rows WHERE ordinal > %(after)s ORDER BY ordinal LIMIT %(limit)s
"""

MARK_REPAIRED_SQL = """
UPDATE iys.reconciliation_movements m
   SET repaired = s.status IS NOT NULL, status = s.status, status_from = CASE WHEN s.status IS NULL THEN NULL
                                                                              ELSE %(status_from)s END
  FROM unnest(%(ids)s::text[], %(statuses)s::text[]) AS s (transaction_id, status)
 WHERE m.brand_code = %(brand)s AND m.report_date = %(day)s AND m.transaction_id = s.transaction_id
"""

# The addresses whose status the file does not give: one row per recipient type, channel and address.
CREATE_ASKED_SQL = """
CREATE TEMP TABLE IF NOT EXISTS repair_addresses (
    recipient_type text, type text, recipient text, status text,
    PRIMARY KEY (recipient_type, type, recipient)
);
TRUNCATE repair_addresses
"""
FILL_ASKED_SQL = """
INSERT INTO repair_addresses (recipient_type, type, recipient)
SELECT DISTINCT f.recipient_type, f.type, f.recipient
  FROM reconciliation_file f
  JOIN iys.reconciliation_movements m
    ON m.brand_code = %(brand)s AND m.report_date = %(day)s AND m.transaction_id = f.transaction_id
   AND m.kind IN ('missing', 'changed')
 WHERE nullif(f.status, '') IS NULL
"""
ASKED_GROUPS_SQL = "SELECT DISTINCT recipient_type, type FROM repair_addresses ORDER BY 1, 2"
ASKED_PAGE_SQL = """
SELECT recipient FROM repair_addresses
 WHERE recipient_type = %(recipient_type)s AND type = %(type)s AND recipient > %(after)s
 ORDER BY recipient LIMIT %(limit)s
"""
SET_ASKED_SQL = """
UPDATE repair_addresses SET status = CASE WHEN recipient = ANY(%(onay)s) THEN 'ONAY' ELSE 'RET' END
 WHERE recipient_type = %(recipient_type)s AND type = %(type)s AND recipient = ANY(%(asked)s)
"""

EXAMPLES_SQL = """
SELECT kind, (array_agg(transaction_id ORDER BY transaction_id))[1:%(per_kind)s]
  FROM iys.reconciliation_movements
 WHERE brand_code = %(brand)s AND report_date = %(day)s
 GROUP BY kind
"""

LAST_LAYOUT_SQL = """
SELECT file_layout FROM iys.reconciliations
 WHERE brand_code = %(brand)s AND file_layout IS NOT NULL AND status IN ('agreed', 'repaired_and_agreed')
 ORDER BY report_date DESC LIMIT 1
"""

#: ``(recipient type, channel, addresses)`` → the addresses İYS holds as ONAY (its multi status).
OnayLookup = Callable[[str, str, list[str]], set[str]]


def day_summary(conn: psycopg.Connection, brand_code: int, day: date) -> Summary:
    """Our movements of ``day`` per channel, source class and status (see :func:`summary_from_counts`)."""
    start, end = turkey_day_bounds(day)
    rows = conn.execute(DAY_SUMMARY_SQL, {"brand": brand_code, "start": start, "end": end}).fetchall()
    return summary_from_counts((row[0], row[1], row[2], row[3]) for row in rows)


def stream_day_file(
    conn: psycopg.Connection, brand_code: int, day: date, fmt: FileFormat, sink: Callable[[bytes], Any]
) -> int:
    """Write our file of ``day`` to ``sink`` block by block (header first, as ``fmt`` says); returns its rows.

    The rows are formatted by the server (``COPY … TO STDOUT``, CSV), so memory holds one block
    at a time whatever the day's size.
    """
    start, end = turkey_day_bounds(day)
    columns = [sql.SQL(FILE_COLUMN_SQL[column]) for column in fmt.columns]
    if fmt.trailing_delimiter:
        columns.append(sql.SQL("NULL::text"))  # CSV writes NULL as nothing: the line ends with the delimiter
    statement = sql.SQL(DAY_FILE_SQL).format(
        columns=sql.SQL(", ").join(columns),
        brand=sql.Literal(brand_code),
        start=sql.Literal(start),
        end=sql.Literal(end),
        delimiter=sql.Literal(fmt.delimiter),
    )
    header = fmt.header_bytes()
    if header:
        sink(header)
    crlf = fmt.line_end == "\r\n"
    rows = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for block in copy:
            data = bytes(block)
            rows += data.count(b"\n")
            sink(data.replace(b"\n", b"\r\n") if crlf else data)
    return rows


def read_reconciliations(conn: psycopg.Connection, brand_code: int, days: Iterable[date]) -> dict[date, dict[str, Any]]:
    """The rows of ``iys.reconciliations`` for ``days`` (those that exist), by day."""
    rows = conn.execute(READ_RECONCILIATIONS_SQL, {"brand": brand_code, "days": list(days)}).fetchall()
    names = ("report_date", *RECONCILIATION_COLUMNS, "updated_at")
    return {row[0]: dict(zip(names, row, strict=True)) for row in rows}


def read_reconciliation(conn: psycopg.Connection, brand_code: int, day: date) -> dict[str, Any] | None:
    return read_reconciliations(conn, brand_code, [day]).get(day)


def save_reconciliation(conn: psycopg.Connection, brand_code: int, day: date, **values: Any) -> None:
    """Insert or update the day's row with ``values`` (columns of :data:`RECONCILIATION_COLUMNS`)."""
    unknown = set(values) - set(RECONCILIATION_COLUMNS)
    if unknown:
        raise ValueError(f"not columns of iys.reconciliations: {sorted(unknown)}")
    names = list(values)
    params = {
        name: json.dumps(value) if name in _JSON_COLUMNS and value is not None else value
        for name, value in values.items()
    }
    params.update(brand=brand_code, day=day)
    insert_columns = sql.SQL(", ").join(sql.Identifier(name) for name in names)
    insert_values = sql.SQL(", ").join(sql.Placeholder(name) for name in names)
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(name), sql.Identifier(name)) for name in names
    )
    statement = sql.SQL(
        "INSERT INTO iys.reconciliations (brand_code, report_date{sep}{columns}) VALUES (%(brand)s, %(day)s{sep}{values}) "
        "ON CONFLICT (brand_code, report_date) DO UPDATE SET updated_at = now(){sep}{updates}"
    ).format(sep=sql.SQL(", ") if names else sql.SQL(""), columns=insert_columns, values=insert_values, updates=updates)
    conn.execute(statement, params)


def last_agreed_layout(conn: psycopg.Connection, brand_code: int) -> str | None:
    """The reading of İYS's file the brand's latest agreed day was written in (tried first next time)."""
    row = conn.execute(LAST_LAYOUT_SQL, {"brand": brand_code}).fetchone()
    return row[0] if row else None


def load_iys_file(conn: psycopg.Connection, lines: Iterable[bytes], fmt: FileFormat) -> FileReading:
    """İYS's file (raw lines, streamed) into the session's temporary ``reconciliation_file``.

    Returns what reading found: the rows, and every line that could not be read (by number and reason).
    """
    reading = FileReading()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(CREATE_FILE_STAGE_SQL)
        with cur.copy(
            "COPY reconciliation_file (ordinal, transaction_id, recipient, recipient_type, type, status, "
            "consent_date, creation_date, source) FROM STDIN"
        ) as copy:
            for row in read_file_rows(lines, fmt, reading):
                copy.write_row(
                    (
                        reading.rows,
                        row.get("transactionId"),
                        row.get("recipient"),
                        row.get("recipientType"),
                        row.get("type"),
                        row.get("status"),
                        row.get("consentDate"),
                        row.get("creationDate"),
                        row.get("source"),
                    )
                )
        cur.execute("ANALYZE reconciliation_file")  # temporary tables are never analysed automatically
    return reading


def compare_with_file(
    conn: psycopg.Connection, brand_code: int, day: date, *, with_status: bool, examples: int = 3
) -> Difference:
    """Our day against the loaded file; lists each differing movement in ``iys.reconciliation_movements``.

    ``with_status``: the file has a ``status`` column, compared too. The difference carries the
    first ``examples`` transaction ids of each kind, masked.
    """
    start, end = turkey_day_bounds(day)
    params = {"brand": brand_code, "day": day, "start": start, "end": end, "with_status": with_status}
    difference = Difference()
    with conn.transaction():
        conn.execute(FORGET_LISTED_SQL, params)
        for kind, channel, source, count in conn.execute(COMPARE_SQL, params).fetchall():
            difference.add(kind, channel, source, count)
        for kind, ids in conn.execute(EXAMPLES_SQL, {**params, "per_kind": examples}).fetchall():
            difference.examples[kind] = [mask_transaction_id(transaction_id) for transaction_id in ids]
    # Just filled: without fresh statistics the repair's joins on it are planned as if it were empty
    # (a nested loop over the whole file per listed movement).
    conn.execute("ANALYZE iys.reconciliation_movements")
    return difference


@dataclass
class RepairOutcome:
    """What the repair stored, and which way: statuses stored, where they came from, what reached consents."""

    status_from: str = "file"
    stored: int = 0
    applied: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    unresolved: int = 0
    status_calls: int = 0
    addresses_asked: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "status_from": self.status_from,
            "stored": self.stored,
            "applied": self.applied,
            "by_status": self.by_status,
            "unresolved": self.unresolved,
            "status_calls": self.status_calls,
            "addresses_asked": self.addresses_asked,
        }


def _askable(recipient: str, channel: str) -> bool:
    """An address İYS's multi status accepts as it is (asking with another would be a 4xx)."""
    normalized = normalize_email(recipient) if channel == "EPOSTA" else normalize_phone(recipient)
    return normalized.ok and normalized.value == recipient


def ask_statuses(
    conn: psycopg.Connection, brand_code: int, day: date, onay_lookup: OnayLookup, *, page_size: int = REPAIR_PAGE_SIZE
) -> RepairOutcome:
    """İYS's current status of every address whose lacking movement has no status in the file.

    One multi status call per ``page_size`` addresses of one recipient type and channel (İYS's
    limit is 1000); addresses İYS would refuse are not asked (no 4xx), their movements stay
    unresolved.
    """
    outcome = RepairOutcome(status_from="multi_status")
    params = {"brand": brand_code, "day": day}
    with conn.transaction():
        conn.execute(CREATE_ASKED_SQL)
        conn.execute(FILL_ASKED_SQL, params)
        conn.execute("ANALYZE repair_addresses")
    for recipient_type, channel in conn.execute(ASKED_GROUPS_SQL).fetchall():
        after = ""
        while True:
            page = [
                row[0]
                for row in conn.execute(
                    ASKED_PAGE_SQL,
                    {"recipient_type": recipient_type, "type": channel, "after": after, "limit": page_size},
                ).fetchall()
            ]
            if not page:
                break
            after = page[-1]
            asked = [recipient for recipient in page if _askable(recipient, channel)]
            if not asked:
                continue
            onay = onay_lookup(recipient_type, channel, asked)
            outcome.status_calls += 1
            outcome.addresses_asked += len(asked)
            conn.execute(
                SET_ASKED_SQL, {"recipient_type": recipient_type, "type": channel, "asked": asked, "onay": list(onay)}
            )
    return outcome


def repair_from_file(
    conn: psycopg.Connection,
    brand_code: int,
    day: date,
    *,
    with_status: bool = True,
    onay_lookup: OnayLookup | None = None,
    page_size: int = REPAIR_PAGE_SIZE,
) -> RepairOutcome:
    """Store the missing and changed movements of the loaded file as the change feed would.

    A page at a time through :func:`~iys_provider.change_feed.store.store_change_page` (split by
    stream: ``IYS_*`` sources are the IYS stream), so the newest-wins rules of the feed decide
    what reaches ``iys.consents``; the feed's cursors stay where they are. Without a ``status``
    column the statuses come from ``onay_lookup`` (:func:`ask_statuses`).
    """
    if with_status:
        outcome = RepairOutcome(status_from="file")
        gather = sql.SQL(GATHER_REPAIR_SQL).format(asked_status=sql.SQL("NULL"), join_asked=sql.SQL(""))
    else:
        if onay_lookup is None:
            raise ValueError("a file without status needs İYS's multi status (onay_lookup) to repair")
        outcome = ask_statuses(conn, brand_code, day, onay_lookup, page_size=page_size)
        gather = sql.SQL(GATHER_REPAIR_SQL).format(asked_status=sql.SQL("a.status"), join_asked=sql.SQL(ASKED_JOIN))
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS repair_rows")
        conn.execute(gather, {"brand": brand_code, "day": day})
        conn.execute("ALTER TABLE repair_rows ADD PRIMARY KEY (ordinal)")
        conn.execute("ANALYZE repair_rows")
    after = 0
    params = {"brand": brand_code, "day": day, "limit": page_size}
    while True:
        rows = conn.execute(REPAIR_PAGE_SQL, {**params, "after": after}).fetchall()
        if not rows:
            return outcome
        after = rows[-1][0]
        by_stream: dict[ChangeStream, list[ChangeMovement]] = {}
        for _, transaction_id, recipient, recipient_type, type_, status, consent_date, creation_date, source in rows:
            if status is None:
                outcome.unresolved += 1
                continue
            outcome.by_status[status] = outcome.by_status.get(status, 0) + 1
            movement = ChangeMovement.model_validate(
                {
                    "transactionId": transaction_id,
                    "recipient": recipient,
                    "recipientType": recipient_type,
                    "type": type_,
                    "status": status,
                    "consentDate": consent_date,
                    "creationDate": creation_date,
                    "source": source,
                }
            )
            by_stream.setdefault(ChangeStream(source_class(source)), []).append(movement)
        # Each stream's page is its own transaction (store_change_page's staging table is dropped at
        # commit); a rerun after a crash between them stores nothing twice (transaction ids are keys).
        for stream, movements in by_stream.items():
            page_outcome = store_change_page(
                conn,
                brand_code=brand_code,
                stream=stream,
                page=ChangePage(after=None, changes=movements),
                advance_cursor=False,
            )
            outcome.stored += page_outcome.new + page_outcome.replaced
            outcome.applied += page_outcome.applied
        conn.execute(
            MARK_REPAIRED_SQL,
            {
                **params,
                "ids": [row[1] for row in rows],
                "statuses": [row[5] for row in rows],
                "status_from": outcome.status_from,
            },
        )


def drop_file_stage(conn: psycopg.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS reconciliation_file")
    conn.execute("DROP TABLE IF EXISTS repair_addresses")
    conn.execute("DROP TABLE IF EXISTS repair_rows")
