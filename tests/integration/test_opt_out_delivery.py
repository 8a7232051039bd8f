"""Issue #10: every path that used to lose or delay an opt-out (RET), through the simulator and Postgres.

Each ``test_path_N_…`` is one numbered path of the issue; each failed on the code before the fix.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import pytest
from incremental_support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    add_update,
    consent,
    counters,
    iys_now,
    make_feed_visible,
    outbox,
    pull,
    push,
    seed,
    truth,
    turkey_text,
)

from iys_provider.business_days import legal_deadline, oldest_registrable_consent_date
from iys_provider.exceptions import IysApiError, IysMalformedResponseError
from iys_provider.hooks.iys import IysHook
from iys_provider.models import Consent, ConsentType
from iys_provider.sensors.batch_results import IysBatchResultSensor
from tests_support import run_dag, sim_control, task_states

EVE = "+905321110005"
#: Longer than a DAG run of these tests takes: dates chosen as of now stay what they are until its end.
RUN_ALLOWANCE = timedelta(minutes=10)


# --------------------------------------------------------------------------- 1. stale copy


def test_path_1_a_stale_copy_never_turns_a_ret_into_same_status(synced, pg):
    sim = synced
    three_hours_ago, ten_minutes_ago = iys_now() - timedelta(hours=3), iys_now() - timedelta(minutes=10)
    # The citizen rejected calls through İYS three hours ago, and our copy learnt it from the feed.
    sim_control(
        sim,
        "citizen_change",
        {
            "recipient": ALICE,
            "type": "ARAMA",
            "status": "RET",
            "source": "IYS_MOBIL",
            "creationDate": turkey_text(three_hours_ago),
            "consentDate": turkey_text(three_hours_ago),
        },
    )
    pg.execute(
        "UPDATE iys.consents SET status = 'RET', source = 'IYS_MOBIL', consent_date = %s, creation_date = %s "
        "WHERE recipient = %s AND type = 'ARAMA'",
        (three_hours_ago, three_hours_ago, ALICE),
    )
    # Ten minutes ago they said ONAY through İYS (inside the feed's hidden hour); two minutes ago
    # they unsubscribed in the brand's app.
    sim_control(
        sim,
        "citizen_change",
        {
            "recipient": ALICE,
            "type": "ARAMA",
            "status": "ONAY",
            "source": "IYS_WEB",
            "creationDate": turkey_text(ten_minutes_ago),
            "consentDate": turkey_text(ten_minutes_ago),
        },
    )
    assert pull("IYS")["pulled"] == 1  # only the three-hour-old movement is visible
    assert consent(pg, ALICE, "ARAMA")[0] == "RET"
    row = add_update(pg, ALICE, "RET", type_="ARAMA", when=iys_now() - timedelta(minutes=2))

    push()

    assert outbox(pg, row)[0] == "sent"
    assert truth(sim, ALICE, "ARAMA") == "RET"
    assert consent(pg, ALICE, "ARAMA")[0] == "RET"


def test_a_ret_to_an_address_not_onay_makes_no_single_status_call_and_no_404(synced, pg):
    sim = synced
    before = counters(sim)
    rows = {
        "held_ret": add_update(pg, BOB, "RET"),  # İYS holds RET
        "unknown": add_update(pg, DAVE, "RET"),  # İYS never heard of Dave
        "onay": add_update(pg, ALICE, "RET"),  # İYS holds ONAY: withdrawn
    }
    push()
    assert {name: outbox(pg, row)[:2] for name, row in rows.items()} == {
        "held_ret": ("skipped", "NOT_ONAY_IN_IYS"),
        "unknown": ("skipped", "NOT_ONAY_IN_IYS"),
        "onay": ("sent", None),
    }
    after = counters(sim)
    assert after["single_status_calls"] == before["single_status_calls"]
    assert after["responses_by_status"].get("404", 0) == before["responses_by_status"].get("404", 0)
    assert after["multi_status_calls"] - before["multi_status_calls"] == 1


# --------------------------------------------------------------------------- 2. failed pulls


def test_path_2_a_failed_pull_does_not_hold_back_the_push(airflow_db, synced, pg):
    sim = synced
    # Both pulls fail their 7-day guard (a long outage): the run must still deliver the opt-out.
    pull("IYS")
    pull("HS")
    pg.execute("UPDATE iys.sync_state SET last_success_at = now() - interval '7 days'")
    pg.execute("UPDATE iys.initial_sync_scans SET started_at = now() - interval '8 days'")
    row = add_update(pg, ALICE, "RET")

    run = run_dag("iys_incremental_sync")

    states = task_states(run)
    assert run.state == "failed", states
    assert states["pull_iys_changes"] == ["failed(try 1)"] and states["pull_hs_changes"] == ["failed(try 1)"]
    assert states["push_consent_updates"] == ["success(try 1)"], states
    assert outbox(pg, row)[0] == "sent" and truth(sim, ALICE) == "RET"
    failed_steps = pg.execute("SELECT details->'failed_steps' FROM iys.sync_runs").fetchone()[0]
    assert failed_steps == ["pull_hs_changes", "pull_iys_changes"]


# --------------------------------------------------------------------------- 3. refused batch items


def test_path_3_a_refused_item_costs_only_itself(synced, pg):
    sim = synced
    phones = [f"+90535444{i:04d}" for i in range(40)]
    seed(sim, *((p, "MESAJ", "ONAY") for p in phones))
    refused = {phones[3]: "H121", phones[17]: "H120"}
    sim_control(sim, "config", {"refused_recipients": refused})
    ids = {p: add_update(pg, p, "RET") for p in phones}

    counts = push()

    assert counts["submitted"] == 38 and counts["rejected"] == 2
    assert {p: outbox(pg, ids[p])[:2] for p in refused} == {p: ("rejected", code) for p, code in refused.items()}
    assert counters(sim)["batch_submits"] == 1  # one refused request, one accepted
    assert IysBatchResultSensor(task_id="wait").poke(context={}).is_done
    sent = [p for p in phones if p not in refused]
    assert {outbox(pg, ids[p])[0] for p in sent} == {"sent"}
    assert all(truth(sim, p) == "RET" for p in sent)


# --------------------------------------------------------------------------- 4. clocks


def test_path_4_a_consent_date_seconds_ahead_waits_and_is_sent_in_the_same_run(synced, pg):
    sim = synced
    ahead = add_update(pg, ALICE, "RET", when=iys_now() + timedelta(seconds=2))  # the app's clock runs ahead
    far_ahead = add_update(pg, ALICE, "RET", type_="ARAMA", when=iys_now() + timedelta(hours=2))

    counts = push(clock_skew_seconds=1)

    assert counts["waited"] == 1
    assert outbox(pg, ahead)[0] == "sent" and truth(sim, ALICE) == "RET"
    assert outbox(pg, far_ahead)[:2] == ("rejected", "FUTURE_DATE")


def test_an_iys_clock_behind_ours_leaves_the_row_pending_not_rejected(synced, pg):
    sim = synced
    sim_control(sim, "clock", {"offset_seconds": -120})  # İYS's clock two minutes behind ours
    row = add_update(pg, ALICE, "RET", when=iys_now() - timedelta(seconds=30))
    push()
    assert outbox(pg, row)[:2] == ("pending", "H162")
    sim_control(sim, "clock", {"offset_seconds": 0})
    push()
    assert outbox(pg, row)[0] == "sent" and truth(sim, ALICE) == "RET"


# --------------------------------------------------------------------------- 5. per-row isolation


def test_path_5_one_odd_status_answer_stops_only_its_row(synced, pg):
    sim = synced
    # Dave and Eve are RET in İYS but unknown to our copy: an opt-in needs İYS's full record.
    seed(sim, (DAVE, "MESAJ", "RET"), (EVE, "MESAJ", "RET"))
    dave = add_update(pg, DAVE, "ONAY")
    eve = add_update(pg, EVE, "ONAY")
    opt_out = add_update(pg, ALICE, "RET")
    sim_control(
        sim,
        "faults",
        {
            "fail_next": [
                {"path_contains": "/consents/status", "status": 200, "body": '{"unexpected": true}', "count": 1}
            ]
        },
    )

    push()

    assert outbox(pg, dave)[0] == "pending" and outbox(pg, dave)[1] is not None
    assert outbox(pg, eve)[0] == "sent" and truth(sim, EVE) == "ONAY"
    assert outbox(pg, opt_out)[0] == "sent"
    push()  # the next run asks again
    assert outbox(pg, dave)[0] == "sent" and truth(sim, DAVE) == "ONAY"


def test_a_failing_multi_status_call_stops_only_its_rows(synced, pg):
    sim = synced
    sim_control(
        sim,
        "faults",
        {
            "fail_next": [
                {"path_contains": "/status/MESAJ", "status": 503, "code": "H192", "count": 50, "retry_after": 0}
            ]
        },
    )
    mesaj = add_update(pg, ALICE, "RET")
    arama = add_update(pg, ALICE, "RET", type_="ARAMA")
    counts = push(max_attempts=2)
    assert outbox(pg, mesaj)[:2] == ("pending", "H192") and counts["pending"] == 1
    assert outbox(pg, arama)[0] == "sent"
    push(max_attempts=2)
    assert outbox(pg, mesaj)[:2] == ("failed", "H192")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("404", None), ("empty", None), ("422", IysApiError), ("malformed", IysMalformedResponseError)],
)
def test_single_status_for_an_unknown_address_in_each_way_iys_may_answer(synced, mode, expected):
    sim_control(synced, "config", {"unknown_status_mode": mode})
    hook = IysHook()
    if expected is None:
        assert hook.get_consent_status(DAVE, ConsentType.MESAJ) is None
    else:
        with pytest.raises(expected) as caught:
            hook.get_consent_status(DAVE, ConsentType.MESAJ)
        assert mode != "422" or (caught.value.status_code, caught.value.code) == (422, "H114")
    assert hook.get_consent_status(ALICE, ConsentType.MESAJ).status.value == "ONAY"


@pytest.mark.parametrize(
    ("mode", "state", "code"),
    [
        ("404", "skipped", "NOT_IN_IYS"),
        ("empty", "skipped", "NOT_IN_IYS"),
        ("422", "failed", "H114"),
        ("malformed", "pending", None),
    ],
)
def test_an_opt_in_for_an_unknown_address_under_each_single_status_answer(synced, pg, mode, state, code):
    sim = synced
    sim_control(sim, "config", {"unknown_status_mode": mode})
    row = add_update(pg, DAVE, "ONAY")
    other = add_update(pg, ALICE, "RET")
    push()
    got_state, got_code = outbox(pg, row)[:2]
    assert got_state == state and (code is None or got_code == code)
    assert outbox(pg, other)[0] == "sent"
    assert counters(sim)["recipients_created"] == 0


# --------------------------------------------------------------------------- 6. new values from İYS


def test_path_6_new_values_from_iys_never_stop_the_feed(synced, pg):
    sim = synced
    sim_control(
        sim,
        "inject_events",
        {
            "events": [
                {"recipient": ALICE, "type": "MESAJ", "status": "RET", "source": "IYS_YENI_KANAL"},
                {"recipient": ALICE, "type": "ARAMA", "status": "BEKLEMEDE", "source": "IYS_WEB"},
                {"recipient": CAROL, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB"},
            ]
        },
    )
    make_feed_visible(sim)

    result = pull("IYS")

    assert (result["pulled"], result["new"], result["applied"], result["held"]) == (3, 3, 2, 1)
    assert consent(pg, ALICE)[:2] == ("RET", "IYS_YENI_KANAL")
    assert consent(pg, ALICE, "ARAMA")[0] == "ONAY"  # the undocumented status is kept, not applied
    assert consent(pg, CAROL)[0] == "ONAY"
    events = dict(pg.execute("SELECT type, status FROM iys.consent_events WHERE recipient = %s", (ALICE,)).fetchall())
    assert events == {"MESAJ": "RET", "ARAMA": "BEKLEMEDE"}


def test_an_undocumented_batch_item_status_leaves_the_item_open(synced, pg):
    sim = synced
    phones = [f"+90535555{i:04d}" for i in range(25)]
    seed(sim, *((p, "MESAJ", "ONAY") for p in phones))
    ids = [add_update(pg, p, "RET") for p in phones]
    assert push()["submitted"] == 25
    sim_control(sim, "faults", {"batch_item_status": "processing"})
    sensor = IysBatchResultSensor(task_id="wait")
    assert not sensor.poke(context={}).is_done
    assert {outbox(pg, i)[:2] for i in ids} == {("submitted", "UNDOCUMENTED_ITEM_STATUS")}
    sim_control(sim, "faults", {"batch_item_status": None})
    assert sensor.poke(context={}).is_done
    assert {outbox(pg, i)[0] for i in ids} == {"sent"}


# --------------------------------------------------------------------------- 7. duplicate transaction ids


@pytest.mark.parametrize("order", [("ONAY", "RET"), ("RET", "ONAY")])
@pytest.mark.parametrize("page_size", [1000, 1])
def test_path_7_a_transaction_id_seen_twice_keeps_the_later_movement(synced, pg, order, page_size):
    """Two movements of one address in one second share a transaction id; the one İYS lists later wins."""
    sim = synced
    tx = uuid.uuid4().hex * 2
    sim_control(
        sim,
        "inject_events",
        {
            "events": [
                {"recipient": CAROL, "type": "MESAJ", "status": status, "source": "IYS_MOBIL", "transactionId": tx}
                for status in order
            ]
        },
    )
    make_feed_visible(sim)
    pull("IYS", page_size=page_size)
    assert pg.execute("SELECT status FROM iys.consent_events WHERE transaction_id = %s", (tx,)).fetchall() == [
        (order[-1],)
    ]
    assert consent(pg, CAROL)[0] == order[-1]
    # A replay from an older cursor ends in the same state (within one page it changes nothing).
    pg.execute("UPDATE iys.sync_state SET cursor = NULL WHERE stream = 'changes:IYS'")
    replay = pull("IYS", page_size=page_size)
    assert consent(pg, CAROL)[0] == order[-1]
    assert pg.execute("SELECT status FROM iys.consent_events WHERE transaction_id = %s", (tx,)).fetchall() == [
        (order[-1],)
    ]
    assert page_size == 1 or replay["applied"] == 0


# --------------------------------------------------------------------------- 8. stuck batches


def _submitted(pg, row_id, request_id, age):
    pg.execute(
        "UPDATE iys.consent_updates SET state = 'submitted', request_id = %s, request_index = 0, attempts = 1, "
        "submitted_at = now() - %s WHERE id = %s",
        (request_id, age, row_id),
    )


def test_path_8_a_batch_iys_does_not_know_goes_back_to_pending_and_is_verified(synced, pg):
    sim = synced
    lost = add_update(pg, ALICE, "RET")
    _submitted(pg, lost, str(uuid.uuid4()), timedelta(hours=2))  # İYS answers nothing for it, ever
    malformed_id = add_update(pg, ALICE, "RET", type_="ARAMA")
    _submitted(pg, malformed_id, "abcdef", timedelta(minutes=10))  # İYS refuses the id (H199)

    assert IysBatchResultSensor(task_id="wait").poke(context={}).is_done
    assert outbox(pg, lost)[:2] == ("pending", "BATCH_EXPIRED")
    assert outbox(pg, malformed_id)[:2] == ("pending", "BATCH_UNKNOWN")

    push()
    assert outbox(pg, lost)[0] == "sent" and outbox(pg, malformed_id)[0] == "sent"
    assert truth(sim, ALICE) == "RET" and truth(sim, ALICE, "ARAMA") == "RET"


def test_the_push_reopens_old_submissions_itself_and_recognises_a_delivered_ret(synced, pg):
    sim = synced
    when = iys_now() - timedelta(minutes=2)
    row = add_update(pg, ALICE, "RET", when=when)
    # İYS applied our batch, but its results were never collected (no sensor ran since).
    opt_out = Consent(recipient=ALICE, type="MESAJ", status="RET", source="HS_MOBIL", consent_date=when)
    request_id = IysHook().submit_consent_batch([opt_out]).request_id
    _submitted(pg, row, request_id, timedelta(hours=3))
    writes = counters(sim)["writes"]
    counts = push()
    assert counts["expired_batches"] == 1
    state, _, transaction_id, _ = outbox(pg, row)
    assert state == "sent" and transaction_id  # recognised through one single-status call, not resent
    assert counters(sim)["writes"] == writes


# --------------------------------------------------------------------------- 9. worker clock ahead


def test_path_9_a_worker_clock_ahead_of_iys_does_not_hide_a_movement(synced, pg):
    sim = synced
    # Our last check of Carol ran on a worker whose clock is 30 s ahead of İYS's.
    pg.execute("UPDATE iys.consents SET checked_at = now() + interval '30 seconds' WHERE recipient = %s", (CAROL,))
    sim_control(sim, "citizen_change", {"recipient": CAROL, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB"})
    make_feed_visible(sim)
    result = pull("IYS")
    assert result["applied"] == 1
    assert consent(pg, CAROL)[:2] == ("ONAY", "IYS_WEB")


def test_a_movement_older_than_the_margin_before_our_check_stays_ignored(synced, pg):
    sim = synced
    pg.execute("UPDATE iys.consents SET checked_at = now() + interval '10 minutes' WHERE recipient = %s", (CAROL,))
    sim_control(sim, "citizen_change", {"recipient": CAROL, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB"})
    make_feed_visible(sim)
    assert pull("IYS")["applied"] == 0
    assert consent(pg, CAROL)[0] is None


# --------------------------------------------------------------------------- the RET deadline watch


def test_an_unsent_ret_near_its_deadline_fails_the_run_after_all_work(airflow_db, synced, pg):
    sim = synced
    now = iys_now()
    # The youngest consent date whose (strict) deadline is still ahead of us, and still registrable
    # when the run's push judges it a little later (across a Turkish midnight the oldest registrable
    # date of now is EXPIRED by then).
    consent_date = oldest_registrable_consent_date(now + RUN_ALLOWANCE)
    while legal_deadline(consent_date) <= now + RUN_ALLOWANCE:
        consent_date += timedelta(days=1)
    deadline = legal_deadline(consent_date)
    margin_hours = math.ceil((deadline - now).total_seconds() / 3600) + 1
    row = add_update(pg, ALICE, "RET", when=consent_date)
    # İYS cannot be asked about it tonight: the opt-out stays pending.
    sim_control(
        sim,
        "faults",
        {
            "fail_next": [
                {"path_contains": "/status/MESAJ", "status": 503, "code": "H192", "count": 100, "retry_after": 0}
            ]
        },
    )

    run = run_dag("iys_incremental_sync", {"ret_deadline_margin_hours": margin_hours})
    after_the_run = iys_now()

    states = task_states(run)
    assert run.state == "failed", states
    assert states["push_consent_updates"] == ["success(try 1)"] and states["report"][-1].startswith("failed")
    assert outbox(pg, row)[0] == "pending"
    unsent, due_24h, earliest, failed_steps = pg.execute(
        "SELECT unsent_rets, rets_due_within_24h, oldest_unsent_ret_deadline, details->'failed_steps' FROM iys.sync_runs"
    ).fetchone()
    assert (unsent, earliest, failed_steps) == (1, deadline, [])  # no step failed: the watch failed the run
    # "Within 24 h" as of the watch's clock, somewhere between now and the run's end.
    assert due_24h in {int(deadline - moment <= timedelta(hours=24)) for moment in (now, after_the_run)}
    # The same row carries İYS's success ratio of this IP (the 503s count neither way).
    ratio, calls, client_errors = pg.execute(
        "SELECT success_ratio_24h, calls_24h, client_errors_24h FROM iys.sync_runs"
    ).fetchone()
    assert calls > 0 and client_errors == 0 and ratio == 1
