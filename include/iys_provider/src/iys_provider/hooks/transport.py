"""The İYS hook's HTTP session, built by the HTTP provider's :class:`HttpHook`.

İYS whitelists source IPs, so its traffic usually leaves through a fixed egress proxy. The
session comes from ``apache-airflow-providers-http``: :class:`HttpHook` parses the base URL,
applies ``proxies`` and TLS verification (``verify_ssl``) and mounts its TCP keep-alive adapter,
exactly as for an ``http`` connection. Three things differ from ``HttpHook.run()``, on purpose:

* One session per hook, built once from the settings the hook already read: ``run()`` builds a
  new session and looks the connection up again for every request.
* HttpHook sends every connection extra it does not know as an HTTP header; it is handed only
  the transport extras (:data:`TRANSPORT_EXTRAS`), so ``iys_code``, ``brand_code``,
  ``shared_state_conn_id`` … never leave the worker.
* No Basic auth (İYS takes a bearer token) and no ``check_response``: the hook's own request
  loop keeps ``Retry-After``, the error types, the rate limiter and the token logic.

``requests`` reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` (``trust_env``); the
connection's ``proxies`` extra takes precedence over them, as in ``HttpHook.run_and_check``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

# Imported with the hook, not on first use: the first session is built inside ``_send``, after
# its rate-limiter slot is reserved, and a slow import there bunches the requests that follow.
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk import Connection
from airflow.sdk.log import mask_secret
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

if TYPE_CHECKING:
    from iys_provider.hooks.settings import IysConnectionSettings

#: The only extras HttpHook sees: it would send any other one as an HTTP header.
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
    """One keep-alive session for the İYS connection ``conn_id``, configured by HttpHook."""
    transport_extra = {
        name: getattr(settings, name) for name in TRANSPORT_EXTRAS if getattr(settings, name) is not None
    }
    for proxy in (transport_extra.get("proxies") or {}).values():
        if password := urlsplit(proxy).password:
            mask_secret(password)
    view = Connection(conn_id=conn_id, conn_type="http", host=settings.base_url, extra=json.dumps(transport_extra))
    http = HttpHook(method="GET", http_conn_id=conn_id, adapter=_keep_alive_adapter())
    http._set_base_url(view)
    session = http._configure_session_from_extra(IysSession(), view, extra_options={})
    session = http._configure_session_from_mount_adapters(session)
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
