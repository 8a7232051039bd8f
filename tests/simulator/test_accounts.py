"""Several İYS API accounts on one simulator (issue #13), over real HTTP.

Each token acts only for its own account's İYS code and brands (403 H353 otherwise, İYS's
documented answer for codes outside the API user's rights); the token quota with its H084 block,
the per-second limit and the single-status quota stay per client IP, across every account.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests
from iys_simulator import SimulatorServer
from iys_simulator.clock import format_turkey_time

MAIN = {"username": "demo", "password": "demo-secret", "iys_code": 700001, "brand_codes": [700001, 700002]}
SINGLE = {"username": "second", "password": "second-secret", "iys_code": 800001}
PHONE = "+905321112233"


@pytest.fixture
def sim():
    with SimulatorServer(port=0, seed=11, rate_limit_per_second=1000, brand_codes=MAIN["brand_codes"]) as server:
        server.configure(extra_accounts=[SINGLE])
        yield server


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def token_of(sim, http, account: dict) -> dict:
    response = http.post(
        f"{sim.url}/oauth2/token",
        json={"username": account["username"], "password": account["password"], "grant_type": "password"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: dict) -> dict:
    return {"Authorization": f"Bearer {token['access_token']}"}


def add_consent(sim, http, token: dict, iys: int, brand: int) -> requests.Response:
    body = {
        "consentDate": format_turkey_time(sim.app.clock.epoch() - 60),
        "source": "HS_WEB",
        "recipient": PHONE,
        "recipientType": "BIREYSEL",
        "status": "ONAY",
        "type": "MESAJ",
    }
    return http.post(f"{sim.url}/sps/{iys}/brands/{brand}/consents", json=body, headers=bearer(token))


def error(response: requests.Response) -> tuple[int, str, list]:
    item = response.json()["errors"][0]
    return response.status_code, item["code"], item.get("location")


def test_each_account_lists_and_writes_only_its_own_brands(sim, http):
    main, single = token_of(sim, http, MAIN), token_of(sim, http, SINGLE)

    brands = http.get(f"{sim.url}/sps/700001/brands", headers=bearer(main)).json()
    assert [(b["brandCode"], b["master"]) for b in brands] == [(700001, True), (700002, False)]
    brands = http.get(f"{sim.url}/sps/800001/brands", headers=bearer(single)).json()
    assert [(b["brandCode"], b["master"]) for b in brands] == [(800001, True)]

    for token, iys, brand in ((main, 700001, 700001), (main, 700001, 700002), (single, 800001, 800001)):
        assert add_consent(sim, http, token, iys, brand).status_code == 200, (iys, brand)
    assert [sim.truth(PHONE, "MESAJ", brand_code=b) for b in (700001, 700002, 800001)] == ["ONAY"] * 3


def test_a_token_used_for_another_accounts_codes_is_403_h353(sim, http):
    main, single = token_of(sim, http, MAIN), token_of(sim, http, SINGLE)
    # Another account's İYS code, and another account's brand under one's own İYS code.
    assert error(add_consent(sim, http, main, 800001, 800001)) == (403, "H353", ["iysCode"])
    assert error(add_consent(sim, http, single, 700001, 700002)) == (403, "H353", ["iysCode"])
    assert error(add_consent(sim, http, single, 800001, 700001)) == (403, "H353", ["brandCode"])
    assert error(http.get(f"{sim.url}/sps/700001/brands", headers=bearer(single))) == (403, "H353", ["iysCode"])
    assert sim.state()["consents"] == []  # nothing was written for the wrong account


def test_a_refreshed_token_keeps_its_account(sim, http):
    single = token_of(sim, http, SINGLE)
    response = http.post(
        f"{sim.url}/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": single["refresh_token"]}
    )
    assert response.status_code == 200, response.text
    refreshed = response.json()
    assert add_consent(sim, http, refreshed, 800001, 800001).status_code == 200
    assert error(add_consent(sim, http, refreshed, 700001, 700001))[:2] == (403, "H353")
    assert sim.counters()["token_requests_by_username"] == {"second": 2}


def test_wrong_password_of_an_extra_account_is_refused(sim, http):
    response = http.post(
        f"{sim.url}/oauth2/token",
        json={"username": SINGLE["username"], "password": MAIN["password"], "grant_type": "password"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_token_quota_and_h084_block_are_per_ip_across_accounts(sim, http):
    sim.configure(token_limit_per_hour=3, token_block_seconds=3600)
    token_of(sim, http, MAIN)
    token_of(sim, http, MAIN)
    token_of(sim, http, SINGLE)  # the IP's third token call: within the quota

    blocked = http.post(
        f"{sim.url}/oauth2/token",
        json={"username": SINGLE["username"], "password": SINGLE["password"], "grant_type": "password"},
    )
    assert error(blocked)[:2] == (429, "H084")
    # The block holds for the other account too, and every call during it restarts the hour.
    sim.advance_clock(3000)
    again = http.post(
        f"{sim.url}/oauth2/token",
        json={"username": MAIN["username"], "password": MAIN["password"], "grant_type": "password"},
    )
    assert error(again)[:2] == (429, "H084")
    sim.advance_clock(3000)  # 6000 s after the first H084, but only 3000 s after the last call
    assert error(http.post(f"{sim.url}/oauth2/token", json={"grant_type": "password", **_login(MAIN)}))[1] == "H084"
    sim.advance_clock(3601)
    assert token_of(sim, http, SINGLE)["access_token"]

    counters = sim.counters()
    assert counters["token_requests_by_username"] == {"demo": 4, "second": 3}
    assert counters["token_requests"] == 7 and counters["h084"] == 3 and counters["tokens_issued"] == 4


def _login(account: dict) -> dict:
    return {"username": account["username"], "password": account["password"]}


def test_per_second_limit_is_per_ip_across_accounts(sim, http):
    # Every call here falls in one second (as in test_server's H124 test): token calls count too.
    sim.configure(rate_limit_per_second=4)
    main, single = token_of(sim, http, MAIN), token_of(sim, http, SINGLE)
    for _ in range(2):
        assert http.get(f"{sim.url}/sps/700001/brands", headers=bearer(main)).status_code == 200
    # The first account used what was left of the IP's second, so the other one is refused.
    assert error(http.get(f"{sim.url}/sps/800001/brands", headers=bearer(single)))[:2] == (429, "H124")


def test_single_status_quota_is_per_ip_across_accounts(sim, http):
    main, single = token_of(sim, http, MAIN), token_of(sim, http, SINGLE)
    sim.configure(single_status_limit_per_hour=1, unknown_status_mode="empty")
    body = {"recipient": PHONE, "recipientType": "BIREYSEL", "type": "MESAJ"}
    assert http.post(f"{sim.url}/sps/700001/brands/700001/consents/status", json=body, headers=bearer(main)).ok
    limited = http.post(f"{sim.url}/sps/800001/brands/800001/consents/status", json=body, headers=bearer(single))
    assert error(limited)[:2] == (429, "H086")


def test_unknown_callers_of_the_token_endpoint_are_counted_apart(sim, http):
    http.post(f"{sim.url}/oauth2/token", json={"grant_type": "password", "username": "nobody", "password": "x"})
    http.post(f"{sim.url}/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": "forged"})
    token_of(sim, http, SINGLE)
    assert sim.counters()["token_requests_by_username"] == {"unknown": 2, "second": 1}


def test_revoking_tokens_revokes_every_accounts(sim, http):
    main, single = token_of(sim, http, MAIN), token_of(sim, http, SINGLE)
    assert sim.revoke_tokens(refresh=True) == {"access_tokens": 2, "refresh_tokens": 2}
    for token, iys in ((main, 700001), (single, 800001)):
        assert error(http.get(f"{sim.url}/sps/{iys}/brands", headers=bearer(token)))[:2] == (401, "H351")
    # A refused refresh still counts for the account whose refresh token it names.
    sim.reset_counters()
    dead = http.post(
        f"{sim.url}/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": single["refresh_token"]}
    )
    assert dead.status_code == 400
    assert sim.counters()["token_requests_by_username"] == {"second": 1}


def test_an_account_configured_away_loses_its_tokens(sim, http):
    single = token_of(sim, http, SINGLE)
    sim.configure(extra_accounts=[])
    assert error(http.get(f"{sim.url}/sps/800001/brands", headers=bearer(single)))[:2] == (401, "H351")
    response = http.post(
        f"{sim.url}/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": single["refresh_token"]}
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_accounts_through_the_control_api_masked_and_reset(sim, http):
    response = http.post(
        f"{sim.url}/__sim/config",
        json={
            "extra_accounts": [{**SINGLE, "brand_codes": "800001,800002"}, {**SINGLE, "username": "x", "iys_code": 1}]
        },
    )
    assert response.status_code == 200, response.text
    shown = response.json()["extra_accounts"]
    assert shown == [
        {"username": "second", "password": "***", "iys_code": 800001, "brand_codes": [800001, 800002]},
        {"username": "x", "password": "***", "iys_code": 1, "brand_codes": [1]},
    ]
    assert "second-secret" not in http.get(f"{sim.url}/__sim/config").text
    assert token_of(sim, http, {**SINGLE, "username": "x"})

    # A reset returns to the configuration the server started with (no extra account here).
    http.post(f"{sim.url}/__sim/reset").raise_for_status()
    assert http.get(f"{sim.url}/__sim/config").json()["extra_accounts"] == []
    refused = http.post(f"{sim.url}/oauth2/token", json={"grant_type": "password", **_login(SINGLE)})
    assert refused.status_code == 400


@pytest.mark.parametrize(
    ("accounts", "problem"),
    [
        ([{**SINGLE, "username": "demo"}], "username 'demo' is used by two accounts"),
        ([{**SINGLE, "iys_code": 700001, "brand_codes": [9]}], "iys_code 700001 is used by two accounts"),
        ([{**SINGLE, "brand_codes": [800001, 700002]}], r"brand code\(s\) \[700002\] belong to two accounts"),
        ([{**SINGLE, "role": "admin"}], r"unknown field\(s\) \['role'\]"),
        ([{"username": "x", "iys_code": 5}], r"missing field\(s\) \['password'\]"),
        ({"username": "x"}, "must be a list"),
    ],
)
def test_inconsistent_accounts_are_refused_and_change_nothing(sim, http, accounts, problem):
    response = http.post(f"{sim.url}/__sim/config", json={"extra_accounts": accounts})
    assert response.status_code == 400
    assert re.search(problem, response.json()["error"]), response.json()
    assert [a["username"] for a in http.get(f"{sim.url}/__sim/config").json()["extra_accounts"]] == ["second"]


def test_single_account_servers_behave_as_before(http):
    with SimulatorServer(port=0, seed=3) as plain:
        token = token_of(plain, http, {"username": "demo", "password": "demo-secret"})
        assert [b["brandCode"] for b in http.get(f"{plain.url}/sps/700001/brands", headers=bearer(token)).json()] == [
            700001
        ]
        assert plain.config.to_json()["extra_accounts"] == []


def test_command_line_takes_extra_accounts_as_json():
    from iys_simulator.__main__ import build_parser

    args = build_parser().parse_args(["--extra-account", '{"username": "b", "password": "p", "iys_code": 5}'])
    assert args.extra_account == [{"username": "b", "password": "p", "iys_code": 5}]
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "iys_simulator",
            "--port",
            "0",
            "--extra-account",
            '{"username": "demo", "password": "p", "iys_code": 5}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "username 'demo' is used by two accounts" in refused.stderr
