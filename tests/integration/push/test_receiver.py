"""The push receiver over real https: auth, the inbox, the change feed's rules, quarantine, the test record."""

from __future__ import annotations

import json

import pytest
import requests
from push_support import DOCUMENTED_TEST_PAYLOAD, PUSH_PASSWORD, PUSH_USERNAME

from iys_provider.push.store import apply_pending
from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE

from .conftest import rows

PHONE = "+905321110001"
OTHER_PHONE = "+905321110002"


def movement(transaction_id: str, status: str, at: str, *, recipient: str = PHONE, channel: str = "MESAJ", **extra):
    item = {
        "iysCode": SIM_IYS_CODE,
        "brandCode": SIM_BRAND_CODE,
        "consentDate": at,
        "creationDate": at,
        "source": "IYS_KISAMESAJ",
        "recipient": recipient,
        "recipientType": "BIREYSEL",
        "status": status,
        "type": channel,
        "transactionId": transaction_id,
    }
    item.update(extra)
    return item


def push(receiver, body, *, channel: str = "MESAJ", auth=(PUSH_USERNAME, PUSH_PASSWORD), raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(
        receiver.channel_url(channel),
        data=data,
        auth=auth,
        headers={"Content-Type": "application/json"},
        verify=str(receiver.tls.ca_file),
        timeout=10,
    )


def consent(db, recipient: str = PHONE, channel: str = "MESAJ"):
    found = rows(
        db,
        "SELECT status, transaction_id FROM iys.consents WHERE brand_code = %s AND recipient = %s AND type = %s",
        SIM_BRAND_CODE,
        recipient,
        channel,
    )
    return found[0] if found else None


def stored_anything(db) -> dict[str, int]:
    return {
        table: rows(db, f"SELECT count(*) FROM iys.{table}")[0][0]
        for table in ("push_inbox", "push_quarantine", "push_channels", "consent_events", "consents")
    }


def test_a_citizen_ret_is_stored_and_applied_before_the_answer(receiver, push_db):
    answer = push(receiver, {"list": [movement("t-1", "RET", "2026-12-04 10:00:00")]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "new": 1, "redelivered": 0, "quarantined": []}
    assert consent(push_db) == ("RET", "t-1")
    inbox = rows(push_db, "SELECT transaction_id, channel, deliveries, applied_at IS NOT NULL FROM iys.push_inbox")
    assert inbox == [("t-1", "MESAJ", 1, True)]
    assert rows(push_db, "SELECT transaction_id, stream FROM iys.consent_events") == [("t-1", "IYS")]
    assert rows(push_db, "SELECT last_push_at IS NOT NULL, last_test_at FROM iys.push_channels") == [(True, None)]


@pytest.mark.parametrize(
    "auth",
    [(PUSH_USERNAME, "wrong-password"), ("someone-else", PUSH_PASSWORD), None, ("", "")],
    ids=["wrong password", "wrong user", "no credentials", "empty credentials"],
)
def test_wrong_or_missing_credentials_get_401_and_store_nothing(receiver, push_db, auth):
    answer = push(receiver, {"list": [movement("t-1", "RET", "2026-12-04 10:00:00")]}, auth=auth)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    assert set(stored_anything(push_db).values()) == {0}


def test_a_malformed_authorization_header_is_refused(receiver, push_db):
    for header in ("Basic not-base64!", "Basic " + "dXNlcm5hbWU=", "Bearer abc", "Basic"):
        answer = requests.post(
            receiver.channel_url("MESAJ"),
            data=b'{"list": []}',
            headers={"Authorization": header},
            verify=str(receiver.tls.ca_file),
            timeout=10,
        )
        assert answer.status_code == 401, header
    assert set(stored_anything(push_db).values()) == {0}


def test_unknown_brand_or_channel_is_404(receiver, push_db):
    url = receiver.channel_url("MESAJ", conn_id="iys_other")
    answer = requests.post(
        url, json={"list": []}, auth=(PUSH_USERNAME, PUSH_PASSWORD), verify=str(receiver.tls.ca_file)
    )
    assert answer.status_code == 404
    assert push(receiver, {"list": []}, channel="FAKS").status_code == 404
    get = requests.get(
        receiver.channel_url("MESAJ"), auth=(PUSH_USERNAME, PUSH_PASSWORD), verify=str(receiver.tls.ca_file)
    )
    assert get.status_code == 405


def test_iys_test_record_is_dropped_and_only_its_arrival_kept(receiver, push_db):
    answer = push(receiver, DOCUMENTED_TEST_PAYLOAD, channel="EPOSTA")
    assert answer.status_code == 200
    counts = stored_anything(push_db)
    assert counts == {"push_inbox": 0, "push_quarantine": 0, "push_channels": 1, "consent_events": 0, "consents": 0}
    assert rows(push_db, "SELECT channel, last_push_at, last_test_at IS NOT NULL FROM iys.push_channels") == [
        ("EPOSTA", None, True)
    ]


def test_the_test_address_is_recognised_under_another_transaction_id(receiver, push_db):
    item = dict(DOCUMENTED_TEST_PAYLOAD["list"][0], transactionId="some-other-id")
    assert push(receiver, {"list": [item]}, channel="EPOSTA").status_code == 200
    assert stored_anything(push_db)["push_inbox"] == 0 and stored_anything(push_db)["consents"] == 0


def test_a_redelivery_changes_nothing_twice(receiver, push_db):
    body = {"list": [movement("t-1", "RET", "2026-12-04 10:00:00")]}
    assert push(receiver, body).json()["new"] == 1
    push_db.execute("UPDATE iys.consents SET updated_at = '2000-01-01'")
    again = push(receiver, body)
    assert again.status_code == 200
    assert again.json() == {"received": 1, "new": 0, "redelivered": 1, "quarantined": []}
    assert rows(push_db, "SELECT deliveries FROM iys.push_inbox") == [(2,)]
    assert rows(push_db, "SELECT count(*) FROM iys.consent_events") == [(1,)]
    # the consent row was not written again
    assert rows(push_db, "SELECT updated_at = '2000-01-01' FROM iys.consents") == [(True,)]


def test_an_older_movement_delivered_after_a_newer_one_does_not_win(receiver, push_db):
    assert push(receiver, {"list": [movement("t-2", "RET", "2026-12-04 10:05:00")]}).status_code == 200
    assert push(receiver, {"list": [movement("t-1", "ONAY", "2026-12-04 10:00:00")]}).status_code == 200
    assert consent(push_db) == ("RET", "t-2")
    assert rows(push_db, "SELECT count(*) FROM iys.consent_events") == [(2,)]


def test_a_list_keeps_its_good_items_and_quarantines_the_bad_with_reasons(receiver, push_db):
    good = movement("t-1", "RET", "2026-12-04 10:00:00")
    no_id = movement("", "RET", "2026-12-04 10:00:00", recipient=OTHER_PHONE)
    other_brand = movement("t-3", "RET", "2026-12-04 10:00:00", recipient=OTHER_PHONE, brandCode=999)
    bad_date = movement("t-4", "RET", "yesterday", recipient=OTHER_PHONE)
    body = {"list": [good, no_id, other_brand, bad_date, "not an object"]}
    answer = push(receiver, body)
    assert answer.status_code == 422
    reasons = {item["position"]: item["reason"] for item in answer.json()["quarantined"]}
    assert set(reasons) == {1, 2, 3, 4}
    assert "transactionId" in reasons[1] and "brandCode 999" in reasons[2] and "consentDate" in reasons[3]
    assert reasons[4] == "not an object"
    assert consent(push_db) == ("RET", "t-1")
    assert consent(push_db, OTHER_PHONE) is None
    quarantined = rows(push_db, "SELECT position, reason, deliveries FROM iys.push_quarantine ORDER BY position")
    assert [(p, d) for p, _, d in quarantined] == [(1, 1), (2, 1), (3, 1), (4, 1)]
    # İYS sending the same list again: the good item counts as redelivered, no new quarantine row
    assert push(receiver, body).status_code == 422
    assert rows(push_db, "SELECT sum(deliveries), count(*) FROM iys.push_quarantine") == [(8, 4)]
    assert rows(push_db, "SELECT deliveries FROM iys.push_inbox") == [(2,)]


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"items": []}', b"[1, 2]", b"\xff\xfe garbage"],
    ids=["not json", "no list", "a bare array", "not utf-8"],
)
def test_an_unreadable_body_is_400_and_quarantined_whole(receiver, push_db, raw):
    answer = push(receiver, None, raw=raw)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert rows(push_db, "SELECT position, channel FROM iys.push_quarantine") == [(None, "MESAJ")]
    assert stored_anything(push_db)["push_inbox"] == 0


def test_a_status_iys_never_documented_is_kept_but_not_applied(receiver, push_db):
    assert push(receiver, {"list": [movement("t-1", "ONAY", "2026-12-04 09:00:00")]}).status_code == 200
    answer = push(receiver, {"list": [movement("t-2", "BEKLEMEDE", "2026-12-04 10:00:00")]})
    assert answer.status_code == 200
    assert consent(push_db) == ("ONAY", "t-1")
    assert rows(push_db, "SELECT status FROM iys.consent_events WHERE transaction_id = 't-2'") == [("BEKLEMEDE",)]


def test_a_movement_that_cannot_be_applied_stays_in_the_inbox_and_is_applied_later(receiver, push_db):
    # A database rule of the brand's own refusing the write, then lifted.
    push_db.execute(
        """
        CREATE FUNCTION iys.refuse_consents() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'consents are read-only during maintenance'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON iys.consents FOR EACH ROW EXECUTE FUNCTION iys.refuse_consents();
        """
    )
    answer = push(receiver, {"list": [movement("t-1", "RET", "2026-12-04 10:00:00")]})
    assert answer.status_code == 200  # kept durably: answered 2xx although not applied yet
    assert consent(push_db) is None
    [(applied, error)] = rows(push_db, "SELECT applied_at, apply_error FROM iys.push_inbox")
    assert applied is None and "read-only during maintenance" in error
    push_db.execute("DROP TRIGGER refuse ON iys.consents")
    assert apply_pending(push_db, brand_code=SIM_BRAND_CODE) == (1, 1, 0)
    assert consent(push_db) == ("RET", "t-1")
    assert rows(push_db, "SELECT applied_at IS NOT NULL, apply_error FROM iys.push_inbox") == [(True, None)]


def test_two_movements_under_one_transaction_id_keep_the_later(receiver, push_db):
    first = movement("t-1", "ONAY", "2026-12-04 10:00:00")
    later = dict(movement("t-1", "RET", "2026-12-04 10:00:00"), creationDate="2026-12-04 10:00:01")
    assert push(receiver, {"list": [first]}).status_code == 200
    assert push(receiver, {"list": [later]}).status_code == 200
    assert consent(push_db) == ("RET", "t-1")
    # and the earlier one arriving again does not bring it back
    assert push(receiver, {"list": [first]}).status_code == 200
    assert consent(push_db) == ("RET", "t-1")
    assert rows(push_db, "SELECT deliveries, movement->>'status' FROM iys.push_inbox") == [(3, "RET")]


def test_the_health_route_needs_no_credentials_and_tells_nothing(receiver):
    answer = requests.get(f"{receiver.url}/healthz", verify=str(receiver.tls.ca_file), timeout=10)
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_the_receiver_process_pool_is_migrated_and_keeps_answers_inside_iys_5_seconds(pg, pg_dsn):
    from iys_provider.push.receiver import STATEMENT_TIMEOUT_MS, open_pool

    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    with open_pool("iys_postgres") as pool, pool.connection() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == (f"{STATEMENT_TIMEOUT_MS}ms",)
        assert conn.execute("SELECT to_regclass('iys.push_inbox') IS NOT NULL").fetchone() == (True,)
    assert STATEMENT_TIMEOUT_MS < 5000


def test_brands_are_read_from_the_connections_with_their_push_credentials(monkeypatch, sim):
    from iys_provider.exceptions import IysError
    from iys_provider.push.receiver import brand_endpoints
    from tests_support import iys_connection_json_with

    monkeypatch.setenv(
        "AIRFLOW_CONN_IYS_DEFAULT",
        iys_connection_json_with(
            sim.url,
            push_username=PUSH_USERNAME,
            push_password=PUSH_PASSWORD,
            push_credentials={"EPOSTA": {"username": "mail-user", "password": "mail-pass"}},
        ),
    )
    [(conn_id, brand)] = brand_endpoints(("iys_default",)).items()
    assert (conn_id, brand.iys_code, brand.brand_code) == ("iys_default", SIM_IYS_CODE, SIM_BRAND_CODE)
    assert {channel: pair.username for channel, pair in brand.credentials.items()} == {
        "ARAMA": PUSH_USERNAME,
        "MESAJ": PUSH_USERNAME,
        "EPOSTA": "mail-user",
    }
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url))
    with pytest.raises(IysError, match="no push credentials: set push_username and push_password"):
        brand_endpoints(("iys_default",))


def test_a_consent_locked_past_the_statement_timeout_is_kept_and_answered_in_time(receiver, push_db, pg_dsn):
    import time

    import psycopg

    assert push(receiver, {"list": [movement("t-1", "ONAY", "2026-12-04 09:00:00")]}).status_code == 200
    with psycopg.connect(pg_dsn) as holder:  # another transaction holds the consent row
        holder.execute("SELECT 1 FROM iys.consents WHERE recipient = %s FOR UPDATE", (PHONE,))
        started = time.monotonic()
        answer = push(receiver, {"list": [movement("t-2", "RET", "2026-12-04 10:00:00")]})
        took = time.monotonic() - started
        holder.rollback()
    assert answer.status_code == 200 and took < 5  # kept, and inside İYS's 5 s
    [(applied, error)] = rows(
        push_db, "SELECT applied_at, apply_error FROM iys.push_inbox WHERE transaction_id = 't-2'"
    )
    assert applied is None and "statement timeout" in error
    assert consent(push_db) == ("ONAY", "t-1")
    assert apply_pending(push_db, brand_code=SIM_BRAND_CODE) == (1, 1, 0)
    assert consent(push_db) == ("RET", "t-2")
