"""Reading the brand's users through the configurable source query.

The query is operator input (the Airflow Variable ``iys_recipients_sql``, a brand's
``iys_recipients_sql__<conn_id>``, or an operator's ``recipients_sql``) and is trusted like any
SQL a data engineer deploys: it is wrapped as a sub-query, never concatenated with user data. It must return ``user_id`` and at least one of
``phone`` and ``email``; ``recipient_type`` (``BIREYSEL`` by default, or ``TACIR``) is optional.

The package only ever reads through it, by construction: every statement that contains it runs
through :meth:`UserSource._read`, which

* opens its own ``READ ONLY`` transaction, so nothing the query calls can write (PostgreSQL refuses
  ``INSERT``, ``UPDATE``, ``DELETE``, DDL and ``nextval()`` in it, in functions too);
* bounds each statement with ``statement_timeout`` (:data:`DEFAULT_STATEMENT_TIMEOUT_SECONDS`);
* first declares the query alone as a cursor through the extended query protocol, where
  PostgreSQL parses it as exactly one statement and a ``SELECT``: a second statement is refused
  before anything of the text runs (:class:`SourceQueryError` says so), and the query's columns
  come back without reading a row.

The initial sync's queue (:mod:`iys_provider.initial_sync.scan_ledger_store`) is filled from what this module
streams, on a second connection, in a writing transaction of its own: the query runs once per
plan (:meth:`UserSource.read_snapshot`), its sorted rows counted on the server before the first
is fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

# A database helper the leavers operator and the scan share; imported from here too.
from iys_provider.database import second_connection as second_connection
from iys_provider.models import SourceUser

DEFAULT_RECIPIENTS_SQL = "SELECT id::text AS user_id, phone, email FROM public.users"
RECIPIENTS_SQL_VARIABLE = "iys_recipients_sql"
REQUIRED_COLUMNS = ("user_id",)
ADDRESS_COLUMNS = ("phone", "email")
# Every statement that runs the source query is cancelled after this long. Generous on purpose:
# planning a scan of 1M users sorts them for about 2 s, a source behind a view of joins can take
# minutes; 15 minutes still stops a runaway query the same night.
DEFAULT_STATEMENT_TIMEOUT_SECONDS = 15 * 60
# Rows per round trip when streaming the source (a server-side cursor's FETCH).
FETCH_SIZE = 10_000
_CURSOR = "iys_source_users"


class SourceQueryError(ValueError):
    """The source query cannot be used as is; the message says what to change."""


class SourceCounts(NamedTuple):
    users: int
    null_user_ids: int


def recipients_sql_variable(iys_conn_id: str) -> str:
    """The Variable holding the source query of the brand behind ``iys_conn_id``: ``iys_recipients_sql__<conn_id>``."""
    return f"{RECIPIENTS_SQL_VARIABLE}__{iys_conn_id}"


def configured_user_source(
    recipients_sql: str | None = None,
    *,
    iys_conn_id: str | None = None,
    statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
) -> UserSource:
    """The source query, from the first of these that is set:

    1. ``recipients_sql`` (an operator's own query), unless empty;
    2. the Airflow Variable ``iys_recipients_sql__<iys_conn_id>``, when ``iys_conn_id`` is given:
       several brands in one database usually select their users differently;
    3. the Airflow Variable ``iys_recipients_sql``, shared by every brand;
    4. :data:`DEFAULT_RECIPIENTS_SQL`.

    A Variable that does not exist is skipped; one that exists but is empty is an error
    (:class:`SourceQueryError`), rather than silently reading the default table.
    """
    if not recipients_sql:
        # Imported here: this module is used outside Airflow too (benchmarks, tests).
        from airflow.sdk import Variable

        brand_sql = Variable.get(recipients_sql_variable(iys_conn_id), default=None) if iys_conn_id else None
        recipients_sql = (
            brand_sql
            if brand_sql is not None
            else Variable.get(RECIPIENTS_SQL_VARIABLE, default=DEFAULT_RECIPIENTS_SQL)
        )
    return UserSource(recipients_sql, statement_timeout=statement_timeout)


class UserSource:
    """Access to the users returned by ``recipients_sql``, read-only (see the module's docstring).

    Batches are numbered over ``user_id`` as text in the "C" collation, so a plan does not depend
    on the database's default collation. ``statement_timeout`` is in seconds.
    """

    def __init__(self, recipients_sql: str, *, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS) -> None:
        cleaned = recipients_sql.strip().rstrip(";").strip()
        if not cleaned:
            raise SourceQueryError("the recipients query is empty")
        if not statement_timeout > 0:
            raise ValueError(f"statement_timeout must be positive seconds, not {statement_timeout!r}")
        self.recipients_sql = cleaned
        self.statement_timeout = statement_timeout

    def columns(self, conn: psycopg.Connection) -> list[str]:
        """The query's column names (it is parsed and planned, no row is read)."""
        found: list[str] = []
        for _ in self._read(conn, lambda columns: found.extend(columns)):
            pass
        return found

    def count_rows(self, conn: psycopg.Connection) -> SourceCounts:
        """How many rows the query returns with a user_id, and how many without (one pass)."""

        def count(columns: list[str]) -> sql.Composed:
            _require_columns(columns)
            return sql.SQL("SELECT count(src.user_id), count(*) - count(src.user_id) FROM {} AS src").format(
                self._subquery()
            )

        (counts,) = self._read(conn, count)
        return SourceCounts(*counts)

    def read_users(
        self, conn: psycopg.Connection, *, settings: Mapping[str, str] | None = None
    ) -> Iterator[SourceUser]:
        """Every user with a user_id, one row each, in ``user_id`` order (as text, "C" collation).

        A user_id the query returns twice is ambiguous; the first row in a stable order is kept,
        so a scan and a later check of changed users pick the same one. ``settings`` are set for
        the reading transaction only (e.g. ``work_mem`` for a big sort).
        """
        yield from map(SourceUser._make, self._read(conn, self._unique_users, settings=settings))

    def read_snapshot(
        self, conn: psycopg.Connection, *, settings: Mapping[str, str] | None = None
    ) -> tuple[int, Iterator[SourceUser]]:
        """How many rows the query returns, and every one of them, in one run of the query.

        The rows come with NULL user_ids first, then in ``user_id`` order (as text, "C" collation),
        the rows of a repeated user_id together with the lowest digest first: the row
        :meth:`read_users` and :meth:`read_changed` keep. The count is known before the first row
        is read; read the rows to the end (the reading transaction stays open until then).
        """
        rows = self._read(conn, self._sorted_rows, settings=settings, counted=True)
        (count,) = next(rows)
        return count, map(SourceUser._make, rows)

    def read_changed(self, conn: psycopg.Connection, brand_code: int) -> Iterator[SourceUser]:
        """Users never processed, or whose phone, e-mail or recipient type changed since."""

        def changed(columns: list[str]) -> sql.Composed:
            return sql.SQL(
                """
                SELECT s.user_id, s.phone, s.email, s.recipient_type, s.digest
                  FROM ({unique_users}) AS s
                  LEFT JOIN iys.user_sources us ON us.brand_code = {brand} AND us.user_id = s.user_id
                 WHERE us.digest IS DISTINCT FROM s.digest
                 ORDER BY s.user_id COLLATE "C"
                """
            ).format(unique_users=self._unique_users(columns), brand=sql.Literal(int(brand_code)))

        yield from map(SourceUser._make, self._read(conn, changed))

    def read_departed(self, conn: psycopg.Connection, brand_code: int) -> list[str]:
        """User ids of the brand's known users (``iys.user_sources``) the query no longer returns, in order.

        These are leavers (:mod:`iys_provider.people.leavers`). A row with a NULL user_id keeps nobody;
        a user the query returns twice is still there.
        """

        def departed(columns: list[str]) -> sql.Composed:
            _require_columns(columns)
            # NOT EXISTS, not NOT IN: a NULL user_id in the source must not make every user stay.
            return sql.SQL(
                """
                SELECT us.user_id
                  FROM iys.user_sources us
                 WHERE us.brand_code = {brand}
                   AND NOT EXISTS (SELECT FROM {source} AS src WHERE src.user_id::text = us.user_id)
                 ORDER BY us.user_id COLLATE "C"
                """
            ).format(source=self._subquery(), brand=sql.Literal(int(brand_code)))

        return [user_id for (user_id,) in self._read(conn, departed)]

    def _read(
        self,
        conn: psycopg.Connection,
        statement: Callable[[list[str]], sql.Composable | None],
        *,
        settings: Mapping[str, str] | None = None,
        counted: bool = False,
    ) -> Iterator[tuple]:
        """Run ``statement(columns)``, built around the source query, and stream its rows.

        **The one place the source query runs.** On an idle connection (no transaction open), in a
        ``READ ONLY`` transaction of its own with ``statement_timeout``: the query alone is first
        declared as a cursor (extended protocol: PostgreSQL parses it as exactly one ``SELECT``, a
        second statement is refused before anything runs; it is planned, not run), which gives
        its columns; then ``statement(columns)`` (None: nothing more) is declared the same way and
        its rows are fetched ``FETCH_SIZE`` at a time. Statements carry no client-side parameters,
        so a ``%`` in the query is only SQL. Any database error becomes a :class:`SourceQueryError`.

        ``counted``: the first item is ``(rows,)``, how many rows the statement returns. The
        cursor is then scrollable: the statement runs to its end once (``MOVE``), and the rows
        are fetched after a rewind from what the server kept (a sort's output, or a
        materialisation it adds), without running the query again.
        """
        if conn.info.transaction_status != TransactionStatus.IDLE:
            raise RuntimeError("the source query runs in a read-only transaction of its own: pass an idle connection")
        timeout_ms = max(1, round(self.statement_timeout * 1000))
        options = {"statement_timeout": str(timeout_ms), **(settings or {})}
        try:
            with conn.transaction(), conn.cursor(name=_CURSOR, scrollable=counted or None) as cur:
                conn.execute("SET TRANSACTION READ ONLY")
                for name, value in options.items():
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                cur.execute(sql.SQL(self.recipients_sql))
                query = statement([d.name for d in cur.description or []])
                if query is None:
                    return
                cur.itersize = FETCH_SIZE
                cur.execute(query)
                if counted:
                    moved = conn.execute(sql.SQL("MOVE FORWARD ALL FROM {}").format(sql.Identifier(_CURSOR)))
                    cur.scroll(0, mode="absolute")
                    yield (moved.rowcount,)
                yield from cur
        except psycopg.Error as exc:
            raise SourceQueryError(self._explain(exc)) from None

    def _explain(self, exc: psycopg.Error) -> str:
        message = exc.diag.message_primary or str(exc)
        if isinstance(exc, errors.SyntaxError) and exc.diag.statement_position is None:
            # "cannot insert multiple commands into a prepared statement" (in the server's language)
            return (
                "the recipients query must be exactly one SELECT statement; it holds more than one, "
                f"and none of them was run ({message})"
            )
        if isinstance(exc, errors.ReadOnlySqlTransaction):
            return f"the recipients query tried to write, in its read-only transaction; nothing was changed ({message})"
        if isinstance(exc, errors.QueryCanceled):
            return (
                f"the recipients query ran longer than its statement timeout of {self.statement_timeout:g} s "
                f"({message}); make it faster or raise the timeout (source_statement_timeout)"
            )
        if isinstance(exc, errors.FeatureNotSupported):
            return f"the recipients query must be one plain SELECT that only reads ({message})"
        return f"the recipients query failed: {message}"

    def _subquery(self) -> sql.Composed:
        # On lines of its own: a trailing "-- comment" in the query ends with its line.
        return sql.SQL("(\n{}\n)").format(sql.SQL(self.recipients_sql))

    def _sorted_rows(self, columns: list[str]) -> sql.Composed:
        """Every row in :class:`SourceUser` columns, NULL user_ids first, then as :meth:`_unique_users` orders them.

        A sort and nothing above it: a scrollable cursor rewinds a sort's output, where a
        ``DISTINCT ON`` would make the server copy every row once more.
        """
        return sql.SQL(
            """
            SELECT s.* FROM (SELECT {projection} FROM {source} AS src) AS s
             ORDER BY s.user_id COLLATE "C" NULLS FIRST, s.digest
            """
        ).format(projection=_projection(columns), source=self._subquery())

    def _unique_users(self, columns: list[str]) -> sql.Composed:
        """The source's users with a user_id, one row each, in :class:`SourceUser` columns and user_id order."""
        return sql.SQL(
            """
            SELECT DISTINCT ON (s.user_id COLLATE "C") s.*
              FROM (SELECT {projection} FROM {source} AS src WHERE src.user_id IS NOT NULL) AS s
             ORDER BY s.user_id COLLATE "C", s.digest
            """
        ).format(projection=_projection(columns), source=self._subquery())


def _require_columns(columns: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing or not any(c in columns for c in ADDRESS_COLUMNS):
        raise SourceQueryError(
            "the recipients query must return a user_id column and a phone and/or an email column; "
            f"it returns {columns}"
        )


def _projection(columns: list[str]) -> sql.Composed:
    _require_columns(columns)

    def col(name: str) -> sql.Composable:
        return sql.SQL("src.{}::text").format(sql.Identifier(name)) if name in columns else sql.SQL("NULL::text")

    return sql.SQL(
        "src.user_id::text AS user_id, {phone} AS phone, {email} AS email, {rtype} AS recipient_type, "
        "md5(concat_ws(chr(31), {phone}, {email}, {rtype})) AS digest"
    ).format(phone=col("phone"), email=col("email"), rtype=col("recipient_type"))
