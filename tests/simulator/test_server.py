"""Behaviour of the İYS simulator over real HTTP (no mocks; time moves via the simulated clock)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import requests
from iys_simulator import SimulatorServer, synthetic_status
from iys_simulator.clock import TURKEY_TZ, format_turkey_time

IYS = 700001
BRAND = 700001
BASE = f"/sps/{IYS}/brands/{BRAND}"
PHONE = "+905321112233"
OTHER_PHONE = "+905321112244"
EMAIL = "ayse.yilmaz@example.com"


@pytest.fixture
def sim():
    # A generous per-second limit so only the tests about H124 ever meet it.
    with SimulatorServer(port=0, seed=7, rate_limit_per_second=1000) as server:
        yield server


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def sim_time(sim: SimulatorServer, offset_seconds: float = 0) -> str:
    """Turkey-local timestamp relative to the simulator's 'now'."""
    return format_turkey_time(sim.app.clock.epoch() + offset_seconds)


def place_clock_at(sim: SimulatorServer, turkey_local: str) -> None:
    target = datetime.strptime(turkey_local, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TURKEY_TZ).timestamp()
    sim.set_clock_offset(target - time.time())


def get_token(sim, http) -> dict:
    response = http.post(
        f"{sim.url}/oauth2/token", json={"username": "demo", "password": "demo-secret", "grant_type": "password"}
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def auth(sim, http):
    return {"Authorization": f"Bearer {get_token(sim, http)['access_token']}"}


def consent(sim, **overrides) -> dict:
    body = {
        "consentDate": sim_time(sim, -60),
        "source": "HS_WEB",
        "recipient": PHONE,
        "recipientType": "BIREYSEL",
        "status": "ONAY",
        "type": "MESAJ",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def add(sim, http, auth, body, path=f"{BASE}/consents"):
    return http.post(f"{sim.url}{path}", json=body, headers=auth)


def error_codes(response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


# ------------------------------------------------------------------------------------------ tokens
def test_password_grant_json_and_form(sim, http):
    token = get_token(sim, http)
    assert token["expires_in"] == 7200 and token["refresh_expires_in"] == 14400
    assert token["token_type"] == "bearer" and token["access_token"] != token["refresh_token"]

    form = http.post(
        f"{sim.url}/oauth2/token", data={"username": "demo", "password": "demo-secret", "grant_type": "password"}
    )
    assert form.status_code == 200

    bad = http.post(f"{sim.url}/oauth2/token", json={"username": "demo", "password": "nope", "grant_type": "password"})
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid_grant", "error_description": "Kullanıcı kimlik bilgileri geçersiz."}


def test_refresh_rotates_refresh_token(sim, http):
    first = get_token(sim, http)
    refreshed = http.post(
        f"{sim.url}/oauth2/token", json={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] != first["refresh_token"]

    reused = http.post(
        f"{sim.url}/oauth2/token", json={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"

    sim.advance_clock(14401)
    expired = http.post(
        f"{sim.url}/oauth2/token",
        json={"grant_type": "refresh_token", "refresh_token": refreshed.json()["refresh_token"]},
    )
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"


def test_missing_expired_and_revoked_tokens_give_h351(sim, http, auth):
    assert http.get(f"{sim.url}/sps/{IYS}/brands").status_code == 401
    assert http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth).status_code == 200
    sim.revoke_tokens()
    revoked = http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth)
    assert revoked.status_code == 401
    assert revoked.json() == {"errors": [{"code": "H351", "message": "Eksik veya geçersiz jeton!"}]}

    fresh = {"Authorization": f"Bearer {get_token(sim, http)['access_token']}"}
    sim.advance_clock(7201)
    assert error_codes(http.get(f"{sim.url}/sps/{IYS}/brands", headers=fresh)) == ["H351"]


def test_token_limit_blocks_and_retry_restarts_block(sim, http):
    sim.configure(token_limit_per_hour=3, token_block_seconds=3600)
    for _ in range(3):
        get_token(sim, http)
    limited = http.post(
        f"{sim.url}/oauth2/token", json={"username": "demo", "password": "demo-secret", "grant_type": "password"}
    )
    assert limited.status_code == 429 and error_codes(limited) == ["H084"]

    sim.advance_clock(3000)  # still blocked; this attempt restarts the one-hour block
    assert http.post(f"{sim.url}/oauth2/token", json={"grant_type": "password"}).status_code == 429
    sim.advance_clock(3000)  # 6000 s after the first refusal but only 3000 s after the restart
    assert http.post(f"{sim.url}/oauth2/token", json={"grant_type": "password"}).status_code == 429
    sim.advance_clock(3601)
    get_token(sim, http)
    counters = sim.counters()
    assert counters["h084"] == 3 and counters["tokens_issued"] == 4 and counters["token_requests"] == 7


# ------------------------------------------------------------------------------------------ limits
def test_per_second_limit_h124_with_retry_after(sim, http):
    # No token first: every request counts, and this test must start with an empty one-second window.
    sim.configure(rate_limit_per_second=3)
    statuses = [http.get(f"{sim.url}/sps/{IYS}/brands") for _ in range(8)]
    limited = [response for response in statuses if response.status_code == 429]
    assert [response.status_code for response in statuses[:3]] == [401, 401, 401]
    assert len(limited) == 5
    assert error_codes(limited[0]) == ["H124"]
    assert limited[0].headers["Retry-After"] == "1"
    counters = sim.counters()
    assert counters["h124"] == 5 and counters["http_429"] == 5


def test_wrong_codes_give_h353(sim, http, auth):
    assert error_codes(http.get(f"{sim.url}/sps/123/brands", headers=auth)) == ["H353"]
    response = add(sim, http, auth, consent(sim), path=f"/sps/{IYS}/brands/999/consents")
    assert response.status_code == 403 and error_codes(response) == ["H353"]


# ------------------------------------------------------------------------------------------ writes
def test_single_add_creates_and_updates(sim, http, auth):
    created = add(sim, http, auth, consent(sim))
    assert created.status_code == 200
    body = created.json()
    assert len(body["transactionId"]) == 64 and int(body["transactionId"], 16) >= 0
    assert datetime.strptime(body["creationDate"], "%Y-%m-%d %H:%M:%S")

    update = add(sim, http, auth, consent(sim, status="RET", consentDate=sim_time(sim, -30), source="HS_KARAR"))
    assert update.status_code == 200
    counters = sim.counters()
    assert counters["recipients_created"] == 1 and counters["writes"] == 2
    [stored] = sim.state()["consents"]
    assert stored["status"] == "RET" and stored["transactionId"] == update.json()["transactionId"]


def test_business_rules_h175_h174_h178(sim, http, auth):
    first_ret = add(sim, http, auth, consent(sim, status="RET"))
    assert first_ret.status_code == 400 and error_codes(first_ret) == ["H175"]

    sim.seed([{"recipient": PHONE, "type": "MESAJ", "status": "ONAY", "consentDate": sim_time(sim, -600)}])
    same = add(sim, http, auth, consent(sim))
    assert same.status_code == 400 and error_codes(same) == ["H174"]
    older = add(sim, http, auth, consent(sim, status="RET", consentDate=sim_time(sim, -1200)))
    assert older.status_code == 400 and error_codes(older) == ["H178"]
    karar_first = add(sim, http, auth, consent(sim, recipient=OTHER_PHONE, status="RET", source="HS_KARAR"))
    assert error_codes(karar_first) == ["H408"]
    assert sim.counters()["recipients_created"] == 0


def test_three_business_day_rule(sim, http, auth):
    place_clock_at(sim, "2025-03-13 12:00:00")  # Thursday
    assert add(sim, http, auth, consent(sim, consentDate="2025-03-10 09:00:00")).status_code == 200  # Monday
    too_old = add(sim, http, auth, consent(sim, recipient=OTHER_PHONE, consentDate="2025-03-07 09:00:00"))  # Friday
    assert too_old.status_code == 422 and error_codes(too_old) == ["H467"]
    assert too_old.json()["errors"][0]["location"] == ["consentDate"]

    # 29 October (Republic Day) is not a business day, so a Monday consent is still fine on Friday.
    place_clock_at(sim, "2025-10-31 12:00:00")
    assert (
        add(sim, http, auth, consent(sim, recipient="+905321112255", consentDate="2025-10-27 09:00:00")).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"extra": 1}, "H118"),
        ({"status": ...}, "H110"),
        ({"type": ...}, "H111"),
        ({"consentDate": ...}, "H112"),
        ({"source": ...}, "H113"),
        ({"recipient": ...}, "H114"),
        ({"status": "RED"}, "H115"),
        ({"recipientType": "KURUMSAL"}, "H116"),
        ({"recipientType": None}, "H170"),
        ({"type": "SMS"}, "H117"),
        ({"source": "IYS_WEB"}, "H119"),
        ({"type": "EPOSTA", "recipient": "ayşe@example.com"}, "H120"),
        ({"type": "EPOSTA", "recipient": "a b@example.com"}, "H120"),
        ({"type": "EPOSTA", "recipient": "x@x.x"}, "H120"),
        ({"recipient": "+905321"}, "H121"),
        ({"recipient": "+4915112345678"}, "H121"),
        ({"recipient": EMAIL}, "H464"),
        ({"type": "EPOSTA", "recipient": PHONE}, "H464"),
        ({"consentDate": "2025/01/01 10:00:00"}, "H158"),
        ({"consentDate": "2025-02-30 10:00:00"}, "H157"),
        ({"consentDate": "2015-04-30 10:00:00"}, "H156"),
        ({"source": "HS_2015", "consentDate": "2016-01-01 00:00:00"}, "H155"),
        ({"source": "HS_KARAR"}, "H408"),
    ],
)
def test_field_validation(sim, http, auth, overrides, code):
    response = add(sim, http, auth, consent(sim, **overrides))
    assert response.status_code == 422, response.text
    assert code in error_codes(response)
    assert all("location" in error for error in response.json()["errors"])


def test_future_date_and_valid_variants(sim, http, auth):
    assert error_codes(add(sim, http, auth, consent(sim, consentDate=sim_time(sim, 3600)))) == ["H162"]
    assert add(sim, http, auth, consent(sim, recipient="+9005321112233")).status_code == 200
    mixed_case = add(sim, http, auth, consent(sim, type="EPOSTA", recipient="Ayse.Yilmaz+news@Example.com"))
    assert mixed_case.status_code == 200
    assert (
        add(
            sim, http, auth, consent(sim, source="HS_2015", consentDate="2015-05-01 00:00:00", recipient=OTHER_PHONE)
        ).status_code
        == 200
    )
    recipients = {record["recipient"] for record in sim.state()["consents"]}
    assert "+9005321112233" in recipients and "ayse.yilmaz+news@example.com" in recipients


def test_first_tacir_record_may_omit_date_and_source(sim, http, auth):
    response = add(sim, http, auth, {"recipient": PHONE, "recipientType": "TACIR", "status": "ONAY", "type": "ARAMA"})
    assert response.status_code == 200
    update = add(sim, http, auth, {"recipient": PHONE, "recipientType": "TACIR", "status": "RET", "type": "ARAMA"})
    assert update.status_code == 400 and error_codes(update) == ["H462"]


def test_v2_identical_retry_returns_same_transaction(sim, http, auth):
    body = consent(sim)
    first = add(sim, http, auth, body, path=f"/v2{BASE}/consents")
    retry = add(sim, http, auth, body, path=f"/v2{BASE}/consents")
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    v1_retry = add(sim, http, auth, body)
    assert error_codes(v1_retry) == ["H174"]
    assert sim.counters()["writes"] == 1


# ------------------------------------------------------------------------------------------ batch
def test_batch_results_hidden_until_delay(sim, http, auth):
    sim.seed([{"recipient": OTHER_PHONE, "type": "MESAJ", "status": "ONAY", "consentDate": sim_time(sim, -600)}])
    items = [
        consent(sim),
        consent(sim, recipient=OTHER_PHONE),
        consent(sim, type="EPOSTA", recipient=EMAIL, status="RET"),
    ]
    submitted = http.post(f"{sim.url}{BASE}/consents/request", json=items, headers=auth)
    assert submitted.status_code == 202
    request_id = submitted.json()["requestId"]
    sub_requests = submitted.json()["subRequests"]
    assert len(sub_requests) == 3 and {"subRequestId", "creationDate", "recipient"} <= set(sub_requests[0])

    early = http.get(f"{sim.url}{BASE}/consents/request/{request_id}", headers=auth)
    assert early.status_code == 200 and early.content == b""
    sim.advance_clock(301)
    results = http.get(f"{sim.url}/v2{BASE}/consents/request/{request_id}", headers=auth).json()
    assert [item["status"] for item in results] == ["success", "failure", "failure"]
    assert results[0]["requestId"] == request_id and len(results[0]["transactionId"]) == 64
    assert results[1]["error"]["code"] == "H174" and "subrequestId" in results[1]
    assert results[2]["error"]["code"] == "H175"
    unknown = http.get(f"{sim.url}{BASE}/consents/request/0b7e0b8c-0000-4000-8000-000000000000", headers=auth)
    assert unknown.status_code == 200 and unknown.content == b""
    assert sim.counters()["batch_submits"] == 1


def test_batch_request_level_errors(sim, http, auth):
    duplicate = http.post(f"{sim.url}{BASE}/consents/request", json=[consent(sim), consent(sim)], headers=auth)
    assert duplicate.status_code == 422 and duplicate.json()["errors"][0] == {
        **duplicate.json()["errors"][0],
        "code": "H194",
        "index": 1,
    }
    invalid_item = http.post(
        f"{sim.url}{BASE}/consents/request", json=[consent(sim), consent(sim, status="X")], headers=auth
    )
    assert invalid_item.status_code == 422 and invalid_item.json()["errors"][0]["index"] == 1
    too_many = [consent(sim, recipient=f"+90532{i:07d}") for i in range(1001)]
    assert error_codes(http.post(f"{sim.url}{BASE}/consents/request", json=too_many, headers=auth)) == ["H125"]


def test_batch_enqueue_fault_processes_late(sim, http, auth):
    sim.set_faults(enqueue_rate=1.0)
    submitted = http.post(f"{sim.url}{BASE}/consents/request", json=[consent(sim)], headers=auth).json()
    sim.advance_clock(301)
    [pending] = http.get(f"{sim.url}{BASE}/consents/request/{submitted['requestId']}", headers=auth).json()
    assert pending["status"] == "enqueue" and sim.state()["consents"] == []
    sim.advance_clock(300)
    [done] = http.get(f"{sim.url}{BASE}/consents/request/{submitted['requestId']}", headers=auth).json()
    assert done["status"] == "success"


# ------------------------------------------------------------------------------------------ status
def test_single_status_known_and_unknown_modes(sim, http, auth):
    sim.seed(
        [
            {
                "recipient": EMAIL,
                "type": "EPOSTA",
                "status": "ONAY",
                "consentDate": "2024-05-01 10:00:00",
                "source": "HS_WEB",
            }
        ]
    )
    query = {"recipient": EMAIL.upper(), "recipientType": "BIREYSEL", "type": "EPOSTA"}
    found = http.post(f"{sim.url}{BASE}/consents/status", json=query, headers=auth)
    assert found.status_code == 200
    assert found.json()["status"] == "ONAY" and found.json()["retailerAccessCount"] == 0
    assert found.json()["recipient"] == EMAIL

    unknown = {"recipient": PHONE, "recipientType": "BIREYSEL", "type": "MESAJ"}
    missing = http.post(f"{sim.url}{BASE}/consents/status", json=unknown, headers=auth)
    assert missing.status_code == 404 and error_codes(missing) == ["H000"]
    sim.configure(unknown_status_mode="empty")
    empty = http.post(f"{sim.url}{BASE}/consents/status", json=unknown, headers=auth)
    assert empty.status_code == 200 and empty.content == b""


def test_single_status_hourly_quota(sim, http, auth):
    sim.configure(single_status_limit_per_hour=2)
    query = {"recipient": PHONE, "recipientType": "BIREYSEL", "type": "MESAJ"}
    statuses = [http.post(f"{sim.url}{BASE}/consents/status", json=query, headers=auth).status_code for _ in range(3)]
    assert statuses == [404, 404, 429]
    sim.advance_clock(3601)
    assert http.post(f"{sim.url}{BASE}/consents/status", json=query, headers=auth).status_code == 404


def test_multi_status_lists_only_onay(sim, http, auth):
    sim.seed(
        [
            {"recipient": PHONE, "type": "MESAJ", "status": "ONAY"},
            {"recipient": OTHER_PHONE, "type": "MESAJ", "status": "RET"},
            {"recipient": "+905321112266", "type": "ARAMA", "status": "ONAY"},
        ]
    )
    body = {"recipients": [PHONE, OTHER_PHONE, "+905321112266", "+905321112277"]}
    response = http.post(f"{sim.url}{BASE}/consents/BIREYSEL/status/MESAJ", json=body, headers=auth)
    assert response.status_code == 200 and response.json()["list"] == [PHONE]
    assert len(response.json()["requestId"]) == 36

    def codes(payload):
        return error_codes(http.post(f"{sim.url}{BASE}/consents/BIREYSEL/status/MESAJ", json=payload, headers=auth))

    assert codes({}) == ["H168"]
    assert codes({"recipients": PHONE}) == ["H478"]
    assert codes({"recipients": []}) == ["H164"]
    assert codes({"recipients": [PHONE, PHONE]}) == ["H193"]
    assert codes({"recipients": [EMAIL]}) == ["H464"]
    assert codes({"recipients": [f"+90532{i:07d}" for i in range(1001)]}) == ["H125"]


# ------------------------------------------------------------------------------------------ changes
def test_change_feed_window_cursor_and_204(sim, http, auth):
    changes = f"{sim.url}{BASE}/consents/changes"
    assert http.get(changes, headers=auth).status_code == 204

    for offset, recipient in (
        (-8 * 86400, "+905320000001"),
        (-3 * 3600, "+905320000002"),
        (-2 * 3600, "+905320000003"),
        (-600, "+905320000004"),
    ):
        sim.citizen_change(
            recipient=recipient, type="MESAJ", status="ONAY", source="IYS_MOBIL", creationDate=sim_time(sim, offset)
        )
    add(sim, http, auth, consent(sim))  # an HS movement: only in the HS stream

    page = http.get(changes, params={"limit": 1}, headers=auth)
    assert page.status_code == 200
    assert [item["recipient"] for item in page.json()["list"]] == ["+905320000002"]
    cursor = page.json()["after"]
    millis, _, transaction_id = cursor.partition("_")
    assert millis.isdigit() and transaction_id == page.json()["list"][0]["transactionId"]

    rest = http.get(changes, params={"after": cursor, "source": "IYS"}, headers=auth)
    assert [item["recipient"] for item in rest.json()["list"]] == ["+905320000003"]  # 10-minute-old one is hidden
    assert http.get(changes, params={"after": rest.json()["after"]}, headers=auth).status_code == 204

    sim.advance_clock(3600)
    later = http.get(changes, params={"after": rest.json()["after"]}, headers=auth).json()["list"]
    assert [item["recipient"] for item in later] == ["+905320000004"]
    hs = http.get(changes, params={"source": "HS"}, headers=auth).json()["list"]
    assert [item["source"] for item in hs] == ["HS_WEB"]

    assert error_codes(http.get(changes, params={"source": "XX"}, headers=auth)) == ["H506"]
    assert error_codes(http.get(changes, params={"limit": 1001}, headers=auth)) == ["H507"]
    assert error_codes(http.get(changes, params={"limit": 0}, headers=auth)) == ["H507"]
    assert sim.truth("+905320000004", "MESAJ") == "ONAY"


# ------------------------------------------------------------------------------------------ faults
def test_drop_after_commit_loses_response_but_keeps_write(sim, http, auth):
    sim.set_faults(drop_after_commit_next=1)
    body = consent(sim)
    with pytest.raises(requests.ConnectionError):
        add(sim, http, auth, body, path=f"/v2{BASE}/consents")
    [stored] = sim.state()["consents"]
    with requests.Session() as retry_session:
        # V2: the byte-identical retry gets the answer of the committed (but unanswered) write.
        retry = add(sim, retry_session, auth, body, path=f"/v2{BASE}/consents")
        assert retry.status_code == 200 and retry.json()["transactionId"] == stored["transactionId"]

        v1_body = consent(sim, recipient=OTHER_PHONE)
        sim.set_faults(drop_after_commit_next=1)
        with pytest.raises(requests.ConnectionError):
            add(sim, retry_session, auth, v1_body)
    with requests.Session() as v1_retry_session:
        assert error_codes(add(sim, v1_retry_session, auth, v1_body)) == ["H174"]
    counters = sim.counters()
    assert counters["dropped_connections"] == 2 and counters["writes"] == 2


def test_fail_next_and_html_faults(sim, http, auth):
    sim.set_faults(
        fail_next=[{"path_contains": "/consents/changes", "status": 503, "code": "H192", "count": 2, "retry_after": 5}]
    )
    changes = f"{sim.url}{BASE}/consents/changes"
    first, second, third = (http.get(changes, headers=auth) for _ in range(3))
    assert first.status_code == second.status_code == 503 and error_codes(first) == ["H192"]
    assert first.headers["Retry-After"] == "5"
    assert third.status_code == 204

    sim.set_faults(fail_next=[{"path_contains": "/brands", "status": 500, "body": "not json"}])
    raw = http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth)
    assert raw.status_code == 500 and raw.text == "not json"

    sim.set_faults(html_error_rate=1.0)
    html = http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth)
    assert html.status_code == 502 and html.headers["Content-Type"].startswith("text/html")
    assert requests.get(f"{sim.url}/__sim/counters").status_code == 200  # control API is never faulted
    assert sim.counters()["injected_errors"] == 4


def test_drop_rate_closes_connection(sim, http, auth):
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth)
    sim.set_faults(reset=True)
    with requests.Session() as fresh:
        assert fresh.get(f"{sim.url}/sps/{IYS}/brands", headers=auth).status_code == 200


def test_latency_spikes_are_counted(sim, http, auth):
    sim.set_faults(latency_spike_rate=1.0, latency_spike_ms=1)
    for _ in range(3):
        assert http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth).status_code == 200
    sim.set_faults(latency_spike_rate=0.0)
    assert http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth).status_code == 200
    assert sim.counters()["latency_spikes"] == 3


def test_every_nth_request_gets_its_fault(sim, auth):
    """error_every / drop_every / spike_every: a fault certain to happen within a few requests."""
    before = sim.counters()["requests"]  # the token request of ``auth`` counts too
    sim.set_faults(error_every=3, drop_every=4, spike_every=2, latency_spike_ms=1)
    outcomes = []
    for _ in range(12):
        with requests.Session() as fresh:  # a dropped connection must not spoil the next request
            try:
                outcomes.append(fresh.get(f"{sim.url}/sps/{IYS}/brands", headers=auth).status_code)
            except requests.ConnectionError:
                outcomes.append("dropped")
    ordinals = range(before + 1, before + 13)
    expected = ["dropped" if n % 4 == 0 else "5xx" if n % 3 == 0 else 200 for n in ordinals]
    assert [o if o in (200, "dropped") else "5xx" for o in outcomes] == expected, outcomes
    assert all(o in (200, "dropped", 500, 503) for o in outcomes), outcomes
    counters = sim.counters()
    assert counters["dropped_connections"] == expected.count("dropped")
    assert counters["injected_errors"] == expected.count("5xx")
    assert counters["latency_spikes"] == sum(1 for n in ordinals if n % 2 == 0)


# ------------------------------------------------------------------------------------------ control
def test_control_api_over_http(sim, http):
    control = f"{sim.url}/__sim"
    assert http.post(
        f"{control}/seed",
        json={"consents": [{"recipient": PHONE, "type": "MESAJ", "status": "ONAY"}], "emit_events": True},
    ).json() == {"seeded": 1}
    assert len(http.get(f"{control}/state").json()["consents"]) == 1
    assert len(http.get(f"{control}/events").json()["events"]) == 1
    before = http.get(f"{control}/clock").json()["epoch_ms"]
    after = http.post(f"{control}/clock", json={"advance_seconds": 86400}).json()["epoch_ms"]
    assert after - before >= 86400 * 1000
    assert http.post(f"{control}/config", json={"batch_result_delay": 10}).json()["batch_result_delay"] == 10
    assert http.post(f"{control}/config", json={"nonsense": 1}).status_code == 400
    assert http.post(f"{control}/faults", json={"error_rate": 0.5}).json()["error_rate"] == 0.5
    http.post(f"{control}/reset")
    assert http.get(f"{control}/state").json()["consents"] == []
    assert http.get(f"{control}/faults").json()["error_rate"] == 0.0
    assert sim.config.batch_result_delay == 300


def test_synthetic_population_is_lazy_and_recomputable(sim, http, auth):
    http.post(f"{sim.url}/__sim/seed_synthetic", json={"count": 1_000_000, "onay_ratio": 0.6, "ret_ratio": 0.2})
    phones = [f"+90532{user:07d}" for user in (0, 1, 2, 999_999)]
    expected = [synthetic_status(phone, "MESAJ", 0.6, 0.2) for phone in phones]
    truth = [
        http.get(f"{sim.url}/__sim/truth", params={"recipient": phone, "type": "MESAJ"}).json()["status"]
        for phone in phones
    ]
    assert truth == expected
    listed = http.post(
        f"{sim.url}{BASE}/consents/BIREYSEL/status/MESAJ", json={"recipients": phones}, headers=auth
    ).json()["list"]
    assert listed == [phone for phone, status in zip(phones, expected, strict=False) if status == "ONAY"]
    assert sim.truth("user5@example.com", "EPOSTA") == synthetic_status("user5@example.com", "EPOSTA", 0.6, 0.2)
    assert sim.truth("+905320000000", "MESAJ", brand_code=BRAND) == expected[0]
    assert sim.truth(f"+90532{1_000_000:07d}", "MESAJ") is None


# ------------------------------------------------------------------------------------------ unknown-address modes
def test_single_status_unknown_422_and_malformed_modes(sim, http, auth):
    status_url = f"{sim.url}{BASE}/consents/status"
    unknown = {"recipient": PHONE, "recipientType": "BIREYSEL", "type": "MESAJ"}
    assert sim.config.unknown_status_code == "H114"

    assert http.post(f"{sim.url}/__sim/config", json={"unknown_status_mode": "422"}).status_code == 200
    refused = http.post(status_url, json=unknown, headers=auth)
    assert refused.status_code == 422
    assert refused.json() == {
        "errors": [{"code": "H114", "message": "Alıcı (recipient) bulunamadı.", "location": ["recipient"]}]
    }

    config = http.post(f"{sim.url}/__sim/config", json={"unknown_status_code": "H999"}).json()
    assert config["unknown_status_mode"] == "422" and config["unknown_status_code"] == "H999"
    custom = http.post(status_url, json=unknown, headers=auth)
    assert custom.status_code == 422 and error_codes(custom) == ["H999"]
    assert custom.json()["errors"][0]["location"] == ["recipient"]

    sim.configure(unknown_status_mode="malformed")
    malformed = http.post(status_url, json=unknown, headers=auth)
    assert malformed.status_code == 200 and malformed.json() == {"message": "Kayıt bulunamadı"}

    sim.seed([{"recipient": PHONE, "type": "MESAJ", "status": "ONAY"}])  # a known address is unaffected
    known = http.post(status_url, json=unknown, headers=auth)
    assert known.status_code == 200 and known.json()["status"] == "ONAY"
    assert http.post(f"{sim.url}/__sim/config", json={"unknown_status_mode": "teapot"}).status_code == 400
    counters = sim.counters()
    assert counters["by_endpoint_status"]["single_status"] == {"422": 2, "200": 2}


# ------------------------------------------------------------------------------------------ scripted item errors
def test_fail_next_can_name_one_batch_item(sim, http, auth):
    rule = {
        "path_contains": "/consents/request",
        "method": "POST",
        "status": 422,
        "code": "H122",
        "index": 1,
        "location": ["recipient"],
    }
    faults = http.post(f"{sim.url}/__sim/faults", json={"fail_next": [rule]}).json()
    assert faults["fail_next"][0]["index"] == 1 and faults["fail_next"][0]["location"] == ["recipient"]
    items = [consent(sim), consent(sim, recipient=OTHER_PHONE)]
    failed = http.post(f"{sim.url}/v2{BASE}/consents/request", json=items, headers=auth)
    assert failed.status_code == 422
    assert failed.json() == {
        "errors": [
            {
                "code": "H122",
                "message": "Alıcı (recipient) geçerli bir telefon numarası ya da e-posta adresi olmalıdır.",
                "location": ["recipient"],
                "index": 1,
            }
        ]
    }
    assert sim.state()["consents"] == [] and sim.counters()["batch_submits"] == 0
    # Without index/location the injected error keeps its old shape.
    sim.set_faults(fail_next=[{"path_contains": "/brands", "status": 503}])
    assert http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth).json() == {
        "errors": [{"code": "H192", "message": "İstek zaman aşımına uğradı."}]
    }
    assert http.post(f"{sim.url}{BASE}/consents/request", json=items, headers=auth).status_code == 202


# ------------------------------------------------------------------------------------------ refused recipients
def test_refused_recipients_fail_the_whole_batch_at_request_level(sim, http, auth):
    config = http.post(
        f"{sim.url}/__sim/config", json={"refused_recipients": {OTHER_PHONE: "H122", "Ayse.Yilmaz@Example.com": "H999"}}
    ).json()
    assert config["refused_recipients"] == {OTHER_PHONE: "H122", EMAIL: "H999"}  # normalised like İYS stores them
    items = [consent(sim), consent(sim, recipient=OTHER_PHONE), consent(sim, type="EPOSTA", recipient=EMAIL.upper())]
    for path in (f"{BASE}/consents/request", f"/v2{BASE}/consents/request"):
        refused = http.post(f"{sim.url}{path}", json=items, headers=auth)
        assert refused.status_code == 422, refused.text
        assert refused.json() == {
            "errors": [
                {
                    "code": "H122",
                    "message": "Alıcı (recipient) geçerli bir telefon numarası ya da e-posta adresi olmalıdır.",
                    "location": ["recipient"],
                    "value": OTHER_PHONE,
                    "index": 1,
                },
                {
                    "code": "H999",
                    "message": "Alıcı (recipient) İYS tarafından kabul edilmedi.",
                    "location": ["recipient"],
                    "value": EMAIL.upper(),
                    "index": 2,
                },
            ]
        }
    mixed = http.post(f"{sim.url}{BASE}/consents/request", json=[consent(sim, status="X"), items[1]], headers=auth)
    assert mixed.status_code == 422
    assert [(error["code"], error["index"]) for error in mixed.json()["errors"]] == [("H115", 0), ("H122", 1)]
    assert sim.state()["consents"] == [] and sim.counters()["batch_submits"] == 0  # nothing processed

    sim.configure(refused_recipients={})
    assert http.post(f"{sim.url}{BASE}/consents/request", json=items, headers=auth).status_code == 202


def test_refused_recipients_fail_single_add(sim, http, auth):
    sim.configure(refused_recipients={OTHER_PHONE: "H174"})  # whatever the code, the answer is a 422
    for path in (f"{BASE}/consents", f"/v2{BASE}/consents"):
        refused = add(sim, http, auth, consent(sim, recipient=OTHER_PHONE), path=path)
        assert refused.status_code == 422
        [error] = refused.json()["errors"]
        assert error["code"] == "H174" and error["location"] == ["recipient"] and "index" not in error
    assert add(sim, http, auth, consent(sim)).status_code == 200
    assert sim.truth(OTHER_PHONE, "MESAJ") is None and sim.counters()["writes"] == 1
    assert http.post(f"{sim.url}/__sim/config", json={"refused_recipients": ["+905321112244"]}).status_code == 400


# ------------------------------------------------------------------------------------------ undocumented batch item status
def test_batch_item_status_fault_masks_results_until_cleared(sim, http, auth):
    first = http.post(f"{sim.url}{BASE}/consents/request", json=[consent(sim)], headers=auth).json()["requestId"]
    sim.advance_clock(301)
    [real] = http.get(f"{sim.url}{BASE}/consents/request/{first}", headers=auth).json()
    assert real["status"] == "success"

    assert (
        http.post(f"{sim.url}/__sim/faults", json={"batch_item_status": "processing"}).json()["batch_item_status"]
        == "processing"
    )
    items = [consent(sim, recipient=OTHER_PHONE), consent(sim, recipient=OTHER_PHONE, type="ARAMA", status="RET")]
    second = http.post(f"{sim.url}{BASE}/consents/request", json=items, headers=auth).json()
    sim.advance_clock(301)
    masked = http.get(f"{sim.url}{BASE}/consents/request/{second['requestId']}", headers=auth).json()
    sub_ids = [sub["subRequestId"] for sub in second["subRequests"]]
    assert masked == [{"index": i, "status": "processing", "subrequestId": sub_ids[i]} for i in range(2)]
    assert sim.truth(OTHER_PHONE, "MESAJ") == "ONAY"  # the real processing went on
    # An item already reported keeps its real result.
    assert http.get(f"{sim.url}{BASE}/consents/request/{first}", headers=auth).json() == [real]

    http.post(f"{sim.url}/__sim/faults", json={"batch_item_status": None})
    results = http.get(f"{sim.url}{BASE}/consents/request/{second['requestId']}", headers=auth).json()
    assert [(item["status"], item.get("subRequestId", item.get("subrequestId"))) for item in results] == [
        ("success", sub_ids[0]),
        ("failure", sub_ids[1]),
    ]
    assert results[1]["error"]["code"] == "H175"
    sim.set_faults(batch_item_status="processing")
    assert http.get(f"{sim.url}{BASE}/consents/request/{second['requestId']}", headers=auth).json() == results


# ------------------------------------------------------------------------------------------ raw feed injection
def _epoch_ms(turkey_local: str) -> int:
    return int(datetime.strptime(turkey_local, "%Y-%m-%d %H:%M:%S").replace(tzinfo=TURKEY_TZ).timestamp() * 1000)


def test_inject_events_raw_values_in_injection_order_without_state(sim, http, auth):
    created = sim_time(sim, -7200)
    ids = ["c" * 64, "a" * 64, "b" * 64]  # insertion order differs from transactionId order
    common = {"creationDate": created}
    raw = [
        {
            **common,
            "recipient": PHONE,
            "type": "MESAJ",
            "status": "BEKLEMEDE",
            "source": "IYS_YENI_KANAL",
            "transactionId": ids[0],
        },
        {
            **common,
            "recipient": "Ayse@Example.com",
            "type": "EPOSTA",
            "status": "ONAY",
            "source": "IYS_WEB_YENI",
            "transactionId": ids[1],
            "consentDate": None,
            "citizenName": "Ayşe Y.",
            "recipientType": "TACIR",
        },
        {
            **common,
            "recipient": OTHER_PHONE,
            "type": "SMS",
            "status": "RET",
            "source": "IYS_MOBIL",
            "transactionId": ids[2],
        },
    ]
    answer = http.post(f"{sim.url}/__sim/inject_events", json={"events": raw})
    assert answer.status_code == 200, answer.text
    millis = _epoch_ms(created)
    assert answer.json() == {
        "injected": 3,
        "events": [{"transactionId": tx, "creationDate": created, "cursor": f"{millis}_{tx}"} for tx in ids],
    }
    page = http.get(f"{sim.url}{BASE}/consents/changes", headers=auth).json()
    assert [item["transactionId"] for item in page["list"]] == ids
    assert page["list"][0] == {
        "creationDate": created,
        "source": "IYS_YENI_KANAL",
        "recipient": PHONE,
        "recipientType": "BIREYSEL",
        "status": "BEKLEMEDE",
        "type": "MESAJ",
        "transactionId": ids[0],
    }
    assert page["list"][1]["recipient"] == "Ayse@Example.com" and page["list"][1]["consentDate"] is None
    assert page["list"][1]["citizenName"] == "Ayşe Y." and page["list"][1]["recipientType"] == "TACIR"
    assert page["after"] == f"{millis}_{ids[2]}"
    assert sim.state()["consents"] == [] and sim.truth(OTHER_PHONE, "SMS") is None

    # Resuming from the middle of a same-second run follows injection order, not transactionId order.
    rest = http.get(f"{sim.url}{BASE}/consents/changes", params={"after": f"{millis}_{ids[0]}"}, headers=auth).json()
    assert [item["transactionId"] for item in rest["list"]] == ids[1:]
    assert (
        http.get(f"{sim.url}{BASE}/consents/changes", params={"after": page["after"]}, headers=auth).status_code == 204
    )


def test_inject_events_repeated_transaction_id_pages_without_loss(sim, http, auth):
    created = sim_time(sim, -7200)
    shared = "d" * 64
    movements = [
        {
            "recipient": PHONE,
            "type": "MESAJ",
            "status": "ONAY",
            "source": "IYS_WEB",
            "creationDate": created,
            "transactionId": shared,
        },
        {
            "recipient": PHONE,
            "type": "MESAJ",
            "status": "RET",
            "source": "IYS_WEB",
            "creationDate": created,
            "transactionId": shared,
        },
        {
            "recipient": OTHER_PHONE,
            "type": "ARAMA",
            "status": "ONAY",
            "source": "IYS_MOBIL",
            "creationDate": sim_time(sim, -7199),
        },
    ]
    injected = sim.inject_events(movements)["events"]
    millis = _epoch_ms(created)
    assert [event["cursor"] for event in injected[:2]] == [f"{millis}_{shared}", f"{millis}_{shared}~2"]
    assert len(injected[2]["transactionId"]) == 64 and injected[2]["transactionId"] != shared

    changes = f"{sim.url}{BASE}/consents/changes"
    whole = http.get(changes, headers=auth).json()
    assert [item["status"] for item in whole["list"]] == ["ONAY", "RET", "ONAY"]

    seen, cursors, cursor = [], [], None
    while True:  # limit=1: every page ends between or after the two movements sharing a key
        params = {"limit": 1, **({"after": cursor} if cursor else {})}
        page = http.get(changes, params=params, headers=auth)
        if page.status_code == 204:
            break
        [item] = page.json()["list"]
        seen.append((item["transactionId"], item["status"]))
        cursor = page.json()["after"]
        cursors.append(cursor)
    assert seen == [(shared, "ONAY"), (shared, "RET"), (injected[2]["transactionId"], "ONAY")]
    assert cursors == [event["cursor"] for event in injected] and len(set(cursors)) == 3

    two = http.get(changes, params={"limit": 2}, headers=auth).json()
    assert [item["status"] for item in two["list"]] == ["ONAY", "RET"] and two["after"] == f"{millis}_{shared}~2"
    # A movement with the same key injected later is served after the ones already read.
    late = sim.inject_events([{**movements[0], "status": "ONAY", "source": "IYS_CM"}])["events"][0]
    assert late["cursor"] == f"{millis}_{shared}~3"
    after_two = http.get(changes, params={"after": two["after"]}, headers=auth).json()["list"]
    assert [(item["source"], item["status"]) for item in after_two] == [("IYS_CM", "ONAY"), ("IYS_MOBIL", "ONAY")]
    assert sim.state()["consents"] == []


def test_inject_events_apply_hs_stream_defaults_and_errors(sim, http, auth):
    changes = f"{sim.url}{BASE}/consents/changes"
    answer = sim.inject_events(
        [
            {"recipient": EMAIL.upper(), "type": "EPOSTA", "status": "RET", "source": "IYS_WEB", "apply": True},
            {"recipient": PHONE, "type": "MESAJ", "status": "BEKLEMEDE", "source": "IYS_WEB", "apply": True},
            {
                "recipient": PHONE,
                "type": "ARAMA",
                "status": "ONAY",
                "source": "HS_WEB",
                "stream": "HS",
                "brandCode": BRAND,
            },
        ]
    )
    assert answer["injected"] == 3 and all(len(event["transactionId"]) == 64 for event in answer["events"])
    assert abs(_epoch_ms(answer["events"][0]["creationDate"]) - sim.app.clock.epoch_ms()) < 2000  # default: now
    [stored] = sim.state()["consents"]  # only the applied ONAY/RET movement changed state
    assert (
        stored["recipient"] == EMAIL
        and stored["status"] == "RET"
        and stored["transactionId"] == answer["events"][0]["transactionId"]
    )
    assert sim.truth(PHONE, "MESAJ") is None and sim.truth(PHONE, "ARAMA") is None

    assert http.get(changes, headers=auth).status_code == 204  # "now": hidden for the first hour
    sim.advance_clock(3601)
    iys = http.get(changes, headers=auth).json()["list"]
    assert [(item["recipient"], item["status"]) for item in iys] == [(EMAIL.upper(), "RET"), (PHONE, "BEKLEMEDE")]
    assert "consentDate" not in iys[0]
    hs = http.get(changes, params={"source": "HS"}, headers=auth).json()["list"]
    assert [(item["type"], item["source"]) for item in hs] == [("ARAMA", "HS_WEB")]

    control = f"{sim.url}/__sim/inject_events"
    good = {"recipient": PHONE, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB"}
    assert (
        http.post(control, json={"events": [good, {"recipient": PHONE, "type": "MESAJ", "status": "ONAY"}]}).status_code
        == 400
    )
    assert http.post(control, json={"events": [{**good, "stream": "XX"}]}).status_code == 400
    assert http.post(control, json={"events": [{**good, "color": "red"}]}).status_code == 400
    assert http.post(control, json={"events": [{**good, "creationDate": "yesterday"}]}).status_code == 400
    assert http.post(control, json={"events": good}).status_code == 400
    assert len(sim.events()) == 3  # a rejected call injects nothing
    assert http.post(control, json={"events": []}).json() == {"injected": 0, "events": []}


def test_normal_movements_interleave_with_injected_ones(sim, http, auth):
    created = sim_time(sim, -7200)
    first = sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET", source="IYS_MOBIL", creationDate=created)
    same_second = {"creationDate": created, "transactionId": first["transactionId"]}
    injected = sim.inject_events(
        [{"recipient": PHONE, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB", **same_second}]
    )
    injected = injected["events"][0]
    last = sim.citizen_change(
        recipient=OTHER_PHONE, type="MESAJ", status="ONAY", source="IYS_WEB", creationDate=created
    )
    assert injected["cursor"] == f"{first['cursor']}~2"
    listed = http.get(f"{sim.url}{BASE}/consents/changes", headers=auth).json()
    assert [(item["transactionId"], item["status"]) for item in listed["list"]] == [
        (first["transactionId"], "RET"),
        (first["transactionId"], "ONAY"),
        (last["transactionId"], "ONAY"),
    ]
    assert listed["after"] == last["cursor"] and "~" not in last["cursor"]
    assert sim.truth(PHONE, "MESAJ") == "RET"  # the injected movement did not touch state


# ------------------------------------------------------------------------------------------ counters
def test_counters_per_endpoint_and_status(sim, http):
    control = f"{sim.url}/__sim"
    token = get_token(sim, http)["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    http.get(f"{sim.url}/sps/{IYS}/brands", headers=auth)
    http.get(f"{sim.url}/sps/{IYS}/brands")
    http.get(f"{sim.url}{BASE}/consents/changes", headers=auth)
    http.get(f"{sim.url}/nowhere", headers=auth)
    sim.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        http.post(f"{sim.url}{BASE}/consents/status", json={}, headers=auth)
    sim.set_faults(reset=True)
    http.get(f"{control}/state")  # the control API is never counted

    counters = requests.get(f"{control}/counters").json()
    assert counters["requests"] == 6
    assert counters["by_endpoint"] == {"token": 1, "brands": 2, "changes": 1, "not_found": 1, "single_status": 1}
    assert counters["by_endpoint_status"] == {
        "token": {"200": 1},
        "brands": {"200": 1, "401": 1},
        "changes": {"204": 1},
        "not_found": {"404": 1},
        "single_status": {"dropped": 1},
    }
    assert counters["responses_by_status"] == {"200": 2, "401": 1, "204": 1, "404": 1}
    assert counters["dropped_connections"] == 1
    assert http.post(f"{control}/counters/reset").json() == {"ok": True}
    assert requests.get(f"{control}/counters").json()["by_endpoint"] == {}
