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
  feed's own path (:func:`iys_provider.change_feed_store.store_change_page`, without moving its
  cursor): the same newest-wins rules decide what reaches ``iys.consents``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from iys_provider.change_feed_store import store_change_page
from iys_provider.models import ChangeMovement, ChangePage, ChangeStream
from iys_provider.reconciliation import (
    Difference,
    FileFormat,
    Summary,
    parse_file_lines,
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
)
_JSON_COLUMNS = frozenset({"summary_ours", "summary_iys", "difference"})

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

# The file rows to store, in file order, one page at a time (keyset on the ordinal).
REPAIR_PAGE_SQL = """
SELECT f.ordinal, f.transaction_id, f.recipient, f.recipient_type, f.type, f.status,
       nullif(f.consent_date, ''), f.creation_date, nullif(f.source, '')
  FROM reconciliation_file f
  JOIN iys.reconciliation_movements m
    ON m.brand_code = %(brand)s AND m.report_date = %(day)s AND m.transaction_id = f.transaction_id
   AND m.kind IN ('missing', 'changed')
 WHERE f.ordinal > %(after)s
 ORDER BY f.ordinal
 LIMIT %(limit)s
"""

MARK_REPAIRED_SQL = """
UPDATE iys.reconciliation_movements SET repaired = true
 WHERE brand_code = %(brand)s AND report_date = %(day)s AND transaction_id = ANY(%(ids)s)
"""


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


def load_iys_file(conn: psycopg.Connection, lines: Iterator[str], fmt: FileFormat) -> int:
    """İYS's file (text lines, streamed) into the session's temporary ``reconciliation_file``; returns its rows."""
    rows = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(CREATE_FILE_STAGE_SQL)
        with cur.copy(
            "COPY reconciliation_file (ordinal, transaction_id, recipient, recipient_type, type, status, "
            "consent_date, creation_date, source) FROM STDIN"
        ) as copy:
            for row in parse_file_lines(lines, fmt):
                rows += 1
                copy.write_row(
                    (
                        rows,
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
    return rows


def compare_with_file(conn: psycopg.Connection, brand_code: int, day: date, fmt: FileFormat) -> Difference:
    """Our day against the loaded file; lists each differing movement in ``iys.reconciliation_movements``."""
    start, end = turkey_day_bounds(day)
    params = {"brand": brand_code, "day": day, "start": start, "end": end, "with_status": "status" in fmt.columns}
    difference = Difference()
    with conn.transaction():
        conn.execute(FORGET_LISTED_SQL, params)
        for kind, channel, source, count in conn.execute(COMPARE_SQL, params).fetchall():
            difference.add(kind, channel, source, count)
    return difference


def repair_from_file(conn: psycopg.Connection, brand_code: int, day: date, *, page_size: int = REPAIR_PAGE_SIZE) -> int:
    """Store the missing and changed movements of the loaded file as the change feed would; returns how many.

    A page at a time through :func:`~iys_provider.change_feed_store.store_change_page` (split by
    stream: ``IYS_*`` sources are the IYS stream), so the newest-wins rules of the feed decide
    what reaches ``iys.consents``; the feed's cursors stay where they are.
    """
    stored = 0
    after = 0
    params = {"brand": brand_code, "day": day, "limit": page_size}
    while True:
        rows = conn.execute(REPAIR_PAGE_SQL, {**params, "after": after}).fetchall()
        if not rows:
            return stored
        after = rows[-1][0]
        by_stream: dict[ChangeStream, list[ChangeMovement]] = {}
        for _, transaction_id, recipient, recipient_type, type_, status, consent_date, creation_date, source in rows:
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
        for stream, movements in by_stream.items():
            outcome = store_change_page(
                conn,
                brand_code=brand_code,
                stream=stream,
                page=ChangePage(after=None, changes=movements),
                advance_cursor=False,
            )
            stored += outcome.new + outcome.replaced
        conn.execute(MARK_REPAIRED_SQL, {**params, "ids": [row[1] for row in rows]})


def drop_file_stage(conn: psycopg.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS reconciliation_file")
