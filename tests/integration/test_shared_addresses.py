"""Addresses shared across a scan's batches are asked about once, and every user still gets the right answer.

Through the operators, the simulator over HTTP and real PostgreSQL.
"""

from __future__ import annotations

import pytest

from iys_provider.initial_sync.recipients import prepare_users
from iys_provider.initial_sync.scan_claims import claimable
from iys_provider.initial_sync.scan_claims_store import claim_addresses, claims_table_name
from iys_provider.initial_sync.scan_ledger import ScanBatch
from iys_provider.initial_sync.scan_ledger_store import read_batch_users
from iys_provider.operators.initial_sync import (
    IysFinishInitialSyncOperator,
    IysInitialSyncBatchOperator,
    IysPlanInitialSyncOperator,
)
from tests_support import sim_control

# 600 users in 3 batches of 200. Every batch holds all 200 phones (user i has phone i % 200); the
# e-mails are shared by batches 0 and 1 (i % 300 < 200 … ) so that, asked in batch order, batch 0
# asks 200 phones on MESAJ and ARAMA and 200 e-mails (3 calls), batch 1 the 100 e-mails new to it
# (1 call) and batch 2 nothing at all.
USERS = [(f"u{i:03d}", f"0532{i % 200:07d}", f"shared{i % 300}@example.com") for i in range(600)]
DISTINCT = {"MESAJ": 200, "ARAMA": 200, "EPOSTA": 300}
SQL = "SELECT id AS user_id, phone, email FROM public.users"


@pytest.fixture
def shared_users(pg, sim):
    pg.execute("DROP TABLE IF EXISTS public.users")
    pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text)")
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    with pg.cursor() as cur, cur.copy("COPY public.users (id, phone, email) FROM STDIN") as copy:
        for row in USERS:
            copy.write_row(row)
    # Every third phone and every fourth e-mail holds ONAY in İYS.
    onay = [(f"+90532{n:07d}", t) for n in range(0, 200, 3) for t in ("MESAJ", "ARAMA")]
    onay += [(f"shared{n}@example.com", "EPOSTA") for n in range(0, 300, 4)]
    sim_control(
        sim,
        "seed",
        {
            "consents": [
                {"recipient": r, "type": t, "status": "ONAY", "consentDate": "2024-03-01 10:00:00", "source": "HS_WEB"}
                for r, t in onay
            ]
        },
    )
    return set(onay)


def multi_status_calls(sim) -> int:
    return sim_control(sim, "counters", method="GET")["multi_status_calls"]


def sendable(pg) -> set[tuple[str, str, str]]:
    return set(pg.execute("SELECT user_id, recipient, type FROM iys.sendable").fetchall())


def expected_sendable(onay) -> set[tuple[str, str, str]]:
    expected = set()
    for user_id, phone, email in USERS:
        for recipient, types in ((f"+90{phone[1:]}", ("MESAJ", "ARAMA")), (email, ("EPOSTA",))):
            expected |= {(user_id, recipient, t) for t in types if (recipient, t) in onay}
    return expected


def plan():
    batches = IysPlanInitialSyncOperator(task_id="plan_batches", recipients_sql=SQL, batch_size=200).execute(context={})
    assert [b["batch_no"] for b in batches] == [0, 1, 2]
    return batches


def run_batch(batch):
    return IysInitialSyncBatchOperator(task_id="sync_batch", batch=batch).execute(context={})


def test_each_shared_address_is_asked_once_in_the_scan(airflow_db, pg, sim, shared_users):
    batches = plan()
    before = multi_status_calls(sim)
    results = [run_batch(batch) for batch in batches]

    assert [r["recipients"] for r in results] == [600, 100, 0]
    assert sum(r["recipients"] for r in results) == sum(DISTINCT.values())
    assert multi_status_calls(sim) - before == 4  # without claims: 3 calls in each batch, 9
    assert [r["users"] for r in results] == [200, 200, 200]
    assert sendable(pg) == expected_sendable(shared_users)
    assert IysFinishInitialSyncOperator(task_id="finish_scan").execute(context={})["users"] == 600
    scan_id = batches[0]["scan_id"]
    assert pg.execute("SELECT to_regclass(%s)", (claims_table_name(scan_id),)).fetchone()[0] is None


def test_users_whose_address_another_batch_still_asks_are_not_sendable_until_it_has(airflow_db, pg, sim, shared_users):
    batches = plan()
    scan_id = batches[0]["scan_id"]
    # Batch 0 claimed its addresses, then its worker died before it asked İYS.
    first = ScanBatch(scan_id, 0)
    claim_addresses(pg, first, claimable(prepare_users(read_batch_users(pg, first)).to_check))

    run_batch(batches[1])
    run_batch(batches[2])
    # Their users are linked, but the phones and the e-mails batch 0 holds have no answer yet:
    # nobody is sendable through them (never sendable by mistake).
    linked = pg.execute("SELECT count(DISTINCT user_id) FROM iys.user_recipients").fetchone()[0]
    assert linked == 400
    assert {user for user, recipient, _ in sendable(pg) if recipient.startswith("+90")} == set()
    with pytest.raises(Exception, match="unfinished batches"):
        IysFinishInitialSyncOperator(task_id="finish_scan").execute(context={})

    # Its retry asks about everything it claimed, and every user of the scan is right.
    assert run_batch(batches[0])["recipients"] == 600
    assert sendable(pg) == expected_sendable(shared_users)
    assert IysFinishInitialSyncOperator(task_id="finish_scan").execute(context={})["users"] == 600
