"""The deferrable waits' triggers: they survive the triggerer's round trip, and so do the errors they meet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowException

from iys_provider.exceptions import (
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysStepFailure,
    IysSuccessRatioGuardError,
    IysTokenBlockedError,
)
from iys_provider.limits.retry_policy import retry_advice
from iys_provider.triggers.batch_results import IysBatchResultsTrigger
from iys_provider.triggers.polling import error_from_payload, error_payload, raise_trigger_error
from iys_provider.triggers.reconciliation_hash import IysReconciliationHashTrigger
from tests_support import rebuilt_trigger

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

TRIGGERS = [
    IysBatchResultsTrigger(
        iys_conn_id="iys_brand_a",
        postgres_conn_id="iys_postgres",
        hook_params={"max_attempts": 3},
        run_id="scheduled__2026-12-04T02:00:00+00:00",
        max_batch_age_seconds=7200,
        poke_interval=60,
    ),
    IysReconciliationHashTrigger(
        iys_conn_id="iys_brand_a",
        postgres_conn_id="iys_postgres",
        report_date="2026-12-01",
        max_wait_seconds=900,
        run_id="scheduled__2026-12-04T05:00:00+00:00",
        poke_interval=30,
    ),
]


@pytest.mark.parametrize("trigger", TRIGGERS, ids=lambda t: type(t).__name__)
def test_a_trigger_is_rebuilt_from_its_serialized_form(trigger):
    again = rebuilt_trigger(trigger)
    assert type(again) is type(trigger)
    assert again.serialize() == trigger.serialize()
    assert vars(again) | {"trigger_id": None} == vars(trigger) | {"trigger_id": None}


ERRORS = [
    IysApiError("Geçersiz istek", status_code=400, code="H001", endpoint="batch_result"),
    IysApiError("Too many requests", status_code=429, code="H124", endpoint="agreement", retry_after=2.0),
    IysApiError("Servis meşgul", status_code=503, code="H192", endpoint="agreement"),
    IysAuthError("Yetkisiz", status_code=403, code="H003", endpoint="batch_result"),
    IysQuotaExceededError("Saatlik kota", status_code=429, code="H086", endpoint="single_status"),
    IysMalformedResponseError("not JSON", status_code=502, endpoint="batch_result"),
    IysTokenBlockedError("blocked", blocked_until=NOW + timedelta(minutes=40)),
    IysTokenBlockedError("blocked, end unknown"),
    IysSuccessRatioGuardError("ratio 61 %", endpoint="batch_result", ratio=0.61),
    IysStepFailure("2026-12-01: İYS refused the hash query"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: f"{type(e).__name__}-{getattr(e, 'code', None)}")
def test_the_resumed_task_raises_the_error_the_trigger_met_and_retries_as_for_a_poke(error):
    with pytest.raises(type(error)) as raised:
        raise_trigger_error({"status": "error", "error": error_payload(error)})
    again = raised.value
    assert type(again) is type(error) and str(again) == str(error)
    for field in ("status_code", "code", "endpoint", "retry_after", "blocked_until", "ratio"):
        assert getattr(again, field, None) == getattr(error, field, None)
    assert retry_advice(again, NOW) == retry_advice(error, NOW)


def test_an_error_that_is_not_iys_s_takes_the_task_s_own_retries():
    again = error_from_payload(error_payload(ConnectionResetError("peer closed")))
    assert isinstance(again, AirflowException) and "ConnectionResetError: peer closed" in str(again)
    assert retry_advice(again, NOW).verdict.value == "default"


def test_a_finished_wait_raises_nothing():
    raise_trigger_error({"status": "done", "summary": {}})
