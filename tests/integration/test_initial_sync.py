"""The initial sync end to end: dag.test() against the simulator and real Postgres, messy users."""

from __future__ import annotations

import random

import pytest

from iys_provider.operators.initial_sync import (
    IysInitialSyncBatchOperator,
    IysPlanInitialSyncOperator,
)
from tests_support import SIM_BRAND_CODE, build_users, load_dag, recipients_of, sim_control

STATUSES = ("ONAY", "RET", None)
TYPES_BY_KIND = {"phone": ("MESAJ", "ARAMA"), "email": ("EPOSTA",)}


@pytest.fixture
def users_table(pg):
    pg.execute("DROP TABLE IF EXISTS public.users")
    pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text)")
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")

    def load(rows):
        with pg.cursor() as cur, cur.copy("COPY public.users (id, phone, email) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    return load


def seed_truth(sim, users, seed: int = 11) -> dict[tuple[str, str], str | None]:
    """Give every valid address a random İYS status per channel; return the truth."""
    rng = random.Random(seed)
    truth: dict[tuple[str, str], str | None] = {}
    for kind, recipient in recipients_of(users):
        for ctype in TYPES_BY_KIND[kind]:
            truth.setdefault((recipient, ctype), rng.choice(STATUSES))
    sim_control(
        sim,
        "seed",
        {
            "consents": [
                {"recipient": r, "type": t, "status": s, "consentDate": "2024-03-01 10:00:00", "source": "HS_WEB"}
                for (r, t), s in truth.items()
                if s is not None
            ]
        },
    )
    return truth


def consents_in_db(pg) -> dict[tuple[str, str], str | None]:
    rows = pg.execute(
        "SELECT recipient, type, status FROM iys.consents WHERE brand_code = %s", (SIM_BRAND_CODE,)
    ).fetchall()
    return {(r, t): s for r, t, s in rows}


def expected_after_initial_sync(truth):
    # Multi status lists only ONAY: a RET or unregistered address is not sendable (NULL) until
    # the change feed or a single-status answer tells them apart.
    return {key: ("ONAY" if status == "ONAY" else None) for key, status in truth.items()}


def run_initial_sync(dag_conf: dict | None = None):
    return load_dag("iys_initial_sync").test(run_conf=dag_conf or {})


def test_initial_sync_matches_iys_quarantines_junk_and_is_idempotent(airflow_db, sim, pg, users_table):
    users = build_users(1200, seed=7)
    users_table(users)
    truth = seed_truth(sim, users)

    run = run_initial_sync({"batch_size": 250})
    assert run.state == "success"
    labels = sorted(ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == "sync_batch")
    assert len(labels) == 5 and labels[0].startswith("1/5 [u00000 … u")

    assert consents_in_db(pg) == expected_after_initial_sync(truth)
    # Every user with a valid address is linked to the address İYS knows (the users' own truth).
    links = dict(
        ((u, k), r) for u, k, r in pg.execute("SELECT user_id, kind, recipient FROM iys.user_recipients").fetchall()
    )
    for user in users:
        for kind, recipient in (("phone", user.phone_recipient), ("email", user.email_recipient)):
            assert links.get((user[0], kind)) == recipient, (user, kind)
    # Every unusable non-NULL value is quarantined with a reason code.
    quarantine = {
        (u, f): (raw, reason)
        for u, f, raw, reason in pg.execute(
            "SELECT user_id, field, raw_value, reason FROM iys.rejected_recipients"
        ).fetchall()
    }
    expected_rejections = {
        (user[0], kind): raw
        for user in users
        for kind, raw, recipient in (("phone", user[1], user.phone_recipient), ("email", user[2], user.email_recipient))
        if raw is not None and recipient is None
    }
    assert {k: v[0] for k, v in quarantine.items()} == expected_rejections
    assert all(reason for _, reason in quarantine.values())
    assert sim_control(sim, "counters", method="GET")["recipients_created"] == 0
    # The sendable view is exactly the ONAY addresses of linked users.
    sendable = pg.execute("SELECT count(*) FROM iys.sendable").fetchone()[0]
    assert sendable == sum(
        1
        for user in users
        for kind, recipient in (("phone", user.phone_recipient), ("email", user.email_recipient))
        if recipient is not None
        for ctype in TYPES_BY_KIND[kind]
        if truth[(recipient, ctype)] == "ONAY"
    )

    # A second run changes nothing and makes no İYS status call.
    before = pg.execute(
        "SELECT recipient, type, status, updated_at, checked_at FROM iys.consents ORDER BY 1, 2"
    ).fetchall()
    calls_before = sim_control(sim, "counters", method="GET")["multi_status_calls"]
    assert run_initial_sync().state == "success"
    assert (
        pg.execute("SELECT recipient, type, status, updated_at, checked_at FROM iys.consents ORDER BY 1, 2").fetchall()
        == before
    )
    assert sim_control(sim, "counters", method="GET")["multi_status_calls"] == calls_before


def test_interrupted_scan_resumes_with_only_the_unfinished_batches(airflow_db, sim, pg, users_table):
    users = build_users(900, seed=3)
    users_table(users)
    truth = seed_truth(sim, users, seed=5)
    sql_text = "SELECT id AS user_id, phone, email FROM public.users"

    # A first run gets through two batches, then its worker dies.
    plan = IysPlanInitialSyncOperator(task_id="plan", recipients_sql=sql_text, batch_size=200)
    batches = plan.execute(context={})
    assert len(batches) == 5
    for batch in batches[:2]:
        IysInitialSyncBatchOperator(task_id="batch", batch=batch).execute(context={})
    calls_after_two = sim_control(sim, "counters", method="GET")["multi_status_calls"]
    done = pg.execute("SELECT count(*) FROM iys.initial_sync_batches WHERE finished_at IS NOT NULL").fetchone()[0]
    assert done == 2

    # The next run plans nothing new and processes the three remaining batches only.
    pg.execute("INSERT INTO public.users VALUES ('zz-late', '05329998877', NULL)")  # not part of this scan
    run = run_initial_sync()
    assert run.state == "success"
    scans = pg.execute("SELECT count(*), count(finished_at) FROM iys.initial_sync_scans").fetchone()
    assert scans == (1, 1)
    remaining_calls = sim_control(sim, "counters", method="GET")["multi_status_calls"] - calls_after_two
    per_batch = calls_after_two / 2
    assert remaining_calls <= 3 * per_batch + 1
    assert consents_in_db(pg) == expected_after_initial_sync(truth)


def test_a_batch_of_a_scan_abandoned_by_a_rescan_does_nothing(airflow_db, sim, pg, users_table):
    users_table(build_users(300, seed=4))
    sql_text = "SELECT id AS user_id, phone, email FROM public.users"
    old_batches = IysPlanInitialSyncOperator(task_id="plan", recipients_sql=sql_text, batch_size=100).execute(
        context={}
    )
    new_batches = IysPlanInitialSyncOperator(
        task_id="plan", recipients_sql=sql_text, batch_size=100, rescan=True
    ).execute(context={})
    assert {b["scan_id"] for b in new_batches} != {b["scan_id"] for b in old_batches}

    # A cleared task of the earlier run: its snapshot is gone, and the new scan covers its users.
    calls_before = sim_control(sim, "counters", method="GET")["multi_status_calls"]
    result = IysInitialSyncBatchOperator(task_id="batch", batch=old_batches[0]).execute(context={})
    assert result == {"batch_no": 0, "abandoned": True}
    assert sim_control(sim, "counters", method="GET")["multi_status_calls"] == calls_before
    assert pg.execute("SELECT count(*) FROM iys.consents").fetchone()[0] == 0
    assert (
        pg.execute(
            "SELECT count(*) FROM iys.initial_sync_queue WHERE scan_id = %s", (new_batches[0]["scan_id"],)
        ).fetchone()[0]
        == 300
    )


def test_rescan_turns_a_withdrawn_onay_into_ret(airflow_db, sim, pg, users_table):
    users_table([("a1", "05321112233", None)])
    sim_control(
        sim,
        "seed",
        {
            "consents": [
                {
                    "recipient": "+905321112233",
                    "type": "MESAJ",
                    "status": "ONAY",
                    "consentDate": "2024-03-01 10:00:00",
                    "source": "HS_WEB",
                }
            ]
        },
    )
    assert run_initial_sync().state == "success"
    assert consents_in_db(pg)[("+905321112233", "MESAJ")] == "ONAY"

    sim_control(
        sim, "citizen_change", {"recipient": "+905321112233", "type": "MESAJ", "status": "RET", "source": "IYS_MOBIL"}
    )
    assert run_initial_sync({"rescan": True}).state == "success"
    assert consents_in_db(pg)[("+905321112233", "MESAJ")] == "RET"
    assert consents_in_db(pg)[("+905321112233", "ARAMA")] is None


@pytest.mark.parametrize("conf", [{"batch_size": 5}, {"rescan": "yes"}, {"iys_conn_id": ""}])
def test_invalid_params_are_rejected_before_anything_runs(conf):
    from airflow.sdk.definitions.param import ParamValidationError

    from iys_provider.dags.initial_sync import build_initial_sync_dag

    params = build_initial_sync_dag().params
    with pytest.raises(ParamValidationError, match=next(iter(conf))):
        params.update(conf)
        params.validate()
