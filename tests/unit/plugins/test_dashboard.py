"""The İYS page's rules (iys_provider.plugins.dashboard): levels, progress, links, consent matrix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from iys_provider.limits.success_ratio import RatioReading
from iys_provider.plugins.dashboard import (
    BudgetKey,
    ConsentMatrix,
    InitialSyncProgress,
    Level,
    PushChannelHealth,
    RunRow,
    deadline_level,
    feed_lag_level,
    initial_sync_dag_id,
    push_dag_id,
    push_level,
    ratio_level,
    reconciliation_level,
    requests_level,
    run_path,
    task_path,
    token_level,
    worst_level,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = 86_400


@pytest.mark.parametrize(
    ("lag_seconds", "level"),
    [
        (None, Level.NONE),
        (0, Level.OK),
        (6 * DAY - 1, Level.OK),
        (6 * DAY, Level.WARNING),
        (7 * DAY - 1, Level.WARNING),
        (7 * DAY, Level.DANGER),
    ],
)
def test_feed_lag_warns_from_six_days_and_alarms_at_the_seven_day_window(lag_seconds, level):
    assert feed_lag_level(lag_seconds) is level


def test_consent_matrix_fills_every_channel_and_counts_null_status_as_unknown():
    matrix = ConsentMatrix.from_rows(
        [("MESAJ", "ONAY", 5), ("MESAJ", None, 2), ("EPOSTA", "RET", 1)], sendable={"MESAJ": 4}
    )
    assert matrix.counts["MESAJ"] == {"ONAY": 5, "RET": 0, "unknown": 2}
    assert matrix.counts["ARAMA"] == {"ONAY": 0, "RET": 0, "unknown": 0}
    assert matrix.counts["EPOSTA"]["RET"] == 1
    assert matrix.total == 8
    assert matrix.sendable == {"MESAJ": 4, "ARAMA": 0, "EPOSTA": 0}
    assert ConsentMatrix.from_rows([], sendable=None).sendable is None  # not counted: not recorded, not 0


def progress(**changes) -> InitialSyncProgress:
    values = dict(
        scan_id=1,
        started_at=NOW - timedelta(hours=1),
        finished_at=None,
        batches_done=2,
        batch_count=8,
        users_done=20_000,
        total_users=80_000,
        requests_done=7_200,
        elapsed_seconds=3_600.0,
    )
    values.update(changes)
    return InitialSyncProgress(**values)


def test_initial_sync_estimates_its_finish_at_the_pace_so_far():
    scan = progress()
    assert scan.estimated_finish(NOW) == NOW + timedelta(hours=3)  # 6 batches left at 30 min each
    assert scan.requests_per_second == 2.0
    assert scan.level is Level.WARNING


def test_initial_sync_without_a_finished_batch_has_no_estimate_nor_rate():
    scan = progress(batches_done=0, users_done=0, requests_done=0)
    assert scan.estimated_finish(NOW) is None
    assert scan.requests_per_second is None


def test_finished_initial_sync_reports_its_end():
    end = NOW - timedelta(minutes=5)
    scan = progress(finished_at=end, batches_done=8)
    assert scan.estimated_finish(NOW) == end
    assert scan.level is Level.OK


@pytest.mark.parametrize(
    ("deadline", "overdue", "level"),
    [
        (None, 0, Level.OK),
        (NOW + timedelta(hours=72), 0, Level.OK),
        (NOW + timedelta(hours=47), 0, Level.WARNING),
        (NOW + timedelta(hours=23), 0, Level.DANGER),
        (None, 1, Level.DANGER),
    ],
)
def test_unsent_ret_deadline_levels(deadline, overdue, level):
    assert deadline_level(deadline, overdue, NOW) is level


@pytest.mark.parametrize(
    ("used", "blocked_until", "level"),
    [
        (None, None, Level.NONE),
        (0, None, Level.OK),
        (7, None, Level.OK),
        (8, None, Level.WARNING),
        (10, None, Level.DANGER),
        (0, NOW + timedelta(minutes=1), Level.DANGER),
        (0, NOW - timedelta(minutes=1), Level.OK),  # a block that ended is history
    ],
)
def test_token_budget_levels(used, blocked_until, level):
    assert token_level(used, 10, blocked_until, NOW) is level


@pytest.mark.parametrize(
    ("by_status", "level"),
    [
        ({}, Level.NONE),
        ({200: 69, 404: 31}, Level.DANGER),
        ({200: 70, 404: 30}, Level.WARNING),
        ({200: 80, 404: 20}, Level.OK),
        ({200: 10, 429: 50, 500: 50}, Level.OK),  # 429 and 5xx are not client errors in İYS's ratio
    ],
)
def test_success_ratio_against_iys_seventy_percent_line(by_status, level):
    assert ratio_level(RatioReading(by_status)) is level


def test_requests_level_warns_on_any_429():
    assert requests_level(None, None) is Level.NONE
    assert requests_level(100, 0) is Level.OK
    assert requests_level(100, 1) is Level.WARNING


def test_budget_key_hides_a_block_that_ended_and_says_not_recorded_without_answers():
    key = BudgetKey(
        budget_key="api.iys.org.tr",
        token_requests_last_hour=3,
        token_limit=10,
        blocked_until=NOW - timedelta(seconds=1),
        block_reason="H084",
        requests_window_start=None,
        requests=None,
        rate_limited=None,
    )
    shown = key.as_json(NOW)
    assert shown["blocked_until"] is None and shown["block_reason"] is None
    assert shown["requests"] is None and shown["success_ratio_24h"] is None  # the page: "not recorded"
    assert shown["ratio_level"] == "none"


def test_reconciliation_levels():
    assert reconciliation_level([]) is Level.NONE
    assert reconciliation_level(["agreed", "repaired_and_agreed"]) is Level.OK
    assert reconciliation_level(["agreed", "pending"]) is Level.WARNING
    assert reconciliation_level(["agreed", "hash_error"]) is Level.DANGER


def test_links_name_the_run_and_task_quoted_for_the_airflow_ui():
    run_id = "scheduled__2026-11-27T03:00:00+00:00"
    assert run_path("iys_incremental_sync", run_id) == (
        "dags/iys_incremental_sync/runs/scheduled__2026-11-27T03%3A00%3A00%2B00%3A00"
    )
    assert task_path("d", "r/1", "report") == "dags/d/runs/r%2F1/tasks/report"
    # A mapped task instance: the Airflow 3 UI's route /tasks/<task>/mapped/<index>; -1 is "not mapped".
    assert task_path("d", "r", "day.reconcile_day", 3) == "dags/d/runs/r/tasks/day.reconcile_day/mapped/3"
    assert task_path("d", "r", "day.reconcile_day", 0).endswith("/mapped/0")
    assert task_path("d", "r", "report", -1) == "dags/d/runs/r/tasks/report"
    row = RunRow(run_id, "iys_incremental_sync", NOW, 5, 4, 1, 2, 0, 0, 0, 6 * DAY).as_json()
    assert row["link"].endswith("/tasks/report")
    assert (row["feed_lag_days"], row["feed_lag_level"]) == (6.0, "warning")


@pytest.mark.parametrize(
    ("incremental", "initial"),
    [
        (None, "iys_initial_sync"),
        ("iys_incremental_sync", "iys_initial_sync"),
        ("iys_incremental_sync__brand_b", "iys_initial_sync__brand_b"),
        ("custom_dag", "iys_initial_sync"),
    ],
)
def test_initial_sync_dag_of_a_brand(incremental, initial):
    assert initial_sync_dag_id(incremental) == initial


@pytest.mark.parametrize(
    ("heard_from", "quarantined", "unapplied_for", "level"),
    [
        (False, 0, None, Level.NONE),  # nothing received: not judged, whatever else
        (True, 0, None, Level.OK),
        (True, 0, timedelta(minutes=14, seconds=59), Level.OK),  # the push DAG may still be on it
        (True, 0, timedelta(minutes=15), Level.WARNING),
        (True, 1, None, Level.WARNING),
    ],
)
def test_push_warns_on_quarantined_items_and_movements_left_unapplied(heard_from, quarantined, unapplied_for, level):
    oldest = None if unapplied_for is None else NOW - unapplied_for
    assert push_level(heard_from, quarantined, oldest, NOW) is level


def test_a_push_channel_never_heard_from_shows_no_figures():
    silent = PushChannelHealth("ARAMA", False, None, None, 0, 0, None, None, None, 0, None, 0, 0)
    assert silent.as_json(NOW) == {"channel": "ARAMA", "heard_from": False, "level": "none"}


def test_worst_level_and_the_push_dag_beside_the_incremental_one():
    assert worst_level([Level.NONE, Level.OK, Level.WARNING]) is Level.WARNING
    assert worst_level([Level.NONE, Level.NONE]) is Level.NONE
    assert worst_level([Level.DANGER, Level.OK]) is Level.DANGER
    assert push_dag_id("iys_incremental_sync__brand_b") == "iys_push__brand_b"
    assert push_dag_id(None) == "iys_push"
