"""Registering the push receiver with İYS (the simulator, over real HTTP): service, operator and CLI.

The receiver İYS checks is the package's own (``receiver`` fixture: TLS from a throw-away CA the
simulator trusts, Basic auth, writing to the test database); receivers that misbehave on purpose
are small stdlib https servers. İYS's calls are counted in the simulator's request log, so "no
call" is what İYS saw, not what the code under test says it did.
"""

from __future__ import annotations

import json
import os
import pathlib
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from push_support import PUSH_PASSWORD, PUSH_USERNAME, throwaway_tls

from iys_provider.hooks.iys import IysHook
from iys_provider.operators.push_registration import IysPushRegistrationOperator
from iys_provider.push.registration import PushRegistration, PushRegistrationFailed, PushRegistrationRefused
from tests_support import iys_connection_json_with, sim_control

from .conftest import CONN_ID, rows

ALL = ("ARAMA", "MESAJ", "EPOSTA")
CLI = pathlib.Path(sys.executable).parent / "iys-push-registration"
REGISTRATION_ENDPOINTS = ("push_registration", "push_unregistration")


@pytest.fixture
def push_sim(sim, receiver, monkeypatch):
    """The simulator trusting the receiver's CA; the iys connection carrying the receiver's credentials."""
    sim.configure(push_ca_file=str(receiver.tls.ca_file), push_timeout_seconds=5, rate_limit_per_second=1000)
    monkeypatch.setenv(
        "AIRFLOW_CONN_IYS_DEFAULT",
        iys_connection_json_with(sim.url, push_username=PUSH_USERNAME, push_password=PUSH_PASSWORD),
    )
    sim_control(sim, "requests/reset")
    yield sim
    sim.reset()  # drops the links, so no delivery reaches a receiver of the next test


def iys_calls(sim) -> list[tuple[str, int]]:
    """(endpoint, status) of every push request İYS got since the last reset, in order."""
    return [
        (entry["endpoint"], entry["status"])
        for entry in sim_control(sim, "requests", method="GET")["requests"]
        if str(entry.get("endpoint", "")).startswith("push_")
    ]


def writes(sim) -> list[tuple[str, int]]:
    return [call for call in iys_calls(sim) if call[0] in REGISTRATION_ENDPOINTS]


def listed(sim) -> set[tuple[str, str]]:
    """(type, url) of the links İYS holds, read from the simulator's control API (the truth)."""
    return {
        (link["type"], link["url"]) for link in sim_control(sim, "push/registrations", method="GET")["registrations"]
    }


def service() -> PushRegistration:
    return PushRegistration(IysHook(iys_conn_id=CONN_ID))


class StubReceiver:
    """An https receiver that misbehaves: answers 200 without credentials, or holds every answer."""

    def __init__(self, tls, *, hold: bool = False) -> None:
        self.release = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if hold:
                    stub.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub(push_sim, receiver, tmp_path):
    """A stub receiver with a certificate of the CA the simulator trusts."""
    made = []

    def make(**options) -> StubReceiver:
        made.append(StubReceiver(receiver.tls, **options))
        return made[-1]

    yield make
    for one in made:
        one.close()


# ------------------------------------------------------------------------------------------- service


def test_registering_all_three_channels_links_the_receiver_and_iys_tests_it(push_sim, receiver, push_db):
    result = service().register(receiver.url)

    expected = {(c, f"{receiver.url}/iys-push/{CONN_ID}/{c}") for c in ALL}
    assert listed(push_sim) == expected
    assert [(o.channel, o.outcome, o.message) for o in result.channels] == [
        (c, "registered", "Bağlantı oluşturuldu") for c in ALL
    ]
    assert {(str(link.type), link.url) for link in result.links} == expected
    assert {link.status for link in result.links} == {"Bağlantı Oluşturuldu"}
    assert all(link.registered_at is not None for link in result.links)
    assert writes(push_sim) == [("push_registration", 200)] * 3
    # İYS's test record reached the package's receiver for each channel, and was not stored as a consent.
    assert sorted(
        r[0] for r in rows(push_db, "SELECT channel FROM iys.push_channels WHERE last_test_at IS NOT NULL")
    ) == sorted(ALL)
    assert rows(push_db, "SELECT count(*) FROM iys.push_inbox") == [(0,)]


def test_listing_shows_what_iys_holds(push_sim, receiver):
    assert service().list().links == []
    service().register(receiver.url, ["MESAJ"])

    result = service().list()

    assert [(str(link.type), link.url, link.status) for link in result.links] == [
        ("MESAJ", f"{receiver.url}/iys-push/{CONN_ID}/MESAJ", "Bağlantı Oluşturuldu")
    ]
    assert result.channels == []


def test_registering_again_makes_no_registration_call(push_sim, receiver):
    service().register(receiver.url)
    sim_control(push_sim, "requests/reset")

    again = service().register(receiver.url)

    assert [o.outcome for o in again.channels] == ["already_registered"] * 3
    assert iys_calls(push_sim) == [("push_registration_list", 200)]
    assert len(listed(push_sim)) == 3


def test_a_second_url_per_channel_rotates_and_a_third_is_refused_without_a_registration_call(push_sim, receiver):
    # The certificate names 127.0.0.1 and localhost: two URLs, one receiver.
    second = receiver.url.replace("127.0.0.1", "localhost")
    service().register(receiver.url, ["MESAJ"])
    assert [o.outcome for o in service().register(second, ["MESAJ"]).channels] == ["registered"]
    sim_control(push_sim, "requests/reset")

    with pytest.raises(PushRegistrationRefused, match="at most 2") as refused:
        service().register(f"{receiver.url}/third", ["MESAJ"])

    assert iys_calls(push_sim) == [("push_registration_list", 200)]
    assert receiver.url in str(refused.value) and second in str(refused.value)
    assert {url for _, url in listed(push_sim)} == {
        f"{receiver.url}/iys-push/{CONN_ID}/MESAJ",
        f"{second}/iys-push/{CONN_ID}/MESAJ",
    }


def test_http_and_missing_credentials_are_refused_before_any_iys_call(push_sim, receiver, monkeypatch):
    with pytest.raises(PushRegistrationRefused, match="H531"):
        service().register(receiver.url.replace("https://", "http://"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_IYS_DEFAULT",
        iys_connection_json_with(
            push_sim.url,
            push_credentials={"MESAJ": {"username": PUSH_USERNAME, "password": PUSH_PASSWORD}},
        ),
    )
    with pytest.raises(PushRegistrationRefused, match="no push credentials for ARAMA") as refused:
        service().register(receiver.url)

    assert "EPOSTA" in str(refused.value) and "MESAJ:" not in str(refused.value)
    assert iys_calls(push_sim) == []
    assert listed(push_sim) == set()


def test_unregistering_removes_one_link_per_call_and_an_absent_one_costs_no_call(push_sim, receiver):
    service().register(receiver.url)
    sim_control(push_sim, "requests/reset")

    result = service().unregister(receiver.url, ["MESAJ", "EPOSTA"])

    assert [(o.channel, o.outcome, o.message) for o in result.channels] == [
        ("MESAJ", "unregistered", "Bağlantı Kaldırıldı"),
        ("EPOSTA", "unregistered", "Bağlantı Kaldırıldı"),
    ]
    assert writes(push_sim) == [("push_unregistration", 200)] * 2
    assert listed(push_sim) == {("ARAMA", f"{receiver.url}/iys-push/{CONN_ID}/ARAMA")}
    sim_control(push_sim, "requests/reset")

    again = service().unregister(receiver.url, ["MESAJ"])

    assert [o.outcome for o in again.channels] == ["already_absent"]
    assert iys_calls(push_sim) == [("push_registration_list", 200)]


def test_a_receiver_that_does_not_enforce_basic_auth_gets_iyss_h530_and_the_action_stops(push_sim, stub):
    open_door = stub()

    with pytest.raises(PushRegistrationFailed) as failed:
        service().register(open_door.url, ["ARAMA", "MESAJ"])

    assert failed.value.code == "H530" and failed.value.status_code == 422
    assert failed.value.channel == "ARAMA" and failed.value.done == []
    assert "H530" in str(failed.value) and "Basic auth not enforced" in str(failed.value)
    # One refusal is enough: the second channel's would have failed the same way, and counted.
    assert writes(push_sim) == [("push_registration", 422)]
    assert listed(push_sim) == set()


def test_a_receiver_slower_than_iyss_timeout_gets_h191(push_sim, stub):
    push_sim.configure(push_timeout_seconds=0.3)
    slow = stub(hold=True)

    with pytest.raises(PushRegistrationFailed) as failed:
        service().register(slow.url, ["EPOSTA"])

    assert failed.value.code == "H191"
    assert "within İYS's 5 s" in str(failed.value)


def test_the_channels_before_iyss_refusal_are_reported_done(push_sim, receiver, tmp_path):
    service().register(receiver.url, ["ARAMA"])
    # From now on İYS trusts another CA only: the receiver's certificate fails İYS's check (H530).
    push_sim.configure(push_ca_file=str(throwaway_tls(tmp_path / "other-ca").ca_file))

    with pytest.raises(PushRegistrationFailed) as failed:
        service().register(receiver.url, ["ARAMA", "EPOSTA"])

    assert failed.value.channel == "EPOSTA" and failed.value.code == "H530"
    assert [(o.channel, o.outcome) for o in failed.value.done] == [("ARAMA", "already_registered")]


# ------------------------------------------------------------------------------------------ operator


def test_the_operator_registers_and_returns_a_small_xcom_without_credentials(push_sim, receiver):
    operator = IysPushRegistrationOperator(
        task_id="register_push", action="register", receiver_base_url=receiver.url, channels="MESAJ, EPOSTA"
    )

    xcom = operator.execute(context={})

    assert xcom["action"] == "register" and xcom["iys_conn_id"] == CONN_ID
    assert [(c["channel"], c["outcome"]) for c in xcom["channels"]] == [
        ("MESAJ", "registered"),
        ("EPOSTA", "registered"),
    ]
    assert {(link["channel"], link["url"]) for link in xcom["links"]} == listed(push_sim)
    text = json.dumps(xcom, ensure_ascii=False)
    assert PUSH_PASSWORD not in text and "username" not in text and "password" not in text
    assert len(text) < 2000

    listing = IysPushRegistrationOperator(task_id="list_push", action="list").execute(context={})
    assert {(link["channel"], link["url"]) for link in listing["links"]} == listed(push_sim)


def test_the_operator_fails_without_retries_on_a_refusal(push_sim, receiver):
    from airflow.sdk.exceptions import AirflowFailException

    operator = IysPushRegistrationOperator(
        task_id="register_push", action="register", receiver_base_url="http://push.example.com"
    )
    with pytest.raises(AirflowFailException, match="H531"):
        operator.execute(context={})
    assert iys_calls(push_sim) == []


# ----------------------------------------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, with this test's AIRFLOW_CONN_* environment."""
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_the_cli_registers_lists_and_unregisters_printing_iyss_answers(push_sim, receiver):
    registered = run_cli("register", "--conn-id", CONN_ID, "--receiver-url", receiver.url)
    assert registered.returncode == 0, registered.stderr
    for channel in ALL:
        assert f"{receiver.url}/iys-push/{CONN_ID}/{channel}" in registered.stdout
    assert registered.stdout.count("İYS: Bağlantı oluşturuldu") == 3

    listing = run_cli("list", "--conn-id", CONN_ID, "--json")
    assert listing.returncode == 0, listing.stderr
    assert {(link["channel"], link["url"]) for link in json.loads(listing.stdout)["links"]} == listed(push_sim)

    removed = run_cli("unregister", "--conn-id", CONN_ID, "--receiver-url", receiver.url, "--channel", "ARAMA")
    assert removed.returncode == 0, removed.stderr
    assert "Bağlantı Kaldırıldı" in removed.stdout
    assert {channel for channel, _ in listed(push_sim)} == {"MESAJ", "EPOSTA"}
    for run in (registered, listing, removed):
        assert PUSH_PASSWORD not in run.stdout + run.stderr


def test_the_cli_exits_non_zero_with_iyss_code_or_the_local_refusal(push_sim, stub):
    refused = run_cli("register", "--conn-id", CONN_ID, "--receiver-url", "http://push.example.com")
    assert refused.returncode == 2
    assert "H531" in refused.stderr and "nothing sent to İYS" in refused.stderr
    assert iys_calls(push_sim) == []

    failed = run_cli("register", "--conn-id", CONN_ID, "--receiver-url", stub().url, "--channel", "MESAJ")
    assert failed.returncode == 1
    assert "H530" in failed.stderr and "HTTP 422" in failed.stderr
    assert PUSH_PASSWORD not in failed.stdout + failed.stderr

    missing = run_cli("register", "--conn-id", CONN_ID)
    assert missing.returncode == 2 and "--receiver-url" in missing.stderr

    unknown = run_cli("list", "--conn-id", "iys_nobody")
    assert unknown.returncode == 2 and "iys_nobody" in unknown.stderr


def test_the_cli_keeps_stdout_for_the_json_while_the_hook_logs(push_sim, receiver, monkeypatch):
    # Without shared state the hook logs a warning on first use: it must go to stderr, not into the JSON.
    monkeypatch.setenv(
        "AIRFLOW_CONN_IYS_DEFAULT",
        iys_connection_json_with(
            push_sim.url, push_username=PUSH_USERNAME, push_password=PUSH_PASSWORD, shared_state_conn_id=""
        ),
    )

    registered = run_cli(
        "register", "--conn-id", CONN_ID, "--receiver-url", receiver.url, "--channel", "EPOSTA", "--json"
    )

    assert registered.returncode == 0, registered.stderr
    assert "No shared_state_conn_id" in registered.stderr
    answer = json.loads(registered.stdout)
    assert answer["channels"] == [
        {
            "channel": "EPOSTA",
            "url": f"{receiver.url}/iys-push/{CONN_ID}/EPOSTA",
            "outcome": "registered",
            "message": "Bağlantı oluşturuldu",
        }
    ]
