"""IysHook without a network: construction, connection lookup, argument guards and the retry policy.

Everything that talks to the İYS simulator or Postgres is in tests/integration/hooks/test_iys.py.
"""

from __future__ import annotations

import pytest
import requests

from iys_provider.exceptions import IysApiError, IysAuthError, IysTokenBlockedError
from iys_provider.hooks.base import RequestStats, _is_retryable, _is_transient_token_failure
from iys_provider.hooks.iys import IysHook
from iys_provider.models import Consent, ConsentStatus, ConsentType
from tests_support import iys_connection_json_with


def test_init_does_no_io():
    hook = IysHook("no_such_connection", brand_code=5, max_attempts=2)
    assert hook.iys_conn_id == "no_such_connection"
    assert not {"connection", "settings", "session", "shared_state"} & hook.__dict__.keys()


def test_settings_are_read_once_from_the_connection_with_the_brand_override(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with("http://iys.invalid"))
    hook = IysHook(brand_code=123)
    assert hook.settings is hook.settings
    assert (hook.iys_code, hook.brand_code) == (700001, 123)
    assert hook.settings.base_url == "http://iys.invalid"


def test_missing_codes_give_a_clear_error(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_IYS_DEFAULT", '{"conn_type": "iys", "host": "http://x", "login": "u", "password": "p"}'
    )
    with pytest.raises(Exception, match="iys_code, brand_code"):
        IysHook().get_brands()


def test_connection_from_env_json_resolves_to_the_iys_hook(monkeypatch):
    from airflow.sdk import BaseHook

    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with("http://iys.invalid"))
    conn = BaseHook.get_connection("iys_default")
    assert conn.conn_type == "iys"
    assert isinstance(conn.get_hook(), IysHook)


def consents(*recipients: str) -> list[Consent]:
    return [Consent(recipient=r, type=ConsentType.MESAJ, status=ConsentStatus.ONAY) for r in recipients]


def test_batch_guards_size_and_duplicates():
    hook = IysHook()
    with pytest.raises(ValueError, match="at most 1000"):
        hook.submit_consent_batch(consents(*(f"+90532{i:07d}" for i in range(1001))))
    with pytest.raises(ValueError, match="H194"):
        hook.submit_consent_batch(consents("+905321234567", "+905321234567"))
    with pytest.raises(ValueError, match="at least one"):
        hook.submit_consent_batch([])


@pytest.mark.parametrize("limit", [0, 1001])
def test_change_feed_limit_is_checked_before_any_call(limit):
    with pytest.raises(ValueError, match="limit must be between 1 and 1000"):
        next(IysHook().iter_change_pages("IYS", limit=limit))


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (requests.ConnectionError(), True),
        (requests.Timeout(), True),
        (requests.exceptions.ChunkedEncodingError(), True),
        (IysApiError("busy", status_code=429, code="H124", endpoint="brands"), True),
        (IysApiError("down", status_code=503, endpoint="brands"), True),
        (IysApiError("down", status_code=503, endpoint="token"), False),
        (IysApiError("same", status_code=400, code="H174", endpoint="add_consent"), False),
        (IysApiError("quota", status_code=429, code="H086", endpoint="consent_status"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_failures_are_retried(error, retryable):
    assert _is_retryable(error) is retryable


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (IysApiError("token request failed: ConnectionError", endpoint="token"), True),
        (IysApiError("down", status_code=503, code="H192", endpoint="token"), True),
        (IysAuthError("refused", status_code=401, endpoint="token"), False),
        (IysApiError("bad", status_code=400, code="H001", endpoint="token"), False),
        (IysTokenBlockedError("H084"), False),
    ],
)
def test_only_transport_and_5xx_token_failures_are_tried_again(error, transient):
    assert _is_transient_token_failure(error) is transient


def test_request_stats_count_statuses_and_rate_limits():
    stats = RequestStats()
    for status in (200, 429, 429, 503):
        stats.count(status)
    stats.count_retry()
    assert (stats.requests, stats.rate_limited, stats.retries) == (4, 2, 1)
    assert stats.by_status == {200: 1, 429: 2, 503: 1}


def test_a_token_call_at_the_per_second_limit_is_tried_again_but_h084_is_final():
    from iys_provider.exceptions import IysApiError, IysAuthError
    from iys_provider.hooks.base import _is_transient_token_failure

    assert _is_transient_token_failure(IysApiError("busy", status_code=429, code="H124", endpoint="token"))
    assert _is_transient_token_failure(IysApiError("down", status_code=503, code="H192", endpoint="token"))
    assert not _is_transient_token_failure(IysApiError("hourly", status_code=429, code="H084", endpoint="token"))
    assert not _is_transient_token_failure(IysAuthError("bad", status_code=400, endpoint="token"))
