"""İYS's push side (the simulator) → the receiver → iys.consents and iys.sendable, then the nightly pull and the
reconciliation over the same movements: each applied once, the day agreed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import requests
from incremental_support import ALICE, consent, pull
from push_support import PUSH_PASSWORD, PUSH_USERNAME, throwaway_tls

from iys_provider.models import IYS_TIMEZONE
from iys_provider.operators.reconciliation import IysCompareSummaryOperator, IysReconcileDayOperator
from iys_provider.schema import migrate
from iys_provider.sensors.reconciliation import IysReconciliationHashSensor
from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE, SIM_PASSWORD, SIM_USERNAME, sim_control

from .conftest import rows, serving_receiver

BRAND_PATH = f"/sps/{SIM_IYS_CODE}/brands/{SIM_BRAND_CODE}"


@pytest.fixture
def tls(tmp_path):
    return throwaway_tls(tmp_path / "tls")


@pytest.fixture
def pushing_sim(sim, tls):
    """The simulator trusting the throw-away CA and retrying fast; its links and queue forgotten afterwards."""
    sim.configure(push_ca_file=str(tls.ca_file), push_retry_seconds=0.05)
    yield sim
    sim.reset()


def iys_session(sim) -> requests.Session:
    session = requests.Session()
    token = session.post(
        f"{sim.url}/oauth2/token",
        data={"grant_type": "password", "username": SIM_USERNAME, "password": SIM_PASSWORD},
        timeout=10,
    ).json()["access_token"]
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def register(sim, url: str, channel: str = "MESAJ", password: str = PUSH_PASSWORD) -> requests.Response:
    body = {"connection": [{"url": url, "type": channel, "username": PUSH_USERNAME, "password": password}]}
    with iys_session(sim) as session:
        return session.post(f"{sim.url}{BRAND_PATH}/push/registration", json=body, timeout=30)


def wait_idle(sim) -> None:
    answer = sim_control(sim, "push/wait_idle", {"timeout": 30})
    assert answer["idle"], answer


def deliveries(sim) -> list[dict]:
    return sim_control(sim, "push/deliveries", method="GET")["deliveries"]


def sendable(pg, user_id: str, channel: str = "MESAJ") -> bool:
    return bool(rows(pg, "SELECT 1 FROM iys.sendable WHERE user_id = %s AND type = %s", user_id, channel))


def test_a_citizen_ret_made_in_iys_leaves_sendable_through_push(synced, pg, pg_dsn, pushing_sim, tls):
    assert sendable(pg, "alice")
    with serving_receiver(pg_dsn, tls) as receiver:
        assert register(pushing_sim, receiver.channel_url("MESAJ")).status_code == 200
        # İYS's registration test record reached the receiver and was dropped.
        assert rows(pg, "SELECT channel, last_test_at IS NOT NULL FROM iys.push_channels") == [("MESAJ", True)]
        assert rows(pg, "SELECT count(*) FROM iys.push_inbox") == [(0,)]

        change = sim_control(
            pushing_sim,
            "citizen_change",
            {"recipient": ALICE, "type": "MESAJ", "status": "RET", "source": "IYS_KISAMESAJ"},
        )
        wait_idle(pushing_sim)

    assert not sendable(pg, "alice")
    assert consent(pg, ALICE)[0] == "RET"
    assert rows(pg, "SELECT transaction_id, deliveries FROM iys.push_inbox") == [(change["transactionId"], 1)]
    assert [d["status"] for d in deliveries(pushing_sim) if d["transactionIds"] == [change["transactionId"]]] == [200]
    # İYS's test address is nowhere among the consents.
    assert rows(pg, "SELECT count(*) FROM iys.consents WHERE recipient ILIKE 'pushtest@%%'") == [(0,)]


def test_redelivered_and_reordered_pushes_change_nothing_twice(synced, pg, pg_dsn, pushing_sim, tls):
    now = datetime.now(UTC).astimezone(IYS_TIMEZONE).replace(tzinfo=None, microsecond=0)
    with serving_receiver(pg_dsn, tls) as receiver:
        assert register(pushing_sim, receiver.channel_url("MESAJ")).status_code == 200
        sim_control(pushing_sim, "faults", {"push_duplicate_rate": 1.0, "push_reorder_window": 3, "push_paused": True})
        ids = []
        for status, minutes in (("RET", 3), ("ONAY", 2), ("RET", 1)):
            at = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S")
            answer = sim_control(
                pushing_sim,
                "citizen_change",
                {"recipient": ALICE, "type": "MESAJ", "status": status, "source": "IYS_WEB", "creationDate": at},
            )
            ids.append(answer["transactionId"])
        sim_control(pushing_sim, "faults", {"push_paused": False})
        wait_idle(pushing_sim)

    sent = [d for d in deliveries(pushing_sim) if set(d["transactionIds"]) & set(ids)]
    assert any(d["duplicate"] for d in sent)  # the fault fired: lists were delivered twice
    assert rows(pg, "SELECT transaction_id, deliveries FROM iys.push_inbox ORDER BY transaction_id") == sorted(
        (transaction_id, 2) for transaction_id in ids
    )
    # The newest movement (RET, one minute ago) holds, whatever order they came in.
    assert consent(pg, ALICE)[:1] == ("RET",)
    assert rows(pg, "SELECT transaction_id FROM iys.consents WHERE recipient = %s AND type = 'MESAJ'", ALICE) == [
        (ids[-1],)
    ]
    assert rows(pg, "SELECT count(*) FROM iys.consent_events WHERE transaction_id = ANY(%s)", ids) == [(3,)]
    assert not sendable(pg, "alice")


def test_a_receiver_with_other_credentials_is_refused_at_registration_and_stores_nothing(
    synced, pg, pg_dsn, pushing_sim, tls
):
    with serving_receiver(pg_dsn, tls) as receiver:
        answer = register(pushing_sim, receiver.channel_url("MESAJ"), password="not-the-password")
    assert answer.status_code == 422
    assert [error["code"] for error in answer.json()["errors"]] == ["H530"]
    assert rows(pg, "SELECT count(*) FROM iys.push_inbox") == [(0,)]
    assert rows(pg, "SELECT count(*) FROM iys.push_channels") == [(0,)]


def turkey_day(days_ago: int) -> date:
    return datetime.now(UTC).astimezone(IYS_TIMEZONE).date() - timedelta(days=days_ago)


def test_the_nightly_pull_after_a_day_of_pushes_applies_nothing_twice_and_the_day_is_agreed(
    pg, pg_dsn, pushing_sim, tls
):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    sim_control(pushing_sim, "config", {"reconciliation_queue_seconds": 0, "reconciliation_hash_seconds": 0})
    day = turkey_day(2)  # inside İYS's 7-day window at any hour
    day_of_movements = [
        ("+905321110101", "MESAJ", "ONAY", "IYS_WEB", "09:00:00"),
        ("+905321110101", "MESAJ", "RET", "IYS_KISAMESAJ", "11:30:00"),
        ("+905321110102", "ARAMA", "ONAY", "IYS_MOBIL", "11:30:00"),
        ("ayse@example.com", "EPOSTA", "RET", "IYS_WEB", "23:59:59"),
    ]
    with serving_receiver(pg_dsn, tls) as receiver:
        for channel in ("MESAJ", "ARAMA", "EPOSTA"):
            assert register(pushing_sim, receiver.channel_url(channel), channel).status_code == 200
        for recipient, channel, status, source, at in day_of_movements:
            sim_control(
                pushing_sim,
                "citizen_change",
                {
                    "recipient": recipient,
                    "type": channel,
                    "status": status,
                    "source": source,
                    "creationDate": f"{day} {at}",
                },
            )
        wait_idle(pushing_sim)
    pushed = rows(pg, "SELECT count(*) FROM iys.push_inbox WHERE applied_at IS NOT NULL")[0][0]
    assert pushed == len(day_of_movements)
    consents_before = rows(pg, "SELECT * FROM iys.consents ORDER BY recipient, type")
    events_before = rows(pg, "SELECT transaction_id, received_at FROM iys.consent_events ORDER BY 1")

    result = pull("IYS")

    assert (result["pulled"], result["new"], result["applied"]) == (len(day_of_movements), 0, 0)
    assert rows(pg, "SELECT * FROM iys.consents ORDER BY recipient, type") == consents_before
    assert rows(pg, "SELECT transaction_id, received_at FROM iys.consent_events ORDER BY 1") == events_before
    pull("HS")

    context = {"run_id": "night-1"}
    report_date = day.isoformat()
    IysCompareSummaryOperator(task_id="compare_summary", report_date=report_date).execute(context)
    assert IysReconciliationHashSensor(task_id="wait_for_hash", report_date=report_date).poke(context).is_done
    outcome = IysReconcileDayOperator(task_id="reconcile_day", report_date=report_date).execute(context)
    assert outcome["status"] == "agreed" and outcome["repaired"] == 0, outcome
    assert outcome["movements_ours"] == len(day_of_movements)
