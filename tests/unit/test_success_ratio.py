"""İYS's success-ratio rule (success_ratio.py) and the adaptive token margin (StoredToken), without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from iys_provider.hooks.base import ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE
from iys_provider.limits.shared_state import InProcessSharedState, StoredToken
from iys_provider.limits.success_ratio import (
    RatioReading,
    ResponseClass,
    ResponseTally,
    classify,
    guard_verdict,
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, ResponseClass.SUCCESS),
        (202, ResponseClass.SUCCESS),
        (204, ResponseClass.SUCCESS),
        (400, ResponseClass.CLIENT_ERROR),
        (401, ResponseClass.CLIENT_ERROR),
        (403, ResponseClass.CLIENT_ERROR),
        (404, ResponseClass.CLIENT_ERROR),
        (422, ResponseClass.CLIENT_ERROR),
        (409, ResponseClass.CLIENT_ERROR),
        (429, ResponseClass.RATE_LIMITED),
        (500, ResponseClass.SERVER_ERROR),
        (503, ResponseClass.SERVER_ERROR),
        (0, ResponseClass.TRANSPORT_ERROR),
    ],
)
def test_answers_are_classified_as_iys_counts_them(status, expected):
    assert classify(status) is expected


def test_the_ratio_counts_only_client_errors_as_failures():
    reading = RatioReading({200: 90, 404: 6, 422: 4, 429: 50, 503: 7, 0: 3})
    assert (reading.successes, reading.client_errors, reading.judged) == (90, 10, 100)
    assert reading.calls == 157  # every answer; the 3 requests without one are not calls
    assert reading.ratio == pytest.approx(0.90)
    assert reading.projected_ratio == pytest.approx(90 / 101)
    assert reading.client_errors_text() == "404×6, 422×4"
    assert RatioReading().ratio is None


def test_iys_would_warn_only_from_20000_calls_under_70_percent():
    assert not RatioReading({200: 6_000, 404: 4_000}).iys_would_warn  # 60 %, but 10,000 calls
    assert RatioReading({200: 12_000, 404: 8_000}).iys_would_warn
    assert not RatioReading({200: 14_000, 404: 6_000}).iys_would_warn


def test_readings_add_up():
    assert (RatioReading({200: 1, 404: 1}) + RatioReading({200: 2, 500: 1})).by_status == {200: 3, 404: 1, 500: 1}


GUARD = {"floor": 0.9, "min_calls": 100, "budget_key": "api.iys.org.tr"}


@pytest.mark.parametrize(
    ("by_status", "endpoint", "stops"),
    [
        ({200: 5, 404: 5}, "consent_status", False),  # a quiet day: under min_calls
        ({200: 95, 404: 5}, "consent_status", False),  # 95 / 101 = 94 %
        ({200: 90, 404: 9}, "consent_status", False),  # 90 / 100 = 90 %: at the floor, not under
        ({200: 90, 404: 10}, "consent_status", True),  # 90 / 101 = 89 %
        ({200: 90, 422: 10}, "add_consent", True),
        ({200: 90, 400: 10}, "submit_batch", True),
        ({200: 90, 422: 10}, "push_registration", True),  # İYS's check of a receiver can fail (H530)
        ({200: 90, 422: 10}, "push_unregistration", True),
        ({200: 90, 422: 10}, "push_links", False),
        ({200: 90, 404: 10}, "multi_status", False),  # reads that cannot fail avoidably go on
        ({200: 90, 404: 10}, "changes", False),
        ({200: 90, 404: 10}, "batch_result", False),
        ({200: 90, 404: 5, 429: 500, 503: 500}, "consent_status", False),  # 429 and 5xx are no failures
    ],
)
def test_guard_verdicts(by_status, endpoint, stops):
    verdict = guard_verdict(RatioReading(by_status), endpoint=endpoint, **GUARD)
    assert (verdict is not None) is stops


def test_the_guard_message_names_the_cause():
    verdict = guard_verdict(RatioReading({200: 900, 404: 80, 422: 20}), endpoint="consent_status", **GUARD)
    assert "consent_status" in verdict
    assert "90.0% success ratio" in verdict
    assert "404×80, 422×20" in verdict
    assert "success_ratio_floor" in verdict
    assert "whitelist" in verdict


def test_tally_asks_for_a_flush_every_n_answers_and_hands_its_counts_over():
    tally = ResponseTally(flush_every=3, flush_seconds=3600)
    assert [tally.add(s) for s in (200, 404, 200)] == [False, False, True]
    assert tally.reading().by_status == {200: 2, 404: 1}
    counts = tally.take()
    assert sum(counts.values()) == 3 and tally.pending == 0 and tally.reading().by_status == {}
    tally.give_back(counts)
    assert tally.pending == 3


def test_tally_asks_for_a_flush_after_flush_seconds():
    tally = ResponseTally(flush_every=1000, flush_seconds=0)
    assert tally.add(200)


def test_in_process_state_keeps_the_ledger_per_budget_key():
    state = InProcessSharedState()
    key = f"unit-{datetime.now(UTC).timestamp()}"
    for status in (200, 200, 404, 0):
        state.count_response(key, status)
    assert state.success_ratio(key).by_status == {200: 2, 404: 1, 0: 1}
    assert state.success_ratio(key + "-other").by_status == {}


# ----------------------------------------------------------------------------- token margin

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def token(lifetime_s: float | None, left_s: float) -> StoredToken:
    return StoredToken(
        access_token="t",
        access_expires_at=NOW + timedelta(seconds=left_s),
        access_lifetime=None if lifetime_s is None else timedelta(seconds=lifetime_s),
    )


@pytest.mark.parametrize(
    ("lifetime_s", "margin_s"),
    [(7200, 300), (2400, 300), (240, 30), (90, 11.25), (60, 7.5), (None, 300)],
)
def test_refresh_margin_follows_the_token_lifetime(lifetime_s, margin_s):
    margin = token(lifetime_s, 0).access_margin(ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE)
    assert margin == timedelta(seconds=margin_s)


@pytest.mark.parametrize("lifetime_s", [60, 90, 240, 7200])
def test_a_token_is_used_for_seven_eighths_of_its_life_at_least(lifetime_s):
    margin = min(300, lifetime_s / 8)
    assert token(lifetime_s, margin + 0.001).access_valid(NOW, ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE)
    assert not token(lifetime_s, margin).access_valid(NOW, ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE)
    assert not StoredToken().access_valid(NOW, ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE)
