"""Two brands of one İYS account in one database, each with its DAG pair (issue #13).

A person may be a customer of both brands: İYS keeps a consent per brand, and so must we. Each
brand's consents, outbox and change cursors stay its own; an opt-out written for brand B reaches
brand B in İYS and never brand A.
"""

from __future__ import annotations

import json

import pytest
from incremental_support import ALICE, BOB, CAROL, OLD, add_update, make_feed_visible, outbox

from tests_support import SIM_BRAND_CODE, iys_connection_json_with, run_dag, sim_control, task_states

BRAND_A, BRAND_B = SIM_BRAND_CODE, SIM_BRAND_CODE + 1
CONN_A, CONN_B = "iys_brand_a", "iys_brand_b"
#: Each brand's users: Alice shops at both, Bob only at A, Carol only at B.
SOURCE_SQL = "SELECT id AS user_id, phone, email FROM public.users WHERE {letter!r} = ANY(brands)"


def truth(sim, recipient: str, brand: int, type_: str = "MESAJ") -> str | None:
    query = f"truth?recipient=%2B{recipient[1:]}&type={type_}&brandCode={brand}"
    return sim_control(sim, query, method="GET")["status"]


def consents_of(pg, brand: int) -> dict[tuple[str, str], str | None]:
    rows = pg.execute(
        "SELECT recipient, type, status FROM iys.consents WHERE brand_code = %s AND status IS NOT NULL", (brand,)
    ).fetchall()
    return {(recipient, type_): status for recipient, type_, status in rows}


def sendable_of(pg, brand: int) -> set[tuple[str, str]]:
    rows = pg.execute("SELECT user_id, type FROM iys.sendable WHERE brand_code = %s", (brand,)).fetchall()
    return set(rows)


@pytest.fixture
def two_brands(airflow_db, sim, pg, monkeypatch):
    sim_control(sim, "config", {"brand_codes": [BRAND_A, BRAND_B], "batch_result_delay": 0})
    for conn_id, brand in ((CONN_A, BRAND_A), (CONN_B, BRAND_B)):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            iys_connection_json_with(sim.url, brand_code=brand, batch_result_delay_seconds=0),
        )
        monkeypatch.setenv(f"AIRFLOW_VAR_IYS_RECIPIENTS_SQL__{conn_id.upper()}", SOURCE_SQL.format(letter=conn_id[-1]))
    monkeypatch.setenv("IYS_CONNECTIONS", f"{CONN_A},{CONN_B}")
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    pg.execute("DROP TABLE IF EXISTS public.users")
    pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text, brands text[])")
    pg.execute(
        "INSERT INTO public.users VALUES ('alice', '0532 111 00 01', NULL, '{a,b}'), "
        "('bob', '5321110002', NULL, '{a}'), ('carol', '+90 532 111 0003', NULL, '{b}')"
    )
    seed = [
        {
            "brandCode": brand,
            "recipient": who,
            "type": "MESAJ",
            "status": "ONAY",
            "consentDate": OLD,
            "source": "HS_WEB",
        }
        for brand, who in ((BRAND_A, ALICE), (BRAND_A, BOB), (BRAND_B, ALICE), (BRAND_B, CAROL))
    ]
    sim_control(sim, "seed", {"consents": seed})
    for conn_id in (CONN_A, CONN_B):
        run = run_dag(f"iys_initial_sync__{conn_id}")
        assert run.state == "success", task_states(run)
    return sim


def test_each_brand_syncs_its_own_users_and_consents(two_brands, pg):
    assert consents_of(pg, BRAND_A) == {(ALICE, "MESAJ"): "ONAY", (BOB, "MESAJ"): "ONAY"}
    assert consents_of(pg, BRAND_B) == {(ALICE, "MESAJ"): "ONAY", (CAROL, "MESAJ"): "ONAY"}
    assert sendable_of(pg, BRAND_A) == {("alice", "MESAJ"), ("bob", "MESAJ")}
    assert sendable_of(pg, BRAND_B) == {("alice", "MESAJ"), ("carol", "MESAJ")}
    links = pg.execute("SELECT brand_code, user_id FROM iys.user_recipients ORDER BY 1, 2").fetchall()
    assert links == [(BRAND_A, "alice"), (BRAND_A, "bob"), (BRAND_B, "alice"), (BRAND_B, "carol")]


def test_an_opt_out_for_brand_b_reaches_b_and_never_a(two_brands, pg):
    sim = two_brands
    # Bob withdraws at brand A through İYS; Alice unsubscribes in brand B's app.
    sim_control(
        sim,
        "citizen_change",
        {"brandCode": BRAND_A, "recipient": BOB, "type": "MESAJ", "status": "RET", "source": "IYS_KISAMESAJ"},
    )
    make_feed_visible(sim)
    opt_out = add_update(pg, ALICE, "RET", brand_code=BRAND_B)

    run = run_dag(f"iys_incremental_sync__{CONN_A}")
    assert run.state == "success", task_states(run)
    assert outbox(pg, opt_out)[0] == "pending"  # brand A's run never touches brand B's outbox
    assert truth(sim, ALICE, BRAND_A) == "ONAY" and truth(sim, ALICE, BRAND_B) == "ONAY"
    assert consents_of(pg, BRAND_A)[(BOB, "MESAJ")] == "RET"

    run = run_dag(f"iys_incremental_sync__{CONN_B}")
    assert run.state == "success", task_states(run)
    assert outbox(pg, opt_out)[0] == "sent"
    assert truth(sim, ALICE, BRAND_B) == "RET"
    assert truth(sim, ALICE, BRAND_A) == "ONAY"  # Alice still hears from brand A
    assert consents_of(pg, BRAND_A) == {(ALICE, "MESAJ"): "ONAY", (BOB, "MESAJ"): "RET"}
    assert consents_of(pg, BRAND_B) == {(ALICE, "MESAJ"): "RET", (CAROL, "MESAJ"): "ONAY"}
    assert sendable_of(pg, BRAND_A) == {("alice", "MESAJ")}
    assert sendable_of(pg, BRAND_B) == {("carol", "MESAJ")}

    # Change cursors and movements are kept per brand: Bob's movement is brand A's alone, and
    # brand B's own write came back through its HS stream.
    cursors = pg.execute(
        "SELECT brand_code, stream FROM iys.sync_state WHERE stream LIKE 'changes:%' ORDER BY 1, 2"
    ).fetchall()
    assert cursors == [
        (BRAND_A, "changes:HS"),
        (BRAND_A, "changes:IYS"),
        (BRAND_B, "changes:HS"),
        (BRAND_B, "changes:IYS"),
    ]
    events = pg.execute("SELECT brand_code, recipient, status FROM iys.consent_events ORDER BY 1, 2").fetchall()
    assert (BRAND_A, BOB, "RET") in events
    assert all(brand == BRAND_A for brand, recipient, _ in events if recipient == BOB)
    runs = pg.execute("SELECT brand_code, dag_id, pushed FROM iys.sync_runs ORDER BY 1").fetchall()
    assert runs == [
        (BRAND_A, f"iys_incremental_sync__{CONN_A}", 0),
        (BRAND_B, f"iys_incremental_sync__{CONN_B}", 1),
    ]
    counters = sim_control(sim, "counters", method="GET")
    assert counters["recipients_created"] == 0
    assert counters["token_requests"] == 1, json.dumps(counters)  # one account: one token for both brands
