"""The incremental sync end to end: change feeds, new users, the outbox, against the simulator and Postgres."""

from __future__ import annotations

from datetime import timedelta

import pytest
from incremental_support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    OLD,
    USERS_SQL,
    add_update,
    consent,
    iys_now,
    make_feed_visible,
    outbox,
    pull,
    push,
)

from iys_provider.business_days import newest_expired_consent_date
from iys_provider.change_feed.store import store_change_page
from iys_provider.hooks.iys import IysHook
from iys_provider.models import ChangeStream, Consent
from iys_provider.outbox.rules import DEFAULT_CLOCK_SKEW
from iys_provider.sensors.batch_results import IysBatchResultSensor
from tests_support import SIM_BRAND_CODE, load_dag, sim_control


def test_citizen_and_hs_changes_land_exactly_once(synced, pg):
    sim = synced
    sim_control(
        sim, "citizen_change", {"recipient": ALICE, "type": "MESAJ", "status": "RET", "source": "IYS_KISAMESAJ"}
    )
    sim_control(
        sim, "citizen_change", {"recipient": CAROL, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB_YENI"}
    )
    # Another system of the brand writes through the API (HS stream).
    IysHook().add_consent(
        Consent(
            recipient=BOB,
            type="MESAJ",
            status="ONAY",
            source="HS_CAGRI_MERKEZI",
            consent_date=iys_now() - timedelta(minutes=1),
        )
    )
    make_feed_visible(sim)

    iys = pull("IYS")
    hs = pull("HS")
    assert (iys["pulled"], iys["new"], iys["applied"]) == (2, 2, 2)
    assert (hs["pulled"], hs["new"], hs["applied"]) == (1, 1, 1)
    assert consent(pg, ALICE)[:2] == ("RET", "IYS_KISAMESAJ")
    assert consent(pg, CAROL)[:2] == ("ONAY", "IYS_WEB_YENI")
    assert consent(pg, BOB)[:2] == ("ONAY", "HS_CAGRI_MERKEZI")
    assert pg.execute("SELECT stream, count(*) FROM iys.consent_events GROUP BY 1 ORDER BY 1").fetchall() == [
        ("HS", 1),
        ("IYS", 2),
    ]

    # A rerun pulls nothing new and changes nothing.
    before = pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall()
    assert pull("IYS")["pulled"] == 0 and pull("HS")["pulled"] == 0
    assert pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall() == before


def test_replayed_pages_from_an_older_cursor_change_nothing(synced, pg):
    sim = synced
    for i in range(5):
        sim_control(
            sim,
            "citizen_change",
            {"recipient": f"+90532222000{i}", "type": "ARAMA", "status": "ONAY", "source": "IYS_MOBIL"},
        )
    make_feed_visible(sim)
    assert pull("IYS")["new"] == 5
    before = pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall()
    pg.execute("UPDATE iys.sync_state SET cursor = NULL WHERE stream = 'changes:IYS'")  # replay everything
    replay = pull("IYS")
    assert (replay["pulled"], replay["new"], replay["applied"]) == (5, 0, 0)
    assert pg.execute("SELECT count(*) FROM iys.consent_events").fetchone()[0] == 5
    assert pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall() == before


def test_cursor_survives_a_crash_between_pages(synced, pg):
    sim = synced
    sim_control(
        sim,
        "seed",
        {
            "emit_events": True,
            "consents": [
                {
                    "recipient": f"+9053330{i:05d}",
                    "type": "MESAJ",
                    "status": "ONAY",
                    "source": "IYS_MOBIL",
                    "consentDate": OLD,
                }
                for i in range(2300)
            ],
        },
    )
    make_feed_visible(sim)
    # A worker stores the first page, then dies before the second.
    hook = IysHook()
    first_page = next(hook.iter_change_pages(ChangeStream.IYS))
    store_change_page(pg, brand_code=SIM_BRAND_CODE, stream=ChangeStream.IYS, page=first_page)
    calls_before = sim_control(sim, "counters", method="GET")["changes_calls"]

    resumed = pull("IYS")
    assert (resumed["pulled"], resumed["new"]) == (1300, 1300)
    assert sim_control(sim, "counters", method="GET")["changes_calls"] - calls_before == 3  # 2 pages + the 204
    assert pg.execute("SELECT count(*), count(DISTINCT transaction_id) FROM iys.consent_events").fetchone() == (
        2300,
        2300,
    )


def test_stale_movement_never_overrides_newer_state(synced, pg):
    sim = synced
    sim_control(sim, "citizen_change", {"recipient": ALICE, "type": "ARAMA", "status": "RET", "source": "IYS_CM"})
    sim_control(sim, "clock", {"advance_seconds": 60})
    sim_control(sim, "citizen_change", {"recipient": ALICE, "type": "ARAMA", "status": "ONAY", "source": "IYS_WEB"})
    make_feed_visible(sim)
    result = pull("IYS")
    assert result["new"] == 2 and result["applied"] == 1 and result["ignored_stale"] == 1
    assert consent(pg, ALICE, "ARAMA")[:2] == ("ONAY", "IYS_WEB")


def test_seven_day_guard_fails_with_the_remedy(synced, pg):
    pull("IYS")
    pg.execute("UPDATE iys.sync_state SET last_success_at = now() - interval '7 days' WHERE stream = 'changes:IYS'")
    pg.execute("UPDATE iys.initial_sync_scans SET started_at = now() - interval '8 days'")
    calls = sim_control(synced, "counters", method="GET")["changes_calls"]
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="rescan"):
        pull("IYS")
    assert sim_control(synced, "counters", method="GET")["changes_calls"] == calls


# --------------------------------------------------------------------------- outbox


def test_each_outbox_rule_ends_in_its_state(synced, pg):
    sim = synced
    # A citizen just rejected calls in the İYS app; we learn it (with its date) from the feed.
    sim_control(sim, "citizen_change", {"recipient": ALICE, "type": "ARAMA", "status": "RET", "source": "IYS_MOBIL"})
    make_feed_visible(sim)
    pull("IYS")
    rows = {
        "sent": add_update(pg, "0532 111 00 01", "RET"),  # Alice ONAY -> RET: a real opt-out
        "not_in_iys": add_update(pg, DAVE, "ONAY"),  # İYS never heard of Dave
        "not_onay": add_update(pg, BOB, "RET"),  # İYS holds RET: nothing to withdraw, no single-status call
        "older": add_update(pg, ALICE, "ONAY", type_="ARAMA", when=iys_now() - timedelta(minutes=10)),
        # The newest date İYS refuses today by the business-day rule (now − 10 days is not always
        # expired: around Ramazan and Kurban Bayramı the window spans more than 10 days). Judged as
        # of the push's clock skew earlier, as the push judges it: else, in the skew's seconds after
        # Turkish midnight, the push still sees yesterday and sends the row.
        "expired": add_update(
            pg, ALICE, "RET", type_="ARAMA", when=newest_expired_consent_date(iys_now() - DEFAULT_CLOCK_SKEW)
        ),
        "bad_recipient": add_update(pg, "0212 123 45 67", "RET"),
        "bad_enum": add_update(pg, ALICE, "MAYBE"),
        "bad_source": add_update(pg, ALICE, "RET", source="IYS_WEB"),
        "future": add_update(pg, ALICE, "RET", type_="ARAMA", when=iys_now() + timedelta(days=1)),
        "superseded": add_update(pg, "+90 532 111 00 01", "ONAY", when=iys_now() - timedelta(minutes=30)),
    }
    counts = push()
    expect = {
        "sent": ("sent", None),
        "not_in_iys": ("skipped", "NOT_IN_IYS"),
        "not_onay": ("skipped", "NOT_ONAY_IN_IYS"),
        "older": ("skipped", "OLDER_THAN_IYS"),
        "expired": ("rejected", "EXPIRED"),
        "bad_recipient": ("rejected", "INVALID_RECIPIENT_PHONE_NOT_MOBILE"),
        "bad_enum": ("rejected", "INVALID_STATUS"),
        "bad_source": ("rejected", "INVALID_SOURCE"),
        "future": ("rejected", "FUTURE_DATE"),
        "superseded": ("skipped", "SUPERSEDED"),
    }
    got = {name: outbox(pg, row_id)[:2] for name, row_id in rows.items()}
    assert got == expect
    assert counts["sent"] == 1
    # The confirmed update is in iys.consents with İYS's transaction id; nothing was created in İYS.
    state, _, transaction_id = consent(pg, ALICE)
    assert state == "RET" and transaction_id == outbox(pg, rows["sent"])[2]
    assert sim_control(sim, "counters", method="GET")["recipients_created"] == 0
    assert pg.execute("SELECT count(*) FROM iys.consent_updates WHERE processed_at IS NULL").fetchone()[0] == 0


def test_iys_business_error_rejects_with_the_h_code(synced, pg):
    sim_control(synced, "faults", {"fail_next": [{"path_contains": "/v2/", "status": 422, "code": "H525", "count": 1}]})
    row = add_update(pg, ALICE, "RET")
    push(max_status_checks=0)  # known ONAY locally: no single-status check needed
    assert outbox(pg, row)[:2] == ("rejected", "H525")


def test_transient_failures_are_retried_next_run_then_failed(synced, pg):
    sim = synced
    row = add_update(pg, ALICE, "RET")
    sim_control(
        sim,
        "faults",
        {"fail_next": [{"path_contains": "/v2/", "status": 503, "code": "H192", "count": 100, "retry_after": 0}]},
    )
    for attempt in range(1, 3):
        push(max_attempts=2)
        state, code, _, attempts = outbox(pg, row)
        assert attempts == attempt
        assert (state, code) == (("pending", "H192") if attempt < 2 else ("failed", "H192"))
    assert sim_control(sim, "counters", method="GET")["recipients_created"] == 0


def test_many_updates_go_as_an_async_batch_collected_by_the_sensor(synced, pg):
    sim = synced
    phones = [f"+90535444{i:04d}" for i in range(40)]
    sim_control(
        sim,
        "seed",
        {
            "consents": [
                {"recipient": p, "type": "MESAJ", "status": "ONAY", "consentDate": OLD, "source": "HS_WEB"}
                for p in phones
            ]
        },
    )
    pg.execute(
        "INSERT INTO public.users SELECT 'u' || g, '+90535444' || lpad(g::text, 4, '0'), NULL FROM generate_series(0, 39) g"
    )
    from iys_provider.operators.new_users import IysCheckNewUsersOperator

    assert IysCheckNewUsersOperator(task_id="new", recipients_sql=USERS_SQL).execute(context={})["users_checked"] == 40
    ids = [add_update(pg, p, "RET") for p in phones]
    counts = push()
    assert counts["submitted"] == 40
    assert {outbox(pg, i)[0] for i in ids} == {"submitted"}
    sensor = IysBatchResultSensor(task_id="wait")
    result = sensor.poke(context={})
    assert result.is_done
    assert {outbox(pg, i)[0] for i in ids} == {"sent"}
    assert all(consent(pg, p)[0] == "RET" for p in phones)
    assert sim_control(sim, "counters", method="GET")["recipients_created"] == 0


# --------------------------------------------------------------------------- the DAG


def test_incremental_dag_end_to_end(airflow_db, synced, pg):
    sim = synced
    sim_control(
        sim, "citizen_change", {"recipient": ALICE, "type": "MESAJ", "status": "RET", "source": "IYS_KISAMESAJ"}
    )
    pg.execute("INSERT INTO public.users VALUES ('dave', '0532 111 00 04', 'dave@example.com')")
    sim_control(
        sim,
        "seed",
        {"consents": [{"recipient": DAVE, "type": "ARAMA", "status": "ONAY", "consentDate": OLD, "source": "HS_WEB"}]},
    )
    make_feed_visible(sim)
    row = add_update(pg, ALICE, "ONAY", type_="ARAMA")  # Alice ARAMA is ONAY already: SAME_STATUS
    optout = add_update(pg, DAVE, "RET", type_="ARAMA")

    run = load_dag("iys_incremental_sync").test()
    assert run.state == "success"
    assert consent(pg, ALICE)[0] == "RET"
    assert consent(pg, DAVE, "ARAMA")[0] == "RET"
    assert outbox(pg, row)[:2] == ("skipped", "SAME_STATUS")
    assert outbox(pg, optout)[0] == "sent"
    report = pg.execute(
        "SELECT pulled_iys, applied, new_users_checked, pushed, skipped, rejected, failed FROM iys.sync_runs"
    ).fetchall()
    assert report == [(1, 1, 1, 1, 1, 0, 0)]
    assert sim_control(sim, "counters", method="GET")["recipients_created"] == 0
    # The report counted, after the run's last write, what the İYS page shows as sendable.
    recorded = dict(pg.execute("SELECT type, users FROM iys.sendable_counts").fetchall())
    live = dict(pg.execute("SELECT type, count(*) FROM iys.sendable GROUP BY type").fetchall())
    assert recorded == {channel: live.get(channel, 0) for channel in ("MESAJ", "ARAMA", "EPOSTA")}
    assert live  # the run left someone sendable, so the comparison is not of zeros only

    # A rerun (or a backfill run) is harmless.
    before = pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall()
    assert load_dag("iys_incremental_sync").test().state == "success"
    assert pg.execute("SELECT * FROM iys.consents ORDER BY recipient, type").fetchall() == before
