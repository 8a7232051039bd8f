"""The source query only ever reads: one statement, extended protocol, a READ ONLY transaction, a timeout.

Every way the package runs it (counting, the initial sync's snapshot, new and changed users, its
columns) goes through ``UserSource._read``; these tests feed it hostile queries through each and
check the tables afterwards, and run the planning and the new-users read as a least-privileged
role (the set-up of docs/configuration.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import conninfo, sql

from iys_provider.initial_sync import scan_ledger_store
from iys_provider.initial_sync.scan_ledger_store import plan_scan, schedule_scan
from iys_provider.people.user_source import SourceQueryError, UserSource
from iys_provider.schema import migrate

BRAND = 5151
USERS = [("u1", "05321110001", "a@example.com"), ("u2", "05321110002", None), ("u3", None, "c@example.com")]
USERS_SQL = "SELECT id AS user_id, phone, email FROM public.users"
TOKEN = ("hostile", "stolen-access-token")


def _plan(conn: psycopg.Connection, source: UserSource) -> object:
    with conn.transaction():
        return plan_scan(conn, brand_code=BRAND, source=source, batch_size=2)


# Every entry point that runs the source query.
READS: dict[str, Callable[[psycopg.Connection, UserSource], object]] = {
    "columns": lambda conn, source: source.columns(conn),
    "count_rows": lambda conn, source: source.count_rows(conn),
    "read_users": lambda conn, source: list(source.read_users(conn)),
    "read_snapshot": lambda conn, source: list(source.read_snapshot(conn)[1]),
    "read_changed": lambda conn, source: list(source.read_changed(conn, BRAND)),
    "plan_scan": _plan,
}

MORE_THAN_ONE = "exactly one SELECT statement; it holds more than one"
HOSTILE = {
    "drop after the select": (f"{USERS_SQL}; DROP TABLE public.users", MORE_THAN_ONE),
    "token insert after the select": (
        f"{USERS_SQL};\nINSERT INTO iys.api_tokens (account_key, access_token) VALUES ('{TOKEN[0]}', '{TOKEN[1]}')",
        MORE_THAN_ONE,
    ),
    "statements hidden behind balanced parentheses": (
        f"{USERS_SQL}) AS x; DELETE FROM public.users; SELECT * FROM (SELECT 1",
        "the recipients query failed: syntax error",
    ),
    "a data-modifying CTE": (
        "WITH gone AS (DELETE FROM public.users RETURNING *) SELECT id AS user_id, phone, email FROM gone",
        "must be one plain SELECT that only reads",
    ),
    "a function that deletes": (f"{USERS_SQL} WHERE public.iys_test_wipe() IS NULL", "tried to write"),
    "a sequence": (f"{USERS_SQL} WHERE nextval('public.iys_test_seq') > 0", "tried to write"),
    "switching the transaction to read-write": (
        f"{USERS_SQL} WHERE set_config('transaction_read_only', 'off', true) IS NOT NULL",
        "read-write",
    ),
}

RUN_TIME = ("tried to write", "read-write")  # refused by the read-only transaction while the query runs


@pytest.fixture
def users(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    pg.execute("DROP TABLE IF EXISTS public.users")
    pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text)")
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO public.users VALUES (%s, %s, %s)", USERS)
    pg.execute(
        "CREATE OR REPLACE FUNCTION public.iys_test_wipe() RETURNS text LANGUAGE sql AS 'DELETE FROM public.users RETURNING id'"
    )
    pg.execute("CREATE SEQUENCE IF NOT EXISTS public.iys_test_seq")
    migrate(pg)
    yield pg
    pg.execute("DROP FUNCTION IF EXISTS public.iys_test_wipe()")
    pg.execute("DROP SEQUENCE IF EXISTS public.iys_test_seq")


def assert_untouched(pg: psycopg.Connection) -> None:
    assert pg.execute("SELECT id, phone, email FROM public.users ORDER BY id").fetchall() == USERS
    assert pg.execute("SELECT count(*) FROM iys.api_tokens").fetchone()[0] == 0
    assert pg.execute("SELECT last_value, is_called FROM public.iys_test_seq").fetchone() == (1, False)
    assert pg.execute("SELECT count(*) FROM iys.initial_sync_scans").fetchone()[0] == 0


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_query_is_refused_before_it_changes_anything(users, read, hostile):
    query, message = HOSTILE[hostile]
    if read == "columns" and message in RUN_TIME:
        READS[read](users, UserSource(query))  # declared and planned, never run: nothing to refuse yet
    else:
        with pytest.raises(SourceQueryError, match=message):
            READS[read](users, UserSource(query))
    assert_untouched(users)


def test_the_query_runs_in_a_read_only_transaction_with_its_statement_timeout(users):
    source = UserSource(
        "SELECT 'u1' AS user_id, current_setting('transaction_read_only') AS phone, "
        "current_setting('statement_timeout') AS email",
        statement_timeout=90,
    )
    (user,) = source.read_users(users)
    assert (user.phone, user.email) == ("on", "90s")
    assert users.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_slow_query_is_cancelled_by_its_timeout_with_a_clear_message(users):
    source = UserSource(f"{USERS_SQL} WHERE pg_sleep(0.5) IS NOT NULL", statement_timeout=0.2)
    with pytest.raises(SourceQueryError, match=r"longer than its statement timeout of 0\.2 s"):
        source.count_rows(users)


def test_the_source_never_runs_inside_an_open_transaction(users):
    with users.transaction(), pytest.raises(RuntimeError, match="read-only transaction of its own"):
        UserSource(USERS_SQL).count_rows(users)


def test_percent_signs_and_a_trailing_comment_are_only_sql(users):
    source = UserSource(f"{USERS_SQL} WHERE email LIKE '%@example.com' -- only our domain\n;")
    assert [u.user_id for u in source.read_changed(users, BRAND)] == ["u1", "u3"]
    assert source.count_rows(users).users == 2


def test_the_snapshot_matches_the_source_and_numbers_batches_in_user_id_order(users):
    plan = _plan(users, UserSource(USERS_SQL))
    assert (plan.users, plan.batch_count, plan.batch_size) == (3, 2, 2)
    rows = users.execute(
        "SELECT batch_no, user_id, phone, email FROM iys.initial_sync_queue WHERE scan_id = %s ORDER BY user_id",
        (plan.scan_id,),
    ).fetchall()
    assert rows == [(0, *USERS[0]), (0, *USERS[1]), (1, *USERS[2])]


@pytest.fixture
def counted_source(users, monkeypatch):
    """A source query that says so (a NOTICE) each time it runs, and the notices the plan's reader received."""
    users.execute(
        "CREATE OR REPLACE FUNCTION public.iys_test_counted_users() RETURNS SETOF public.users LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE NOTICE 'iys source ran'; RETURN QUERY SELECT * FROM public.users; END $$"
    )
    runs: list[str] = []
    second_connection = scan_ledger_store.second_connection

    @contextmanager
    def listening(conn):
        with second_connection(conn) as reader:
            reader.add_notice_handler(lambda notice: runs.append(notice.message_primary))
            yield reader

    monkeypatch.setattr(scan_ledger_store, "second_connection", listening)
    yield UserSource("SELECT id AS user_id, phone, email FROM public.iys_test_counted_users()"), runs
    users.execute("DROP FUNCTION public.iys_test_counted_users()")


def test_a_plan_runs_the_source_query_once(users, counted_source):
    source, runs = counted_source
    schedule, _ = schedule_scan(users, brand_code=BRAND, source=source, batch_size=2)
    assert runs == ["iys source ran"]
    assert (schedule.planned.users, schedule.batch_count) == (3, 2)
    assert users.execute(
        "SELECT batch_no, user_id FROM iys.initial_sync_queue WHERE scan_id = %s ORDER BY user_id", (schedule.scan_id,)
    ).fetchall() == [(0, "u1"), (0, "u2"), (1, "u3")]

    # Counting it (the dry run) is a run of its own: the notices do reach the test.
    with scan_ledger_store.second_connection(users) as reader:
        assert source.count_rows(reader).users == 3
    assert runs == ["iys source ran"] * 2


@pytest.fixture
def least_privileged(users, pg_dsn):
    """The set-up of docs/configuration.md: a role that creates and owns schema iys and may only SELECT the users' table."""
    role, password = f"iys_sync_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    database = users.info.dbname
    users.execute("DROP SCHEMA iys CASCADE")
    users.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    users.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role)))
    users.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    users.execute(sql.SQL("GRANT SELECT ON public.users TO {}").format(sql.Identifier(role)))
    params = conninfo.conninfo_to_dict(pg_dsn) | {"user": role, "password": password}
    try:
        with psycopg.connect(conninfo.make_conninfo(**params), autocommit=True) as conn:
            migrate(conn)
            yield conn
    finally:
        users.execute("DROP SCHEMA IF EXISTS iys CASCADE")
        users.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        users.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_planning_and_the_new_users_read_work_as_a_role_that_may_only_select_users(least_privileged, pg):
    conn = least_privileged
    assert conn.execute("SELECT pg_has_role(current_user, 'pg_write_all_data', 'USAGE')").fetchone() == (False,)
    schedule, _ = schedule_scan(conn, brand_code=BRAND, source=UserSource(USERS_SQL), batch_size=2)
    assert (schedule.planned.users, schedule.batch_count) == (3, 2)
    assert [u.user_id for u in UserSource(USERS_SQL).read_changed(conn, BRAND)] == ["u1", "u2", "u3"]

    # The role owns iys: only the single statement and the read-only transaction keep the query from writing there.
    forge = "INSERT INTO iys.api_tokens (account_key, access_token) VALUES ('hostile', 'x') RETURNING account_key"
    conn.execute(f"CREATE FUNCTION iys.forge_token() RETURNS text LANGUAGE sql AS $$ {forge} $$")
    for query, message in (
        (f"{USERS_SQL}; {forge}", MORE_THAN_ONE),
        (f"{USERS_SQL} WHERE iys.forge_token() IS NULL", "tried to write"),
    ):
        with pytest.raises(SourceQueryError, match=message):
            list(UserSource(query).read_changed(conn, BRAND))
    assert conn.execute("SELECT count(*) FROM iys.api_tokens").fetchone() == (0,)
    # And the users' table is out of its reach whatever the transaction.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM public.users")
    assert pg.execute("SELECT count(*) FROM public.users").fetchone() == (3,)
