"""Users who leave (KVKK erasure) end to end: the simulator, real Postgres, the operators as Airflow runs them.

The bug this guards against: 50 users deleted from ``public.users``, then the nightly incremental
run, and ``iys.sendable`` still listed them while ``iys.rejected_recipients`` still held their raw
phones and e-mails.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from incremental_support import OLD, USERS_SQL

from iys_provider.operators.initial_sync import (
    IysFinishInitialSyncOperator,
    IysInitialSyncBatchOperator,
    IysPlanInitialSyncOperator,
)
from iys_provider.operators.leavers import IysForgetLeaversOperator
from iys_provider.operators.new_users import IysCheckNewUsersOperator
from tests_support import SIM_BRAND_CODE, build_users, load_dag, recipients_of, run_dag, sim_control, task_states

USERS = build_users(150, seed=31)
TYPES_BY_KIND = {"phone": ("MESAJ", "ARAMA"), "email": ("EPOSTA",)}
PER_USER_TABLES = ("user_recipients", "user_sources", "rejected_recipients", "sendable")


def is_quarantined(user) -> bool:
    """A non-blank phone or e-mail that is no valid address (the users' own truth, see tests_support.UserRow)."""
    return (user[1] is not None and user.phone_recipient is None) or (
        user[2] is not None and user.email_recipient is None
    )


def shared_phones():
    """Users grouped by the mobile number they share (a family's number)."""
    holders = defaultdict(list)
    for user in USERS:
        if user.phone_recipient:
            holders[user.phone_recipient].append(user[0])
    return {phone: ids for phone, ids in holders.items() if len(ids) > 1}


def choose_leavers(count=50):
    """``count`` users: one of each family sharing a number (the others stay), quarantined users, then others."""
    families = shared_phones()
    stay = {ids[-1] for ids in families.values()}
    leavers = [ids[0] for ids in families.values()]
    quarantined = [user[0] for user in USERS if is_quarantined(user)]
    for user_id in [*quarantined, *(u for u, _, _ in USERS)]:
        if len(leavers) == count:
            break
        if user_id not in stay and user_id not in leavers:
            leavers.append(user_id)
    return sorted(leavers)


@pytest.fixture
def world(sim, pg):
    """150 messy users, every valid address ONAY in İYS, and a completed initial sync."""
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    pg.execute("DROP TABLE IF EXISTS public.users")
    pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text)")
    with pg.cursor() as cur, cur.copy("COPY public.users (id, phone, email) FROM STDIN") as copy:
        for row in USERS:
            copy.write_row(row)
    addresses = {(recipient, ctype) for kind, recipient in recipients_of(USERS) for ctype in TYPES_BY_KIND[kind]}
    sim_control(
        sim,
        "seed",
        {
            "consents": [
                {"recipient": r, "type": t, "status": "ONAY", "consentDate": OLD, "source": "HS_WEB"}
                for r, t in sorted(addresses)
            ]
        },
    )
    initial_sync(batch_size=60)
    return pg


def initial_sync(**kwargs):
    plan = IysPlanInitialSyncOperator(task_id="plan_batches", recipients_sql=USERS_SQL, **kwargs)
    for batch in plan.execute(context={}):
        IysInitialSyncBatchOperator(task_id="sync_batch", batch=batch).execute(context={})
    IysFinishInitialSyncOperator(task_id="finish_scan").execute(context={})


def forget(**kwargs):
    return IysForgetLeaversOperator(task_id="forget_leavers", recipients_sql=USERS_SQL, **kwargs).execute(context={})


def leave(pg, user_ids):
    pg.execute("DELETE FROM public.users WHERE id = ANY(%s)", (list(user_ids),))


def rows_for(pg, user_ids):
    """Per table, how many rows the users still have."""
    return {
        table: pg.execute(
            f"SELECT count(*) FROM iys.{table} WHERE brand_code = %s AND user_id = ANY(%s)",
            (SIM_BRAND_CODE, list(user_ids)),
        ).fetchone()[0]
        for table in PER_USER_TABLES
    }


def footprint(pg):
    return {
        table: pg.execute(f"SELECT * FROM iys.{table} ORDER BY 1, 2, 3").fetchall()
        for table in (*PER_USER_TABLES, "consents")
    }


def holders_of(pg, recipient):
    return sorted(
        u
        for (u,) in pg.execute(
            "SELECT DISTINCT user_id FROM iys.sendable WHERE brand_code = %s AND recipient = %s",
            (SIM_BRAND_CODE, recipient),
        )
    )


def test_leavers_are_erased_by_one_incremental_run(world):
    pg = world
    leavers = choose_leavers()
    families = shared_phones()
    assert len(leavers) == 50 and families  # the world holds what this test is about
    before = rows_for(pg, leavers)
    # As in the bug report: the leavers are sendable and their raw values are quarantined.
    assert before["sendable"] > 0 and before["rejected_recipients"] > 0 and before["user_sources"] == 50
    consents = pg.execute("SELECT * FROM iys.consents ORDER BY 1, 2, 3, 4").fetchall()
    remaining = sorted({u for u, _, _ in USERS} - set(leavers))
    remaining_rows = rows_for(pg, remaining)

    leave(pg, leavers)
    # The incremental run: new and changed users first (the leavers are neither), then the leavers.
    assert (
        IysCheckNewUsersOperator(task_id="check_new_users", recipients_sql=USERS_SQL).execute(context={})[
            "users_checked"
        ]
        == 0
    )
    result = forget()

    assert result == {
        "step": "leavers",
        "leavers": 50,
        "links_removed": before["user_recipients"],
        "quarantine_rows_removed": before["rejected_recipients"],
    }
    assert rows_for(pg, leavers) == dict.fromkeys(PER_USER_TABLES, 0)
    assert rows_for(pg, remaining) == remaining_rows
    # A number a family shared stays sendable, through the member who stayed only.
    for phone, ids in families.items():
        assert holders_of(pg, phone) == [ids[-1]], phone
    # İYS's records stay, also of addresses nobody holds any more (they name no user).
    assert pg.execute("SELECT * FROM iys.consents ORDER BY 1, 2, 3, 4").fetchall() == consents
    gone = {recipient for _, recipient in recipients_of(u for u in USERS if u[0] in leavers)} - {
        r for (r,) in pg.execute("SELECT recipient FROM iys.user_recipients")
    }
    assert gone
    assert not pg.execute("SELECT 1 FROM iys.sendable WHERE recipient = ANY(%s)", (list(gone),)).fetchall()

    # The next run finds nobody new to forget.
    assert forget() == {"step": "leavers", "leavers": 0, "links_removed": 0, "quarantine_rows_removed": 0}


def test_a_source_that_returns_nobody_is_refused_and_nothing_is_deleted(world):
    pg = world
    before = footprint(pg)
    pg.execute("TRUNCATE public.users")
    with pytest.raises(AirflowFailException, match="returns none of the 150 users synced so far") as refused:
        forget()
    assert "max_leaver_share=1" in str(refused.value)
    assert footprint(pg) == before


def test_more_than_the_allowed_share_is_refused_unless_the_task_allows_it(world):
    pg = world
    before = footprint(pg)
    leavers = [u for u, _, _ in USERS][:90]  # 60 %
    leave(pg, leavers)
    with pytest.raises(
        AirflowFailException, match=r"90 of the 150 users synced so far \(60%\).*max_leaver_share=0\.6 or more"
    ):
        forget()
    assert footprint(pg) == before
    assert forget(max_leaver_share="0.6")["leavers"] == 90  # templated values arrive as text
    assert rows_for(pg, leavers) == dict.fromkeys(PER_USER_TABLES, 0)


def test_nobody_is_forgotten_before_the_initial_sync_completed(sim, pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    with pytest.raises(AirflowSkipException, match="initial sync has not completed"):
        forget()


def test_leavers_during_an_open_rescan_are_not_linked_again_by_its_batches(world):
    pg = world
    batches = IysPlanInitialSyncOperator(
        task_id="plan_batches", recipients_sql=USERS_SQL, batch_size=60, rescan=True
    ).execute(context={})
    leavers = choose_leavers(20)
    leave(pg, leavers)

    forget()
    assert not pg.execute(
        "SELECT 1 FROM iys.initial_sync_queue WHERE user_id = ANY(%s)", (leavers,)
    ).fetchall()  # their snapshot (raw phones and e-mails) is gone too
    for batch in batches:
        IysInitialSyncBatchOperator(task_id="sync_batch", batch=batch).execute(context={})
    IysFinishInitialSyncOperator(task_id="finish_scan").execute(context={})
    assert rows_for(pg, leavers) == dict.fromkeys(PER_USER_TABLES, 0)


def test_a_rescan_forgets_the_users_it_no_longer_sees(airflow_db, world):
    pg = world
    leavers = choose_leavers(30)
    before = rows_for(pg, leavers)
    leave(pg, leavers)

    run = load_dag("iys_initial_sync").test(run_conf={"rescan": True})

    assert run.state == "success"
    assert rows_for(pg, leavers) == dict.fromkeys(PER_USER_TABLES, 0)
    assert plan_xcom(run, "leavers") == {
        "step": "leavers",
        "leavers": 30,
        "links_removed": before["user_recipients"],
        "quarantine_rows_removed": before["rejected_recipients"],
    }
    for phone, ids in shared_phones().items():
        if ids[0] in leavers:
            assert holders_of(pg, phone) == [ids[-1]]


def test_a_rescan_that_would_forget_everybody_is_refused_before_it_plans(world):
    pg = world
    before = footprint(pg)
    scans = pg.execute("SELECT * FROM iys.initial_sync_scans ORDER BY scan_id").fetchall()
    pg.execute("TRUNCATE public.users")
    with pytest.raises(AirflowFailException, match="Planning refused: the source query returns none of the 150"):
        IysPlanInitialSyncOperator(task_id="plan_batches", recipients_sql=USERS_SQL, rescan=True).execute(context={})
    assert footprint(pg) == before
    assert pg.execute("SELECT * FROM iys.initial_sync_scans ORDER BY scan_id").fetchall() == scans


def plan_xcom(run, key):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (row,) = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids="plan_batches", key=key)
        ).all()
        return XComModel.deserialize_value(row)


def test_the_nightly_dag_erases_leavers_and_reports_them(airflow_db, world, monkeypatch):
    """The bug report's steps as a data engineer takes them: delete users, run ``iys_incremental_sync``."""
    pg = world
    monkeypatch.setenv("AIRFLOW_VAR_IYS_RECIPIENTS_SQL", USERS_SQL)
    leavers = choose_leavers()
    before = rows_for(pg, leavers)
    leave(pg, leavers)

    run = run_dag("iys_incremental_sync")

    assert run.state == "success", task_states(run)
    assert rows_for(pg, leavers) == dict.fromkeys(PER_USER_TABLES, 0)

    def raw_values(users):
        return {raw for u, phone, email in USERS if u in users for raw in (phone, email) if raw}

    only_leavers_held = raw_values(leavers) - raw_values({u for u, _, _ in USERS} - set(leavers))
    kept = {raw for (raw,) in pg.execute("SELECT raw_value FROM iys.rejected_recipients")}
    assert kept and only_leavers_held and not only_leavers_held & kept
    leavers_row, details = pg.execute("SELECT leavers, details FROM iys.sync_runs").fetchone()
    assert leavers_row == 50
    assert details["links_removed"] == before["user_recipients"]
    assert details["quarantine_rows_removed"] == before["rejected_recipients"]
