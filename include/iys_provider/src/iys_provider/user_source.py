"""Reading the brand's users through the configurable source query.

The query is operator input (the Airflow Variable ``iys_recipients_sql``) and is trusted like any
SQL a data engineer deploys: it is wrapped as a sub-query, never concatenated with user data.
It must return ``user_id`` and at least one of ``phone`` and ``email``; ``recipient_type``
(``BIREYSEL`` by default, or ``TACIR``) is optional. The package only ever reads through it
(the initial sync's queue, :mod:`iys_provider.scan_ledger_store`, copies what it reads).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import psycopg
from psycopg import sql

DEFAULT_RECIPIENTS_SQL = "SELECT id::text AS user_id, phone, email FROM public.users"
RECIPIENTS_SQL_VARIABLE = "iys_recipients_sql"
REQUIRED_COLUMNS = ("user_id",)
ADDRESS_COLUMNS = ("phone", "email")


class SourceQueryError(ValueError):
    """The source query cannot be used as is; the message says what to change."""


class SourceCounts(NamedTuple):
    users: int
    null_user_ids: int


class SourceUser(NamedTuple):
    """One row of the source query, in the column order every reading query selects."""

    user_id: str | None
    phone: object
    email: object
    recipient_type: object
    digest: str


def configured_user_source(recipients_sql: str | None = None) -> UserSource:
    """The given query, else the Airflow Variable ``iys_recipients_sql``, else the default."""
    if not recipients_sql:
        # Imported here: this module is used outside Airflow too (benchmarks, tests).
        from airflow.sdk import Variable

        recipients_sql = Variable.get(RECIPIENTS_SQL_VARIABLE, default=DEFAULT_RECIPIENTS_SQL)
    return UserSource(recipients_sql)


class UserSource:
    """Access to the users returned by ``recipients_sql``.

    Batches are numbered over ``user_id`` as text in the "C" collation, so a plan does not depend
    on the database's default collation.
    """

    def __init__(self, recipients_sql: str) -> None:
        cleaned = recipients_sql.strip().rstrip(";").strip()
        if not cleaned:
            raise SourceQueryError("the recipients query is empty")
        self.recipients_sql = cleaned

    def columns(self, conn: psycopg.Connection) -> list[str]:
        with conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("SELECT * FROM ({}) AS src LIMIT 0").format(sql.SQL(self.recipients_sql)))
            except psycopg.Error as exc:
                raise SourceQueryError(f"the recipients query failed: {exc.diag.message_primary or exc}") from None
            return [d.name for d in cur.description or []]

    def _projection(self, conn: psycopg.Connection) -> sql.Composed:
        columns = self.columns(conn)
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing or not any(c in columns for c in ADDRESS_COLUMNS):
            raise SourceQueryError(
                "the recipients query must return a user_id column and a phone and/or an email column; "
                f"it returns {columns}"
            )

        def col(name: str) -> sql.Composable:
            return sql.SQL("src.{}::text").format(sql.Identifier(name)) if name in columns else sql.SQL("NULL::text")

        return sql.SQL(
            "src.user_id::text AS user_id, {phone} AS phone, {email} AS email, {rtype} AS recipient_type, "
            "md5(concat_ws(chr(31), {phone}, {email}, {rtype})) AS digest"
        ).format(phone=col("phone"), email=col("email"), rtype=col("recipient_type"))

    def count_rows(self, conn: psycopg.Connection) -> SourceCounts:
        """How many rows the query returns with a user_id, and how many without (one pass)."""
        self._projection(conn)  # validates the columns with a clear message
        query = sql.SQL("SELECT count(src.user_id), count(*) - count(src.user_id) FROM ({}) AS src").format(
            sql.SQL(self.recipients_sql)
        )
        return SourceCounts(*conn.execute(query).fetchone())

    def unique_users(self, conn: psycopg.Connection) -> sql.Composed:
        """A query of the source's users with a user_id, one row each, in :class:`SourceUser` columns.

        A user_id the query returns twice is ambiguous; the first row in a stable order is kept,
        so a scan and a later check of changed users pick the same one.
        """
        return sql.SQL(
            """
            SELECT DISTINCT ON (s.user_id COLLATE "C") s.*
              FROM (SELECT {projection} FROM ({source}) AS src WHERE src.user_id IS NOT NULL) AS s
             ORDER BY s.user_id COLLATE "C", s.digest
            """
        ).format(projection=self._projection(conn), source=sql.SQL(self.recipients_sql))

    def read_changed(self, conn: psycopg.Connection, brand_code: int) -> Iterator[SourceUser]:
        """Users never processed, or whose phone, e-mail or recipient type changed since."""
        query = sql.SQL(
            """
            SELECT s.user_id, s.phone, s.email, s.recipient_type, s.digest
              FROM ({unique_users}) AS s
              LEFT JOIN iys.user_sources us ON us.brand_code = %(brand)s AND us.user_id = s.user_id
             WHERE us.digest IS DISTINCT FROM s.digest
             ORDER BY s.user_id COLLATE "C"
            """
        ).format(unique_users=self.unique_users(conn))
        yield from self._stream(conn, query, {"brand": brand_code})

    @staticmethod
    def _stream(conn: psycopg.Connection, query: sql.Composed, params: dict) -> Iterator[SourceUser]:
        with conn.transaction(), conn.cursor(name="iys_source_users") as cur:
            cur.itersize = 5000
            cur.execute(query, params)
            for row in cur:
                yield SourceUser._make(row)
