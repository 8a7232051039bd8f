"""The hook's HTTP session, built from the connection: proxies, TLS verification, headers, keep-alive; no network.

Requests through a real forwarding proxy are in tests/integration/hooks/test_proxy.py.
"""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection
from requests.adapters import HTTPAdapter
from requests.models import DEFAULT_REDIRECT_LIMIT
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

from iys_provider.exceptions import IysError
from iys_provider.hooks import transport
from iys_provider.hooks.iys import IysHook
from iys_provider.hooks.settings import IysConnectionSettings
from tests_support import iys_connection_json_with

IYS_URL = "https://api.iys.org.tr/sps/700001/brands"
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def hook(monkeypatch, url: str = "https://api.iys.org.tr", **extra) -> IysHook:
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(url, **extra))
    return IysHook()


def proxy_for(session, url: str = IYS_URL) -> str | None:
    """The proxy ``requests`` picks for ``url``, environment included (what Session.request does)."""
    proxies = session.merge_environment_settings(url, {}, None, None, None)["proxies"]
    return proxies.get("https" if url.startswith("https") else "http")


def test_one_keep_alive_session_per_hook_with_only_our_headers_and_no_basic_auth(monkeypatch):
    iys = hook(monkeypatch, proxies={"https": "http://proxy:3128"})
    session = iys.session
    assert session is iys.get_conn() is iys.session
    assert isinstance(session, transport.IysSession)
    adapter = session.get_adapter(IYS_URL)
    assert isinstance(adapter, TCPKeepAliveAdapter)
    assert adapter.max_retries.total == 0  # the hook's own loop retries
    assert session.auth is None  # HttpHook would send login/password as Basic auth
    assert session.headers["Accept"] == "application/json"
    extras = json.loads(iys.connection.extra)
    headers = {name.lower() for name in session.headers}
    assert not headers & {name.lower() for name in extras}  # HttpHook sends unknown extras as headers


def test_tls_verification_stays_on_unless_turned_off(monkeypatch):
    assert hook(monkeypatch, verify_ssl=None).session.verify is True
    assert hook(monkeypatch, verify_ssl=False).session.verify is False


@pytest.mark.parametrize(("stored", "verify"), [("false", False), ("no", False), ("0", False), ("true", True)])
def test_the_verify_ssl_extra_sets_the_session_verification(monkeypatch, stored, verify):
    assert hook(monkeypatch, verify_ssl=stored).session.verify is verify


def test_the_session_keeps_the_http_connection_defaults(monkeypatch):
    """What an ``http`` connection without those extras gets: no streaming, no client cert, the environment read."""
    session = hook(monkeypatch).session
    assert (session.stream, session.cert, session.trust_env) == (False, None, True)
    assert session.max_redirects == DEFAULT_REDIRECT_LIMIT


def test_host_schema_and_port_make_the_base_url_whose_scheme_gets_the_keep_alive_adapter(monkeypatch):
    conn = json.loads(iys_connection_json_with("iys.local"))
    conn.update(schema="http", port=8080)
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", json.dumps(conn))
    iys = IysHook()
    assert iys.settings.base_url == "http://iys.local:8080"
    assert isinstance(iys.session.get_adapter("http://iys.local:8080/sps"), TCPKeepAliveAdapter)
    https_adapter = iys.session.get_adapter(IYS_URL)
    assert type(https_adapter) is HTTPAdapter  # requests' default: no İYS traffic takes that scheme


def test_a_base_url_that_is_not_http_is_refused_naming_the_connection(monkeypatch):
    with pytest.raises(IysError, match="iys_default.*ftp://iys.local.*http or https"):
        _ = hook(monkeypatch, url="ftp://iys.local").session


def test_a_single_proxy_url_serves_both_schemes(monkeypatch):
    session = hook(monkeypatch, proxies="http://egress:3128").session
    assert session.proxies == {"http": "http://egress:3128", "https": "http://egress:3128"}
    assert proxy_for(session) == proxy_for(session, "http://iys.local/sps") == "http://egress:3128"


def test_without_a_proxy_requests_go_direct(monkeypatch):
    session = hook(monkeypatch).session
    assert session.proxies == {}
    assert proxy_for(session) is None


def test_the_proxies_extra_is_used(monkeypatch):
    session = hook(monkeypatch, proxies={"https": "http://egress:3128"}).session
    assert proxy_for(session) == "http://egress:3128"


@pytest.mark.parametrize(("variable", "url"), [("HTTPS_PROXY", IYS_URL), ("http_proxy", "http://iys.local/sps")])
def test_the_proxy_environment_is_honoured(monkeypatch, variable, url):
    monkeypatch.setenv(variable, "http://env-proxy:8080")
    assert proxy_for(hook(monkeypatch).session, url) == "http://env-proxy:8080"


def test_no_proxy_bypasses_the_environment_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:8080")
    monkeypatch.setenv("NO_PROXY", "api.iys.org.tr")
    assert proxy_for(hook(monkeypatch).session) is None


def test_the_connection_proxy_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:8080")
    monkeypatch.setenv("HTTP_PROXY", "http://env-proxy:8080")
    session = hook(monkeypatch, proxies={"https": "http://egress:3128"}).session
    assert proxy_for(session) == "http://egress:3128"
    assert proxy_for(session, "http://iys.local/sps") == "http://env-proxy:8080"  # a scheme it leaves out
    assert session.proxies == {"https": "http://egress:3128"}  # resolving did not write the environment in


def test_proxy_credentials_are_masked(monkeypatch):
    masked = []
    monkeypatch.setattr(transport, "mask_secret", masked.append)
    assert hook(monkeypatch, proxies={"https": "http://user:pr0xy-pass@egress:3128"}).session.proxies
    assert masked == ["pr0xy-pass"]


@pytest.mark.parametrize(
    ("stored", "proxies"),
    [
        ({"https": "http://egress:3128"}, {"https": "http://egress:3128"}),
        ('{"https": "http://egress:3128"}', {"https": "http://egress:3128"}),
        ("http://egress:3128", {"http": "http://egress:3128", "https": "http://egress:3128"}),
        ({}, None),
        ("", None),
        (None, None),
    ],
)
def test_the_proxies_extra_takes_an_object_its_json_or_one_url(stored, proxies):
    conn = Connection(
        conn_id="iys_test",
        conn_type="iys",
        login="u",
        password="p",
        extra=json.dumps({"iys_code": 1, "brand_code": 1, "proxies": stored}),
    )
    assert IysConnectionSettings.from_connection(conn).proxies == proxies


def test_an_invalid_proxies_extra_names_the_extra_but_not_its_value():
    conn = Connection(
        conn_id="iys_test",
        conn_type="iys",
        login="u",
        password="p",
        extra=json.dumps({"iys_code": 1, "brand_code": 1, "proxies": {"https": ["http://user:secret@egress"]}}),
    )
    with pytest.raises(IysError, match="proxies") as raised:
        IysConnectionSettings.from_connection(conn)
    assert "secret" not in str(raised.value)
    assert "secret" not in repr(IysConnectionSettings.model_construct(proxies={"https": "http://u:secret@p"}))
