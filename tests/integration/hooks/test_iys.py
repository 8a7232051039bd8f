"""IysHook against the İYS simulator over real HTTP, with the shared state in real Postgres."""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime, timedelta

import pytest
import requests

from iys_provider.exceptions import (
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysTokenBlockedError,
)
from iys_provider.hooks.iys import IysHook
from iys_provider.models import (
    IYS_TIMEZONE,
    BatchItemStatus,
    ChangeStream,
    Consent,
    ConsentSource,
    ConsentStatus,
    ConsentType,
    format_iys_datetime,
)

PHONE = "+905321234567"
OTHER_PHONE = "+905421112233"


def control(sim, path: str, payload: dict | None = None, method: str = "POST"):
    response = requests.request(method, f"{sim.url}/__sim/{path}", json=payload, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


def counters(sim) -> dict:
    return control(sim, "counters", method="GET")


def seed(sim, *consents: dict) -> None:
    control(sim, "seed", {"consents": list(consents)})


def iys_now() -> datetime:
    return datetime.now(IYS_TIMEZONE).replace(microsecond=0)


def consent(recipient=PHONE, status=ConsentStatus.ONAY, *, type_=ConsentType.MESAJ, when=None) -> Consent:
    return Consent(
        recipient=recipient,
        type=type_,
        status=status,
        source=ConsentSource.HS_WEB,
        consent_date=when or iys_now() - timedelta(minutes=5),
    )


# --------------------------------------------------------------------------- connection


def test_test_connection_gets_a_token_and_lists_brands(sim):
    ok, message = IysHook().test_connection()
    assert ok, message
    assert "700001" in message
    assert counters(sim)["tokens_issued"] == 1


def test_test_connection_reports_a_brand_the_account_does_not_hold(sim):
    ok, message = IysHook(brand_code=123).test_connection()
    assert not ok
    assert "brand code 123" in message


def test_wrong_password_is_an_auth_error_that_names_the_connection(sim, monkeypatch):
    from tests_support import iys_connection_json_with

    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, password="wrong"))
    with pytest.raises(IysAuthError, match="iys_default"):
        IysHook().get_brands()
    assert counters(sim)["token_requests"] == 1  # an auth failure is not retried


# --------------------------------------------------------------------------- tokens


def test_token_is_reused_across_hook_instances(sim):
    for _ in range(3):
        hook = IysHook()
        hook.get_brands()
        hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
    assert counters(sim)["tokens_issued"] == 1


def _brands_in_subprocess(conn_json: str, pg_conn_json: str, queue) -> None:
    os.environ["AIRFLOW_CONN_IYS_DEFAULT"] = conn_json
    os.environ["AIRFLOW_CONN_IYS_POSTGRES"] = pg_conn_json
    try:
        hook = IysHook()
        for _ in range(3):
            hook.get_brands()
        queue.put(("ok", hook.stats.token_requests))
    except Exception as exc:  # report to the parent instead of dying silently
        queue.put(("error", repr(exc)))


def test_token_is_shared_across_processes_with_a_single_flight_refresh(sim):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_brands_in_subprocess,
            args=(os.environ["AIRFLOW_CONN_IYS_DEFAULT"], os.environ["AIRFLOW_CONN_IYS_POSTGRES"], queue),
        )
        for _ in range(6)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(status == "ok" for status, _ in results), results
    assert sum(n for _, n in results) == 1
    assert counters(sim)["tokens_issued"] == 1


def test_expired_access_token_is_refreshed_with_the_refresh_grant(sim, pg):
    hook = IysHook()
    hook.get_brands()
    # İYS's clock moves past the access token's 2 h lifetime; the hook learns it from the 401.
    control(sim, "clock", {"advance_seconds": 7200 + 60})
    hook.get_brands()
    grants = [row[0] for row in pg.execute("SELECT grant_type FROM iys.token_requests ORDER BY id")]
    assert grants == ["password", "refresh_token"]


def test_token_near_expiry_is_refreshed_before_use(sim, pg):
    IysHook().get_brands()
    pg.execute("UPDATE iys.api_tokens SET access_expires_at = now() + interval '1 minute'")
    from iys_provider.hooks import base

    base._process_tokens.clear()
    IysHook().get_brands()
    grants = [row[0] for row in pg.execute("SELECT grant_type FROM iys.token_requests ORDER BY id")]
    assert grants == ["password", "refresh_token"]
    assert counters(sim).get("responses_by_status", {}).get("401", 0) == 0


def test_revoked_tokens_fall_back_to_the_password_grant(sim, pg):
    hook = IysHook()
    hook.get_brands()
    control(sim, "revoke_tokens", {"refresh": True})
    assert hook.get_brands()
    grants = [row[0] for row in pg.execute("SELECT grant_type FROM iys.token_requests ORDER BY id")]
    assert grants == ["password", "refresh_token", "password"]


@pytest.fixture
def ip_blocks_cleared(pg):
    """The shared-state reset between tests keeps iys.ip_blocks: a block must not outlive its test."""
    pg.execute("DELETE FROM iys.ip_blocks")
    yield
    pg.execute("DELETE FROM iys.ip_blocks")


def test_h084_block_is_shared_persisted_and_makes_no_token_call_until_it_ends(sim, pg, ip_blocks_cleared):
    control(sim, "config", {"token_limit_per_hour": 2})
    IysHook().get_brands()  # token request 1 (password)
    control(sim, "revoke_tokens", {"refresh": True})

    # 401 -> refresh grant refused (2) -> password grant (3): over İYS's limit, H084.
    with pytest.raises(IysTokenBlockedError, match="H084"):
        IysHook().get_brands()
    token_calls = counters(sim)["token_requests"]

    # Another task, another hook, a fresh process cache: still no call to the token endpoint.
    from iys_provider.hooks import base

    base._process_tokens.clear()
    for _ in range(3):
        with pytest.raises(IysTokenBlockedError, match="(?i)no token call"):
            IysHook().get_brands()
    assert counters(sim)["token_requests"] == token_calls
    # İYS blocks the client IP, so the block is the IP's (the API host's), not the account's.
    (blocked_until,) = pg.execute("SELECT blocked_until FROM iys.ip_blocks").fetchone()
    assert blocked_until - datetime.now(blocked_until.tzinfo) > timedelta(minutes=59)

    # The hour passes (simulated on both sides): the next run succeeds.
    control(sim, "clock", {"advance_seconds": 3601})
    pg.execute("UPDATE iys.ip_blocks SET blocked_until = now() - interval '1 second'")
    assert IysHook().get_brands()


def test_hourly_token_budget_is_never_exceeded(sim, monkeypatch):
    from tests_support import iys_connection_json_with

    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, auth_requests_per_hour=2))
    hook = IysHook()
    hook.get_brands()  # token request 1
    control(sim, "revoke_tokens", {"refresh": False})
    hook.get_brands()  # 401 -> refresh grant: token request 2
    control(sim, "revoke_tokens", {"refresh": True})
    with pytest.raises(IysTokenBlockedError, match="configured limit of 2"):
        hook.get_brands()
    assert counters(sim)["token_requests"] == 2


def test_token_call_is_retried_once_after_a_5xx_and_both_attempts_count(sim, pg):
    control(
        sim, "faults", {"fail_next": [{"path_contains": "/oauth2/token", "status": 503, "code": "H192", "count": 1}]}
    )
    assert IysHook().get_brands()
    assert counters(sim)["token_requests"] == 2
    assert [r[0] for r in pg.execute("SELECT outcome FROM iys.token_requests ORDER BY id")] == ["503", "200"]


def test_token_call_gives_up_after_two_5xx_and_never_retries_a_refusal(sim):
    control(
        sim, "faults", {"fail_next": [{"path_contains": "/oauth2/token", "status": 503, "code": "H192", "count": 2}]}
    )
    with pytest.raises(IysApiError, match="H192"):
        IysHook().get_brands()
    assert counters(sim)["token_requests"] == 2

    control(
        sim, "faults", {"fail_next": [{"path_contains": "/oauth2/token", "status": 400, "code": "H001", "count": 1}]}
    )
    with pytest.raises(IysAuthError):
        IysHook().get_brands()
    assert counters(sim)["token_requests"] == 3


def test_tokens_never_reach_the_logs(sim, caplog, capfd, pg):
    caplog.set_level("DEBUG")
    control(
        sim,
        "faults",
        {"fail_next": [{"path_contains": "/brands", "status": 503, "code": "H192", "count": 1, "retry_after": 0}]},
    )
    hook = IysHook()
    hook.get_brands()
    out, err = capfd.readouterr()
    text = caplog.text + out + err  # Airflow's structlog writes to stdout, the stdlib loggers to caplog
    assert "retrying" in text  # the hook's log is captured, so the checks below mean something
    access, refresh = pg.execute("SELECT access_token, refresh_token FROM iys.api_tokens").fetchone()
    assert access not in text and refresh not in text
    assert hook.settings.password not in text


# --------------------------------------------------------------------------- rate limit and retries


def test_429_is_retried_honouring_retry_after(sim):
    control(
        sim,
        "faults",
        {"fail_next": [{"path_contains": "/brands", "status": 429, "code": "H124", "count": 2, "retry_after": 0.2}]},
    )
    hook = IysHook()
    assert hook.get_brands()
    assert hook.stats.retries == 2
    assert hook.stats.rate_limited == 2


def test_5xx_and_h123_are_retried_with_backoff(sim):
    control(
        sim,
        "faults",
        {
            "fail_next": [
                {"path_contains": "/brands", "status": 503, "code": "H192", "count": 1},
                {"path_contains": "/brands", "status": 400, "code": "H123", "count": 1},
            ]
        },
    )
    hook = IysHook()
    assert hook.get_brands()
    assert hook.stats.retries == 2


def test_persistent_5xx_gives_up_with_a_typed_error(sim):
    control(sim, "faults", {"fail_next": [{"path_contains": "/brands", "status": 500, "code": "H015", "count": 50}]})
    hook = IysHook(max_attempts=3)
    with pytest.raises(IysApiError) as excinfo:
        hook.get_brands()
    assert excinfo.value.status_code == 500 and excinfo.value.code == "H015"
    assert hook.stats.retries == 2


def test_html_from_a_proxy_is_a_malformed_response_error(sim):
    control(sim, "faults", {"html_error_rate": 1.0})
    with pytest.raises(IysMalformedResponseError, match="non-JSON"):
        IysHook(max_attempts=2).get_brands()


def test_aggregate_rate_of_parallel_processes_stays_within_the_limit(sim):
    """Two processes at 8 req/s each would be 16; shared scheduling keeps them at 8 together."""
    control(sim, "config", {"rate_limit_per_second": 10})
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    args = (os.environ["AIRFLOW_CONN_IYS_DEFAULT"], os.environ["AIRFLOW_CONN_IYS_POSTGRES"], queue, 15)
    procs = [ctx.Process(target=_many_status_calls, args=args) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(r[0] == "ok" for r in results), results
    c = counters(sim)
    assert c["h124"] == 0
    assert c["multi_status_calls"] == 45


def _many_status_calls(conn_json, pg_conn_json, queue, n):
    os.environ["AIRFLOW_CONN_IYS_DEFAULT"] = conn_json
    os.environ["AIRFLOW_CONN_IYS_POSTGRES"] = pg_conn_json
    try:
        hook = IysHook()
        for _ in range(n):
            hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
        queue.put(("ok", hook.stats.retries))
    except Exception as exc:
        queue.put(("error", repr(exc)))


# --------------------------------------------------------------------------- writes


def test_lost_write_response_is_retried_idempotently(sim):
    seed(
        sim,
        {
            "recipient": PHONE,
            "type": "MESAJ",
            "status": "ONAY",
            "consentDate": format_iys_datetime(iys_now() - timedelta(days=30)),
            "source": "HS_WEB",
        },
    )
    control(sim, "faults", {"drop_after_commit_next": 1})
    result = IysHook().add_consent(consent(status=ConsentStatus.RET))
    state = control(sim, "state", method="GET")
    stored = [c for c in _consents(state) if c["recipient"] == PHONE and c["type"] == "MESAJ"]
    assert stored[0]["status"] == "RET"
    assert stored[0]["transactionId"] == result.transaction_id
    events = [e for e in _events(control(sim, "events", method="GET")) if e["recipient"] == PHONE]
    assert len(events) == 1


def _consents(state):
    return state["consents"] if isinstance(state, dict) else state


def _events(events):
    return events["events"] if isinstance(events, dict) else events


@pytest.mark.parametrize(
    ("seeded_status", "status", "code"),
    [(None, ConsentStatus.RET, "H175"), ("RET", ConsentStatus.RET, "H174")],
)
def test_business_errors_are_typed_and_never_retried(sim, seeded_status, status, code):
    if seeded_status:
        seed(
            sim,
            {
                "recipient": PHONE,
                "type": "MESAJ",
                "status": seeded_status,
                "consentDate": format_iys_datetime(iys_now() - timedelta(days=30)),
                "source": "HS_WEB",
            },
        )
    hook = IysHook()
    with pytest.raises(IysApiError) as excinfo:
        hook.add_consent(consent(status=status))
    assert excinfo.value.code == code
    assert excinfo.value.status_code == 400
    assert hook.stats.retries == 0


def test_validation_error_carries_field_location(sim):
    bad = Consent(
        recipient="not-a-phone",
        type=ConsentType.MESAJ,
        status=ConsentStatus.ONAY,
        source=ConsentSource.HS_WEB,
        consent_date=iys_now(),
    )
    with pytest.raises(IysApiError) as excinfo:
        IysHook().add_consent(bad)
    assert excinfo.value.status_code == 422
    assert excinfo.value.code == "H121"
    assert excinfo.value.location == ["recipient"]
    assert "recipient" in str(excinfo.value)


def test_consent_date_is_sent_in_turkey_local_time(sim):

    utc_moment = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)
    IysHook().add_consent(consent(when=utc_moment))
    state = _consents(control(sim, "state", method="GET"))
    stored = next(c for c in state if c["recipient"] == PHONE)
    assert stored["consentDate"] == utc_moment.astimezone(IYS_TIMEZONE).strftime("%Y-%m-%d %H:%M:%S")


def test_batch_result_is_none_until_ready_then_parsed(sim):
    seed(
        sim,
        {
            "recipient": OTHER_PHONE,
            "type": "MESAJ",
            "status": "RET",
            "consentDate": format_iys_datetime(iys_now() - timedelta(days=30)),
            "source": "HS_WEB",
        },
    )
    hook = IysHook()
    submission = hook.submit_consent_batch([consent(), consent(OTHER_PHONE, ConsentStatus.RET)])
    assert submission.request_id
    assert len(submission.sub_requests) == 2
    assert hook.get_batch_result(submission.request_id) is None
    control(sim, "clock", {"advance_seconds": 301})
    items = hook.get_batch_result(submission.request_id)
    by_index = {item.index: item for item in items}
    assert by_index[0].status is BatchItemStatus.SUCCESS and by_index[0].transaction_id
    assert by_index[1].status is BatchItemStatus.FAILURE and by_index[1].error.code == "H174"
    assert all(item.sub_request_id for item in items)  # both spellings parsed


# --------------------------------------------------------------------------- reads


def test_single_status_of_a_known_recipient(sim):
    seed(
        sim,
        {
            "recipient": PHONE,
            "type": "ARAMA",
            "status": "RET",
            "consentDate": "2024-01-02 10:11:12",
            "source": "HS_WEB",
        },
    )
    record = IysHook().get_consent_status(PHONE, ConsentType.ARAMA)
    assert record.status is ConsentStatus.RET
    assert format_iys_datetime(record.consent_date) == "2024-01-02 10:11:12"


@pytest.mark.parametrize("mode", ["404", "empty"])
def test_single_status_of_an_unknown_recipient_is_none(sim, mode):
    control(sim, "config", {"unknown_status_mode": mode})
    assert IysHook().get_consent_status(PHONE, ConsentType.MESAJ) is None


def test_single_status_quota_is_a_quota_error(sim):
    control(sim, "config", {"single_status_limit_per_hour": 1})
    hook = IysHook()
    hook.get_consent_status(PHONE, ConsentType.MESAJ)
    with pytest.raises(IysQuotaExceededError):
        hook.get_consent_status(PHONE, ConsentType.MESAJ)
    assert hook.stats.retries == 0


def test_multi_status_dedupes_chunks_and_returns_the_onay_set(sim):
    phones = [f"+90532{i:07d}" for i in range(2500)]
    seed(
        sim,
        *(
            {
                "recipient": p,
                "type": "MESAJ",
                "status": "ONAY" if i % 3 == 0 else "RET",
                "consentDate": "2024-01-01 00:00:00",
                "source": "HS_WEB",
            }
            for i, p in enumerate(phones[:1500])
        ),
    )
    hook = IysHook()
    onay = hook.get_onay_recipients(phones + phones[:700], ConsentType.MESAJ)
    assert onay == {p for i, p in enumerate(phones[:1500]) if i % 3 == 0}
    assert counters(sim)["multi_status_calls"] == 3


def test_change_feed_pages_and_resumes_from_a_cursor(sim):
    created = iys_now() - timedelta(hours=3)
    for i in range(3):  # a few through the citizen endpoint, the rest bulk-seeded as IYS-stream events
        control(sim, "citizen_change", _change(i, created))
    control(
        sim,
        "seed",
        {
            "emit_events": True,
            "consents": [_change(i, created) for i in range(3, 2500)],
        },
    )
    hook = IysHook()
    pages = list(hook.iter_change_pages(ChangeStream.IYS, limit=1000))
    assert [len(p.changes) for p in pages] == [1000, 1000, 500]
    ids = [c.transaction_id for p in pages for c in p.changes]
    assert len(set(ids)) == 2500
    resumed = list(hook.iter_change_pages(ChangeStream.IYS, after=pages[0].after, limit=1000))
    assert [c.transaction_id for p in resumed for c in p.changes] == ids[1000:]
    assert list(hook.iter_change_pages(ChangeStream.HS)) == []


def _change(i: int, created: datetime) -> dict:
    return {
        "recipient": f"+90533{i:07d}",
        "type": "MESAJ",
        "status": "ONAY",
        "source": "IYS_MOBIL",
        "consentDate": format_iys_datetime(created),
        "creationDate": format_iys_datetime(created + timedelta(seconds=i)),
    }
