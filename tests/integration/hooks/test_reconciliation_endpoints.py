"""The hook's reconciliation endpoints against the simulator: streamed downloads, retries, 204s, spellings."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

import pytest

from iys_provider.exceptions import IysApiError
from iys_provider.hooks.iys import IysHook
from iys_provider.models import IYS_TIMEZONE, RecipientType
from tests_support import sim_control


@pytest.fixture
def day(sim):
    yesterday = datetime.now(UTC).astimezone(IYS_TIMEZONE).date() - timedelta(days=1)
    sim_control(sim, "config", {"reconciliation_queue_seconds": 0, "reconciliation_hash_seconds": 0})
    sim_control(
        sim,
        "citizen_change",
        {"recipient": "+905321110201", "type": "MESAJ", "status": "RET", "creationDate": f"{yesterday} 12:00:00"},
    )
    return yesterday


def test_the_file_is_streamed_and_a_failed_attempt_starts_the_destination_over(sim, day):
    hook = IysHook(max_attempts=3, max_retry_seconds=30)
    sim_control(
        sim, "faults", {"fail_next": [{"path_contains": "/file", "status": 503, "code": "H192", "retry_after": 0}]}
    )
    destination = io.BytesIO(b"left over from an earlier attempt, longer than the file itself" * 10)
    size = hook.download_daily_file(day, destination)
    content = destination.getvalue()
    assert size == len(content) and content.startswith(b"creationDate,transactionId,") and content.endswith(b"\n")
    assert hook.stats.retries == 1 and hook.stats.by_status[503] == 1  # (the other 200 is the token)
    info = hook.get_agreement(day)
    assert info.process_status == "completed" and info.hash_value == hashlib.sha384(content).hexdigest()
    stamp = io.BytesIO()
    assert hook.download_timestamp(day, stamp) == len(stamp.getvalue()) > 0


def test_no_value_answers_are_none_and_both_spellings_are_read(sim, day):
    hook = IysHook()
    empty = day - timedelta(days=1)
    assert hook.get_agreement(empty) is None
    assert hook.download_daily_file(empty, io.BytesIO()) is None
    assert hook.put_agreement(empty) is None
    assert hook.get_daily_change_summary(empty, RecipientType.TACIR).change_stats == []
    sim_control(sim, "config", {"reconciliation_captured_field": "aggrementCaptured"})
    assert hook.put_agreement(day) is True


def test_a_refused_date_raises_without_retrying(sim, day):
    hook = IysHook(max_attempts=3)
    with pytest.raises(IysApiError) as refused:
        hook.download_daily_file(day - timedelta(days=9), io.BytesIO())
    assert (refused.value.status_code, refused.value.code) == (422, "H502")
    assert hook.stats.by_status[422] == 1 and hook.stats.retries == 0


def test_a_per_second_limit_on_a_download_is_waited_out_and_lowers_the_shared_rate(sim, day):
    hook = IysHook(max_attempts=3, max_retry_seconds=30)
    sim_control(
        sim, "faults", {"fail_next": [{"path_contains": "/timestamp", "status": 429, "code": "H124", "retry_after": 0}]}
    )
    stamp = io.BytesIO()
    assert hook.download_timestamp(day, stamp) == len(stamp.getvalue()) > 0
    assert hook.stats.rate_limited == 1 and hook.stats.retries == 1


def test_a_revoked_token_on_a_download_is_refreshed_once_like_any_call(sim, day, pg):
    hook = IysHook(max_attempts=1)  # the refresh is not a retry: one attempt is enough
    hook.get_brands()
    sim_control(sim, "revoke_tokens", {"refresh": True})
    destination = io.BytesIO()
    size = hook.download_daily_file(day, destination)
    assert size == len(destination.getvalue()) > 0 and destination.getvalue().startswith(b"creationDate,")
    assert hook.stats.by_status[401] == 1 and hook.stats.retries == 0
    grants = [row[0] for row in pg.execute("SELECT grant_type FROM iys.token_requests ORDER BY id")]
    assert grants == ["password", "refresh_token", "password"]
