"""The İYS hook's HTTP session: one ``requests.Session`` per hook, configured from the connection.

İYS whitelists source IPs, so its traffic usually leaves through a fixed egress proxy. The
session applies the connection's transport settings the way the HTTP provider's ``http``
connection documents them: the base URL from host, schema and port (its scheme picks the
adapter), the ``proxies`` extra, TLS verification (``verify_ssl``), and a TCP keep-alive adapter
with HttpHook's keep-alive defaults. It differs from ``HttpHook.run()`` on purpose:

* One session per hook, built once from the settings the hook already read: ``run()`` builds a
  new session and looks the connection up again for every request.
* Only the transport extras (:data:`TRANSPORT_EXTRAS`) shape the session: HttpHook would send
  every other extra (``iys_code``, ``brand_code``, ``shared_state_conn_id`` …) as an HTTP header.
* No Basic auth (İYS takes a bearer token) and no ``check_response``: the hook's own request
  loop keeps ``Retry-After``, the error types, the rate limiter and the token logic.

``requests`` reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (``trust_env``); the
connection's ``proxies`` extra takes precedence over them, as in ``HttpHook.run_and_check``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from airflow.sdk.log import mask_secret
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

from iys_provider.exceptions import IysError

if TYPE_CHECKING:
    from iys_provider.hooks.settings import IysConnectionSettings

#: The connection extras that shape the session; every other extra stays on the worker.
TRANSPORT_EXTRAS = ("proxies", "verify_ssl")
HEADERS = {"Accept": "application/json", "User-Agent": "iys-airflow-provider"}


class IysSession(requests.Session):
    """A ``requests.Session`` whose own ``proxies`` win over the proxy environment variables.

    Plain ``requests`` lets ``HTTPS_PROXY`` override ``Session.proxies``; here the connection's
    ``proxies`` extra wins, and the environment fills only the schemes it leaves out.
    """

    def merge_environment_settings(self, url, proxies, stream, verify, cert) -> dict[str, Any]:
        return super().merge_environment_settings(url, {**self.proxies, **(proxies or {})}, stream, verify, cert)


def open_session(conn_id: str, settings: IysConnectionSettings) -> requests.Session:
    """One keep-alive session for the İYS connection ``conn_id``: its proxies, TLS verification and base URL."""
    scheme = urlsplit(settings.base_url).scheme
    if scheme not in ("http", "https"):
        raise IysError(f"Connection {conn_id!r}: the base URL {settings.base_url!r} needs the scheme http or https.")
    proxies = dict(settings.proxies or {})
    for proxy in proxies.values():
        if password := urlsplit(proxy).password:
            mask_secret(password)
    session = IysSession()
    session.proxies = proxies
    session.verify = settings.verify_ssl
    session.mount(f"{scheme}://", _keep_alive_adapter())
    session.headers.update(HEADERS)
    return session


#: Connections kept per host: at least the most status calls one task keeps in flight.
POOL_MAXSIZE = 16


def _keep_alive_adapter() -> TCPKeepAliveAdapter:
    # HttpHook's keep-alive defaults; a pool for every status call a batch keeps in flight (up to
    # 2 × request_concurrency, 8 by default: scan_ledger.batch_request_concurrency), so none opens
    # a fresh TLS connection and discards it with a warning; and no urllib3 retries: the hook's own
    # retry loop decides.
    return TCPKeepAliveAdapter(
        idle=120, count=20, interval=30, pool_connections=2, pool_maxsize=POOL_MAXSIZE, max_retries=0
    )
