"""The simulator's push side over real HTTP: link registration with İYS's checks, and delivery.

The receivers here are tiny https servers (stdlib ``http.server`` + ``ssl``, certificates from
``throwaway_tls``) that enforce Basic auth and record what they get; the simulator verifies them
against the throw-away CA (``push_ca_file``). Nothing waits on a sleep: deliveries are awaited with
``POST /__sim/push/wait_idle`` and slow receivers block on a ``threading.Event``.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from push_support import DOCUMENTED_TEST_PAYLOAD, PUSH_PASSWORD, PUSH_USERNAME, throwaway_tls

from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE, SIM_PASSWORD, SIM_USERNAME

BRAND_PATH = f"/sps/{SIM_IYS_CODE}/brands/{SIM_BRAND_CODE}"
OTHER_BRAND = SIM_BRAND_CODE + 1
PHONE, OTHER_PHONE, EMAIL = "+905321112233", "+905321112244", "ayse@example.com"


class Receiver:
    """An https push receiver: Basic auth (unless ``enforce_auth`` is off), scripted answers, a gate."""

    def __init__(self, tls, *, enforce_auth: bool = True) -> None:
        self.enforce_auth = enforce_auth
        self.expected_auth = "Basic " + base64.b64encode(f"{PUSH_USERNAME}:{PUSH_PASSWORD}".encode()).decode()
        self.lock = threading.Lock()
        self.unauthenticated = 0
        self.received: list[tuple[str, int, dict]] = []  # (path, status answered, body) of authenticated POSTs
        self.statuses: deque[int] = deque()  # answers for the next authenticated POSTs, then 200
        self.gate: threading.Event | None = None  # when set up, authenticated POSTs wait for it
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.enforce_auth and self.headers.get("Authorization") != receiver.expected_auth:
                    with receiver.lock:
                        receiver.unauthenticated += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="iys-push"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.arrived.set()
                if receiver.gate is not None:
                    receiver.gate.wait(30)
                with receiver.lock:
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                    receiver.received.append((self.path, status, json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str = "MESAJ") -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/iys-push/iys_default/{name}"

    def bodies(self, *, without_test_payload: bool = True) -> list[dict]:
        with self.lock:
            return [
                body for _, _, body in self.received if not (without_test_payload and body == DOCUMENTED_TEST_PAYLOAD)
            ]

    def items(self) -> list[dict]:
        return [item for body in self.bodies() for item in body["list"]]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return throwaway_tls(tmp_path_factory.mktemp("push-tls"))


@pytest.fixture
def push_sim(sim, tls):
    """The shared simulator, reset, trusting the throw-away CA, quick to retry and free of the per-second limit."""
    sim.configure(
        push_ca_file=str(tls.ca_file), push_retry_seconds=0.02, push_timeout_seconds=5, rate_limit_per_second=1000
    )
    yield sim
    sim.reset()  # stops delivery to this test's receivers


@pytest.fixture
def receivers(tls):
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(tls, **options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def http(push_sim):
    with requests.Session() as session:
        token = session.post(
            f"{push_sim.url}/oauth2/token",
            data={"grant_type": "password", "username": SIM_USERNAME, "password": SIM_PASSWORD},
            timeout=10,
        ).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        yield session


def connection(url: str, consent_type: str = "MESAJ", **overrides) -> dict:
    item = {"url": url, "type": consent_type, "username": PUSH_USERNAME, "password": PUSH_PASSWORD, **overrides}
    return {key: value for key, value in item.items() if value is not None}


def register(sim, http, *connections: dict, brand_path: str = BRAND_PATH) -> requests.Response:
    return http.post(f"{sim.url}{brand_path}/push/registration", json={"connection": list(connections)}, timeout=30)


def links(sim, http, brand_path: str = BRAND_PATH) -> list[dict]:
    response = http.get(f"{sim.url}{brand_path}/push/registration", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def error_codes(response: requests.Response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


def wait_idle(sim, timeout: float = 10.0) -> dict:
    response = requests.post(f"{sim.url}/__sim/push/wait_idle", json={"timeout": timeout}, timeout=timeout + 10)
    assert response.status_code == 200, response.text
    return response.json()


def registered(sim, http, receiver: Receiver, consent_type: str = "MESAJ") -> Receiver:
    response = register(sim, http, connection(receiver.url(consent_type), consent_type))
    assert response.status_code == 200, response.text
    return receiver


# ------------------------------------------------------------------------------------ registration
@pytest.mark.parametrize(
    ("item", "code"),
    [
        ({"url": None}, "H531"),
        ({"url": "http://127.0.0.1:1/iys-push"}, "H531"),
        ({"url": "ftp://127.0.0.1/iys-push"}, "H531"),
        ({"type": None}, "H111"),
        ({"type": "SMS"}, "H117"),
        ({"username": None}, "H093"),
        ({"password": ""}, "H093"),
    ],
)
def test_registration_field_checks_answer_422_with_the_documented_code(push_sim, http, receivers, item, code):
    receiver = receivers()
    body = {**connection(receiver.url()), **item}
    response = register(push_sim, http, {key: value for key, value in body.items() if value is not None})
    assert response.status_code == 422
    assert error_codes(response) == [code]
    assert response.json()["errors"][0]["index"] == 0
    assert links(push_sim, http) == []
    assert receiver.unauthenticated == 0 and receiver.received == []  # refused before any call to the url


def test_registration_checks_run_in_iys_order(push_sim, http):
    # Everything wrong at once: the url is checked first, and each item gets its own first failure.
    response = register(
        push_sim, http, {"url": "http://x", "type": "SMS"}, {"url": "https://example.invalid/x", "type": "FAKS"}
    )
    assert response.status_code == 422
    assert [(error["code"], error["index"]) for error in response.json()["errors"]] == [("H531", 0), ("H117", 1)]


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"connection": []}', b'{"connection": {"url": "https://x"}}'])
def test_registration_without_a_json_connection_list_is_400_h014(push_sim, http, body):
    response = http.post(
        f"{push_sim.url}{BRAND_PATH}/push/registration",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert error_codes(response) == ["H014"]


@pytest.mark.parametrize(
    "faults",
    [{"push_batch_size": 0}, {"push_reorder_window": -1}, {"push_duplicate_rate": 1.5}, {"push_paused": "yes"}],
)
def test_push_fault_options_are_checked(push_sim, faults):
    response = requests.post(f"{push_sim.url}/__sim/faults", json=faults, timeout=10)
    assert response.status_code == 400
    assert next(iter(faults)) in response.json()["error"]


def test_registration_needs_a_token_and_is_counted(push_sim, receivers):
    response = requests.post(
        f"{push_sim.url}{BRAND_PATH}/push/registration",
        json={"connection": [connection(receivers().url())]},
        timeout=10,
    )
    assert response.status_code == 401
    assert error_codes(response) == ["H351"]
    assert push_sim.counters()["by_endpoint"]["push_registration"] == 1


def test_a_receiver_that_does_not_enforce_basic_auth_is_refused_with_h530(push_sim, http, receivers):
    receiver = receivers(enforce_auth=False)
    response = register(push_sim, http, connection(receiver.url()))
    assert response.status_code == 422
    assert error_codes(response) == ["H530"]
    assert links(push_sim, http) == []


def test_a_receiver_with_a_certificate_the_simulator_does_not_trust_is_refused_with_h530(push_sim, http, receivers):
    push_sim.configure(push_ca_file=None)  # the system's CAs do not know the throw-away CA
    receiver = receivers()
    response = register(push_sim, http, connection(receiver.url()))
    assert response.status_code == 422
    assert error_codes(response) == ["H530"]
    assert receiver.received == []


def test_a_receiver_refusing_the_right_credentials_is_refused_with_h530(push_sim, http, receivers):
    receiver = receivers()
    response = register(push_sim, http, connection(receiver.url(), password="not-the-password"))
    assert response.status_code == 422
    assert error_codes(response) == ["H530"]
    assert receiver.unauthenticated == 2  # the probe and the test payload with wrong credentials


def test_a_receiver_answering_after_the_timeout_is_refused_with_h191(push_sim, http, receivers):
    push_sim.configure(push_timeout_seconds=0.5)
    receiver = receivers()
    receiver.gate = threading.Event()  # never opened before the simulator gives up
    response = register(push_sim, http, connection(receiver.url()))
    assert response.status_code == 422
    assert error_codes(response) == ["H191"]
    assert response.json()["errors"][0]["message"] != "brandCode tam sayı olmalıdır."  # push's own H191
    assert receiver.arrived.is_set()
    assert links(push_sim, http) == []


def test_other_clients_are_served_while_a_receiver_is_being_checked(push_sim, http, receivers):
    push_sim.configure(push_timeout_seconds=30)
    receiver = receivers()
    receiver.gate = threading.Event()
    answers: list[requests.Response] = []
    registering = threading.Thread(target=lambda: answers.append(register(push_sim, http, connection(receiver.url()))))
    registering.start()
    try:
        assert receiver.arrived.wait(10), "the simulator never POSTed the test payload"
        # The registration is held by the receiver; the simulator still answers İYS and control calls.
        with requests.Session() as other:
            other.headers["Authorization"] = http.headers["Authorization"]
            assert other.get(f"{push_sim.url}{BRAND_PATH}/push/registration", timeout=5).json() == []
            assert other.get(f"{push_sim.url}/__sim/counters", timeout=5).status_code == 200
        assert answers == []
    finally:
        receiver.gate.set()
        registering.join(30)
    assert answers[0].status_code == 200, answers[0].text


def test_successful_registration_checks_auth_posts_the_test_payload_and_stores_the_link(push_sim, http, receivers):
    receiver = receivers()
    before = push_sim.now()
    response = register(push_sim, http, connection(receiver.url()))
    after = push_sim.now()
    assert response.status_code == 200, response.text
    assert response.json() == {"message": "Bağlantı oluşturuldu"}
    assert receiver.unauthenticated == 1  # the probe without credentials got its 401
    assert [(path, body) for path, _, body in receiver.received] == [
        ("/iys-push/iys_default/MESAJ", DOCUMENTED_TEST_PAYLOAD)
    ]
    [link] = links(push_sim, http)
    assert link["url"] == receiver.url() and link["type"] == "MESAJ"
    assert link["status"] == "Bağlantı Oluşturuldu"
    assert before <= link["registerTime"] <= after
    assert set(link) == {"url", "type", "status", "registerTime"}  # no credentials in İYS's answer


def test_two_links_per_type_then_h530_and_a_known_url_only_takes_new_credentials(push_sim, http, receivers):
    receiver = receivers()
    first, second, third = (receiver.url("MESAJ") + suffix for suffix in ("/a", "/b", "/c"))
    assert register(push_sim, http, connection(first), connection(second)).status_code == 200
    refused = register(push_sim, http, connection(third))
    assert refused.status_code == 422
    assert error_codes(refused) == ["H530"]
    # The same url and type again is not a third link.
    assert register(push_sim, http, connection(first)).status_code == 200
    # Another type has its own two.
    assert register(push_sim, http, connection(receiver.url("EPOSTA"), "EPOSTA")).status_code == 200
    assert sorted((link["type"], link["url"]) for link in links(push_sim, http)) == [
        ("EPOSTA", receiver.url("EPOSTA")),
        ("MESAJ", first),
        ("MESAJ", second),
    ]


def test_the_control_api_lists_links_without_passwords(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    [link] = requests.get(f"{push_sim.url}/__sim/push/registrations", timeout=10).json()["registrations"]
    assert (link["brandCode"], link["iysCode"], link["url"], link["username"]) == (
        SIM_BRAND_CODE,
        SIM_IYS_CODE,
        receiver.url(),
        PUSH_USERNAME,
    )
    assert PUSH_PASSWORD not in json.dumps(link)


def test_unregistration_removes_one_link_named_with_its_credentials(push_sim, http, receivers):
    receiver = receivers()
    assert (
        register(
            push_sim, http, connection(receiver.url("MESAJ")), connection(receiver.url("ARAMA"), "ARAMA")
        ).status_code
        == 200
    )
    url = f"{push_sim.url}{BRAND_PATH}/push/unregistration"
    wrong = http.post(url, json=connection(receiver.url("MESAJ"), password="guess"), timeout=10)
    unknown = http.post(url, json=connection(receiver.url("MESAJ") + "/other"), timeout=10)
    missing = http.post(url, json=connection(receiver.url("MESAJ"), username=None), timeout=10)
    assert (wrong.status_code, error_codes(wrong)) == (422, ["H530"])
    assert (unknown.status_code, error_codes(unknown)) == (422, ["H530"])
    assert (missing.status_code, error_codes(missing)) == (422, ["H093"])
    removed = http.post(url, json=connection(receiver.url("MESAJ")), timeout=10)
    assert removed.status_code == 200
    assert removed.json() == {"message": "Bağlantı Kaldırıldı"}
    assert [link["type"] for link in links(push_sim, http)] == ["ARAMA"]
    push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET", source="IYS_KISAMESAJ")
    assert wait_idle(push_sim)["idle"]
    assert receiver.bodies() == []


# ---------------------------------------------------------------------------------------- delivery
def test_a_citizen_change_is_delivered_with_iys_code_and_brand_code(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    change = push_sim.citizen_change(
        recipient=PHONE, type="MESAJ", status="RET", source="IYS_KISAMESAJ", consentDate="2026-01-02 10:00:00"
    )
    assert wait_idle(push_sim) == {"idle": True, "queued": 0}
    assert receiver.bodies() == [
        {
            "list": [
                {
                    "iysCode": SIM_IYS_CODE,
                    "brandCode": SIM_BRAND_CODE,
                    "consentDate": "2026-01-02 10:00:00",
                    "creationDate": change["creationDate"],
                    "source": "IYS_KISAMESAJ",
                    "recipient": PHONE,
                    "recipientType": "BIREYSEL",
                    "status": "RET",
                    "type": "MESAJ",
                    "transactionId": change["transactionId"],
                }
            ]
        }
    ]
    [delivery] = requests.get(f"{push_sim.url}/__sim/push/deliveries", timeout=10).json()["deliveries"]
    assert delivery["transactionIds"] == [change["transactionId"]]
    assert (delivery["url"], delivery["status"], delivery["attempt"], delivery["duplicate"]) == (
        receiver.url(),
        200,
        1,
        False,
    )
    assert delivery["sent_at"] <= delivery["answered_at"]


def test_injected_iys_movements_are_delivered_and_hs_movements_never(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    injected = push_sim.inject_events(
        [
            {"recipient": PHONE, "type": "MESAJ", "status": "RET", "source": "IYS_WEB"},
            {"recipient": OTHER_PHONE, "type": "MESAJ", "status": "ONAY", "source": "HS_WEB", "stream": "HS"},
            {"recipient": OTHER_PHONE, "type": "MESAJ", "status": "ONAY", "source": "HS_MESAJ", "stream": "IYS"},
        ]
    )
    # A brand's own write through the API is an HS movement too.
    write = http.post(
        f"{push_sim.url}{BRAND_PATH}/consents",
        json={
            "consentDate": push_sim.now(),
            "source": "HS_WEB",
            "recipient": "+905321112255",
            "recipientType": "BIREYSEL",
            "status": "ONAY",
            "type": "MESAJ",
        },
        timeout=10,
    )
    assert write.status_code == 200, write.text
    assert wait_idle(push_sim)["idle"]
    assert [item["transactionId"] for item in receiver.items()] == [injected["events"][0]["transactionId"]]


def test_a_failed_delivery_is_sent_again_until_answered_2xx(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    receiver.statuses.extend([500, 503])
    change = push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET")
    assert wait_idle(push_sim)["idle"]
    with receiver.lock:
        answered = [(status, body["list"][0]["transactionId"]) for _, status, body in receiver.received[1:]]
    assert answered == [(500, change["transactionId"]), (503, change["transactionId"]), (200, change["transactionId"])]
    attempts = [(entry["attempt"], entry["status"]) for entry in push_sim.push_deliveries()]
    assert attempts == [(1, 500), (2, 503), (3, 200)]


def test_an_unreachable_receiver_keeps_its_movements_queued(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    receiver.close()  # the brand's receiver is down
    push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET")
    assert wait_idle(push_sim, timeout=0.5) == {"idle": False, "queued": 1}
    errors = {entry["error"] for entry in push_sim.push_deliveries()}
    assert errors and None not in errors


def test_duplicate_fault_delivers_each_list_twice(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    push_sim.set_faults(push_duplicate_rate=1.0)
    change = push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET")
    assert wait_idle(push_sim)["idle"]
    assert [item["transactionId"] for item in receiver.items()] == [change["transactionId"]] * 2
    assert [entry["duplicate"] for entry in push_sim.push_deliveries()] == [False, True]


def queue_while_paused(sim, count: int) -> list[str]:
    sim.set_faults(push_paused=True)
    injected = sim.inject_events(
        [
            {"recipient": f"+90532111{number:04d}", "type": "MESAJ", "status": "RET", "source": "IYS_WEB"}
            for number in range(count)
        ]
    )
    return [event["transactionId"] for event in injected["events"]]


def test_paused_delivery_queues_and_sends_nothing_until_resumed(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    queued = queue_while_paused(push_sim, 3)
    assert wait_idle(push_sim, timeout=0.3) == {"idle": False, "queued": 3}
    assert receiver.bodies() == []
    push_sim.set_faults(push_paused=False)
    assert wait_idle(push_sim)["idle"]
    assert [item["transactionId"] for item in receiver.items()] == queued  # in order, one per list
    assert [len(body["list"]) for body in receiver.bodies()] == [1, 1, 1]


def test_batch_size_puts_up_to_that_many_movements_in_a_list(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    queued = queue_while_paused(push_sim, 5)
    push_sim.set_faults(push_batch_size=2, push_paused=False)
    assert wait_idle(push_sim)["idle"]
    assert [[item["transactionId"] for item in body["list"]] for body in receiver.bodies()] == [
        queued[0:2],
        queued[2:4],
        queued[4:5],
    ]


def test_reorder_window_sends_queued_movements_out_of_order(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    queued = queue_while_paused(push_sim, 8)
    push_sim.set_faults(push_reorder_window=8, push_paused=False)
    assert wait_idle(push_sim)["idle"]
    delivered = [item["transactionId"] for item in receiver.items()]
    assert sorted(delivered) == sorted(queued)
    assert delivered != queued  # the shuffle is drawn from the simulator's seed, so this is stable


def test_movements_of_other_brands_and_types_are_not_delivered(push_sim, http, receivers):
    push_sim.configure(brand_codes=[SIM_BRAND_CODE, OTHER_BRAND])
    receiver = registered(push_sim, http, receivers())
    push_sim.citizen_change(recipient=EMAIL, type="EPOSTA", status="RET")
    push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET", brandCode=OTHER_BRAND)
    wanted = push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET")
    assert wait_idle(push_sim)["idle"]
    assert [(item["brandCode"], item["transactionId"]) for item in receiver.items()] == [
        (SIM_BRAND_CODE, wanted["transactionId"])
    ]


def test_each_link_of_a_type_gets_the_movement(push_sim, http, receivers):
    first, second = receivers(), receivers()
    assert register(push_sim, http, connection(first.url()), connection(second.url())).status_code == 200
    change = push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET")
    assert wait_idle(push_sim)["idle"]
    assert [item["transactionId"] for item in first.items()] == [change["transactionId"]]
    assert [item["transactionId"] for item in second.items()] == [change["transactionId"]]


def test_reset_forgets_links_queue_and_log(push_sim, http, receivers):
    receiver = registered(push_sim, http, receivers())
    queue_while_paused(push_sim, 2)
    push_sim.set_faults(push_paused=False)
    assert wait_idle(push_sim)["idle"]
    queue_while_paused(push_sim, 1)
    requests.post(f"{push_sim.url}/__sim/reset", json={"keep_config": True}, timeout=10).raise_for_status()
    assert push_sim.push_registrations() == []
    assert push_sim.push_deliveries() == []
    assert wait_idle(push_sim, timeout=1) == {"idle": True, "queued": 0}
    push_sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET")
    assert wait_idle(push_sim)["idle"]
    assert len(receiver.items()) == 2  # only the two delivered before the reset
