"""Retention rules without a database: arguments, minimums, cut-offs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from iys_provider.outbox.rules import OutboxState
from iys_provider.people.retention import (
    FINAL_OUTBOX_STATES,
    MIN_CONSENT_EVENTS_RETENTION_DAYS,
    RetentionPolicy,
    cutoff,
)

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def test_everything_is_kept_by_default():
    assert RetentionPolicy() == RetentionPolicy(None, None)
    assert RetentionPolicy().keeps_everything
    assert cutoff(NOW, None) is None


@pytest.mark.parametrize(
    ("events", "updates", "expected"),
    [
        (None, None, (None, None)),
        ("None", "", (None, None)),  # a templated None renders as text
        (" null ", "NONE", (None, None)),
        (30, 1, (30, 1)),
        ("8", " 90 ", (8, 90)),
        (365.0, None, (365, None)),
    ],
)
def test_arguments_as_given_or_templated(events, updates, expected):
    policy = RetentionPolicy.from_arguments(events, updates)
    assert (policy.consent_events_days, policy.finished_updates_days) == expected


def test_consent_events_are_kept_longer_than_the_feed_replays_and_the_error_says_why():
    assert MIN_CONSENT_EVENTS_RETENTION_DAYS == 8
    with pytest.raises(ValueError, match=r"at least 8 days .*replays up to 7 days.*transaction_id"):
        RetentionPolicy.from_arguments(7, None)
    assert RetentionPolicy.from_arguments(8, None).consent_events_days == 8


@pytest.mark.parametrize("days", [0, -1, "0"])
def test_finished_updates_are_kept_a_day_at_least(days):
    with pytest.raises(ValueError, match="finished_updates_retention_days must be at least 1"):
        RetentionPolicy.from_arguments(None, days)


@pytest.mark.parametrize("given", ["thirty", "7.5", 7.5, True, [30]])
def test_days_must_be_whole_numbers(given):
    with pytest.raises(ValueError, match="consent_events_retention_days must be a whole number of days"):
        RetentionPolicy.from_arguments(given, None)


def test_cutoff_is_n_days_before_now():
    assert cutoff(NOW, 30) == NOW - timedelta(days=30)


def test_only_states_the_package_never_changes_again_are_final():
    assert set(FINAL_OUTBOX_STATES) == set(OutboxState) - {OutboxState.PENDING, OutboxState.HELD, OutboxState.SUBMITTED}


def test_the_operator_refuses_a_too_short_retention_before_it_connects_to_anything(monkeypatch):
    from iys_provider.operators.retention import IysApplyRetentionOperator

    monkeypatch.delenv("AIRFLOW_CONN_IYS_DEFAULT", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_IYS_POSTGRES", raising=False)
    task = IysApplyRetentionOperator(task_id="retention", consent_events_retention_days="7")
    assert {"consent_events_retention_days", "finished_updates_retention_days"} <= set(task.template_fields)
    with pytest.raises(ValueError, match="at least 8 days"):
        task.execute(context={})
    # Keeping everything (the default) needs no connection either.
    assert IysApplyRetentionOperator(task_id="retention").execute(context={}) == {
        "step": "retention",
        "consent_events_deleted": 0,
        "finished_updates_deleted": 0,
        "pushed_movements_deleted": 0,
    }
    with pytest.raises(TypeError):
        IysApplyRetentionOperator("retention")
