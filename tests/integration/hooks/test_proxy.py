"""İYS requests through a real HTTP forward proxy on localhost, in front of the simulator.

The proxy forwards absolute-URI requests (the simulator speaks plain HTTP), records each one with
its headers, and answers CONNECT with 502 after recording it (enough to see where an https
request goes). It also shows what the simulator cannot: the headers the hook sends.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests
from incremental_support import ALICE, BOB, add_update, make_feed_visible, pull, push

from iys_provider.hooks.iys import IysHook
from iys_provider.models import ConsentType
from tests_support import SIM_PASSWORD, iys_connection_json_with

PHONE = "+905321234567"
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class ForwardProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # (method, absolute URI, headers)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def iys_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """Requests to İYS endpoints: the simulator's control API (``/__sim/``) left out."""
        with self.lock:
            return [seen for seen in self.seen if not urlsplit(seen[1]).path.startswith("/__sim/")]


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive to the client, as a real proxy
    server: ForwardProxy

    def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's signature)
        pass

    def _record(self) -> None:
        with self.server.lock:
            self.server.seen.append((self.command, self.path, dict(self.headers.items())))

    def do_CONNECT(self) -> None:
        self._record()
        self.send_error(502, "no tunnelling in this test proxy")

    def _forward(self) -> None:
        self._record()
        target = urlsplit(self.path)
        if target.scheme != "http":
            self.send_error(400, "absolute http:// URI expected")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"proxy-authorization"}}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body or None, headers=headers)
            answer = upstream.getresponse()
            payload = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


@pytest.fixture
def proxy(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    server = ForwardProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def sim_direct(sim, path: str, payload: dict | None = None, method: str = "POST") -> dict:
    """The simulator's control API, never through a proxy of the environment."""
    with requests.Session() as direct:
        direct.trust_env = False
        response = direct.request(method, f"{sim.url}/__sim/{path}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json()


def sim_requests(sim) -> int:
    return sim_direct(sim, "counters", method="GET")["requests"]


def use_iys(sim) -> IysHook:
    """A token, brands, a multi-status and a single-status call: every kind of İYS request."""
    sim_direct(sim, "seed", {"consents": [{"recipient": PHONE, "type": "MESAJ", "status": "ONAY"}]})
    hook = IysHook()
    hook.get_brands()
    assert hook.get_onay_recipients([PHONE], ConsentType.MESAJ) == {PHONE}
    hook.get_consent_status(PHONE, ConsentType.MESAJ)
    hook.close()
    return hook


def assert_all_through(proxy, sim) -> list[tuple[str, str, dict[str, str]]]:
    seen = proxy.iys_requests()
    assert len(seen) == sim_requests(sim) >= 4
    assert any(uri.endswith("/oauth2/token") for _, uri, _ in seen)
    assert any("/status/" in uri for _, uri, _ in seen)
    return seen


def test_with_the_proxies_extra_every_iys_request_goes_through_the_proxy(sim, proxy, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, proxies={"http": proxy.url}))
    use_iys(sim)
    assert_all_through(proxy, sim)


def test_no_extra_and_no_credential_is_sent_as_a_header(sim, proxy, monkeypatch):
    conn = iys_connection_json_with(sim.url, proxies={"http": proxy.url}, timeout=20, auth_block_seconds=60)
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", conn)
    hook = use_iys(sim)
    extras = {name.lower() for name in hook.connection.extra_dejson} | {"login", "password"}
    extras |= {name.replace("_", "-") for name in extras}
    for method, uri, headers in assert_all_through(proxy, sim):
        assert not extras & {name.lower() for name in headers}, (method, uri, headers)
        assert not any(SIM_PASSWORD in value for value in headers.values()), (method, uri)
        assert not headers.get("Authorization", "Bearer").startswith("Basic"), (method, uri)


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
def test_with_the_proxy_environment_every_iys_request_goes_through_the_proxy(sim, proxy, monkeypatch, variable):
    monkeypatch.setenv(variable, proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    use_iys(sim)
    assert_all_through(proxy, sim)


def test_the_connection_proxy_wins_over_the_environment(sim, proxy, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # discard port: nothing answers there
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, proxies={"http": proxy.url}))
    use_iys(sim)
    assert_all_through(proxy, sim)


def test_https_proxy_carries_https_requests_as_a_connect_tunnel(proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with("https://api.iys.invalid"))
    hook = IysHook()
    with pytest.raises(requests.exceptions.ProxyError):
        hook.session.get(f"{hook.settings.base_url}/sps/1/brands", timeout=10)
    assert [(method, uri) for method, uri, _ in proxy.seen] == [("CONNECT", "api.iys.invalid:443")]


@pytest.mark.parametrize("no_proxy", [None, "127.0.0.1"])
def test_without_a_proxy_for_iys_no_request_goes_through_one(sim, proxy, monkeypatch, no_proxy):
    if no_proxy:  # a proxy in the environment, but İYS's host is exempt
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", no_proxy)
    use_iys(sim)
    assert sim_requests(sim) >= 4
    assert proxy.iys_requests() == []


def test_a_sync_cycle_through_the_proxy(proxy, monkeypatch, request):
    """tests/integration/conftest.py's initial sync (``synced``), a change feed pull and an opt-out push."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    sim = request.getfixturevalue("synced")
    pg = request.getfixturevalue("pg")
    sim_direct(sim, "citizen_change", {"recipient": BOB, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB_YENI"})
    make_feed_visible(sim)
    assert pull("IYS")["applied"] == 1
    assert push_after(pg, ALICE, "RET")["sent"] == 1
    counters = sim_direct(sim, "counters", method="GET")
    assert len(proxy.iys_requests()) == counters["requests"] == sum(counters["responses_by_status"].values())
    assert {"token", "multi_status", "changes"} <= counters["by_endpoint"].keys() and counters["writes"] == 1
    assert counters["tokens_issued"] == 1


def push_after(pg, recipient: str, status: str) -> dict:
    add_update(pg, recipient, status)
    return push()
