"""The same change delivered twice, pages replayed from an older cursor, and a lost batch-submit answer."""

from __future__ import annotations

import json

from chaos.chaos_support import (
    assert_brand_promise,
    assert_faults_fired,
    consents_in_db,
    fault_counts,
    fresh_world,
    iys_now,
    run_dag,
    sim_events,
    sim_truth,
    synced_world_with_traffic,
    task_states,
)

from tests_support import SIM_BRAND_CODE, sim_control


def _page(events, after):
    return json.dumps(
        {
            "after": after,
            "list": [{k: v for k, v in e.items() if k not in ("brandCode", "stream", "cursor")} for e in events],
        }
    )


def test_same_change_delivered_twice_and_pages_replayed_from_an_older_cursor(airflow_db, scenario, pg):
    sim = scenario.sim
    people, traffic = synced_world_with_traffic(sim, pg)
    events = sim_events(sim)
    iys_events = [e for e in events if e["stream"] == "IYS"]
    expected = {e["transactionId"] for e in events}
    # İYS's first answer carries every IYS-stream movement twice (a proxy retry, a replica hiccup).
    doubled = _page(iys_events + iys_events, iys_events[-1]["cursor"])
    scenario.inject(
        "every movement delivered twice in one page",
        faults={
            "fail_next": [
                {"path_contains": "/consents/changes", "method": "GET", "status": 200, "body": doubled, "count": 1}
            ]
        },
    )
    injected = fault_counts(sim)
    run = run_dag("iys_incremental_sync")
    assert run.state == "success", task_states(run)
    assert_faults_fired(injected, fault_counts(sim), ("injected_errors",), "doubled page")
    assert_brand_promise(pg, sim, people + traffic.new_users, expected_event_ids=expected, traffic=traffic)
    before = pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall()

    # Replay from an older cursor (a restored backup, a cursor reset): pages come again.
    scenario.inject("cursors rewound to the start; first page replayed twice")
    pg.execute("UPDATE iys.sync_state SET cursor = NULL WHERE stream LIKE 'changes:%'")
    sim_control(
        sim,
        "faults",
        {
            "fail_next": [
                {
                    "path_contains": "/consents/changes",
                    "method": "GET",
                    "status": 200,
                    "body": _page(iys_events[:5], iys_events[4]["cursor"]),
                    "count": 1,
                }
            ]
        },
    )
    injected = fault_counts(sim)
    run = run_dag("iys_incremental_sync")
    assert run.state == "success", task_states(run)
    assert_faults_fired(injected, fault_counts(sim), ("injected_errors",), "replayed page")
    assert pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall() == before
    assert_brand_promise(pg, sim, people + traffic.new_users, expected_event_ids=expected, traffic=traffic)
    # Our own pushes are still inside İYS's hidden last hour: nothing more to pull.


def test_batch_submit_answer_lost_after_iys_committed(airflow_db, scenario, pg):
    """Many updates go as one async batch; İYS commits it and the answer is lost.

    The hook retries the POST. The retry must not double-apply, and the rows must end ``sent``
    with our consents equal to İYS's (not ``skipped SAME_STATUS`` with a stale ONAY locally).
    """
    sim = scenario.sim
    fresh_world(sim, pg, users=240)
    assert run_dag("iys_initial_sync", {"batch_size": 100}).state == "success"
    truth = sim_truth(sim)
    onay = sorted(k for k, s in truth.items() if s == "ONAY" and consents_in_db(pg).get(k) == "ONAY")[:30]
    when = iys_now().replace(second=0)
    ids = [
        pg.execute(
            "INSERT INTO iys.consent_updates (brand_code, recipient, type, recipient_type, status, consent_date, source) "
            "VALUES (%s, %s, %s, 'BIREYSEL', 'RET', %s, 'HS_MOBIL') RETURNING id",
            (SIM_BRAND_CODE, recipient, ctype, when),
        ).fetchone()[0]
        for recipient, ctype in onay
    ]
    assert len(ids) > 20  # above single_add_threshold: the async batch path
    scenario.inject("batch submit committed, answer lost", faults={"drop_after_commit_next": 1})
    injected = fault_counts(sim)
    run = run_dag("iys_incremental_sync")
    assert run.state == "success", task_states(run)
    assert_faults_fired(injected, fault_counts(sim), ("dropped_connections",), "batch submit")
    truth = sim_truth(sim)
    assert all(truth[k] == "RET" for k in onay)
    states = dict(
        pg.execute(
            "SELECT state || coalesce(':' || error_code, ''), count(*) FROM iys.consent_updates GROUP BY 1"
        ).fetchall()
    )
    per_key = {}
    for e in sim_events(sim):
        if e["stream"] == "HS":
            per_key[(e["recipient"], e["type"])] = per_key.get((e["recipient"], e["type"]), 0) + 1
    assert all(per_key.get(k) == 1 for k in onay), "a movement was applied twice"
    ours = consents_in_db(pg)
    stale = [k for k in onay if ours.get(k) != "RET"]
    assert states == {"sent": len(ids)} and not stale, (
        f"outbox states {states}; {len(stale)} opted-out addresses still {ours.get(stale[0]) if stale else None} locally "
        "(sendable) although İYS holds RET"
    )
