"""The run's row read from its steps' results: each column's figures by step kind, whatever the task ids."""

from __future__ import annotations

from iys_provider.run_report.sync_runs import run_details, run_figures, step_results

RESULTS = {
    "pull_iys_changes": {"step": "change_feed_pull", "stream": "IYS", "pulled": 5, "applied": 4, "held": 1,
                         "ignored_stale": 1, "feed_lag_seconds": 3700},
    "pull_hs_changes": {"step": "change_feed_pull", "stream": "HS", "pulled": 2, "applied": 2, "held": 0,
                        "ignored_stale": 0, "feed_lag_seconds": 4000},
    "check_new_users": {"step": "new_users", "users_checked": 7, "status_changes": 3, "quarantined": 1, "requests": 2},
    "approve_unusual_volume": {"step": "approval", "held": 40, "released": 40, "responded_by": "ayse"},
    "push_consent_updates": {"step": "outbox_push", "sent": 1, "skipped": 2, "rejected": 0, "failed": 1,
                             "submitted": 30, "pending": 2, "deferred": 1, "expired_batches": 1},
    "wait_for_batch_results": {"step": "outbox_settlement", "sent": 29, "skipped": 0, "rejected": 1, "reopened": 0},
    "count_widgets": {"step": "widget_count", "widgets_counted": 3},
    "log_only": None,  # a task that returned nothing
}  # fmt: skip


def test_columns_add_up_the_figures_of_their_steps_and_streams():
    figures = run_figures(step_results(RESULTS))
    assert figures == {
        "pulled_iys": 5,
        "pulled_hs": 2,
        "applied": 6,
        "ignored_stale": 1,
        "new_users_checked": 7,
        "pushed": 30,
        "skipped": 2,
        "rejected": 1,
        "failed": 1,
        "feed_lag_seconds": 4000,
        "leavers": 0,
    }


def test_details_keep_a_step_of_an_unknown_kind_whole_and_read_held_by_kind():
    details = run_details(step_results(RESULTS), failed_steps=["pull_hs_changes", "count_widgets"])
    assert details["other_steps"] == {"count_widgets": {"step": "widget_count", "widgets_counted": 3}}
    assert details["movements_held"] == 1  # the approval's 40 held updates are not movements
    assert details["consent_changes"] == 6 + 3 + 30
    assert (details["submitted"], details["left_pending"], details["batches_reopened"]) == (30, 3, 1)
    assert details["failed_steps"] == ["count_widgets", "pull_hs_changes"]


def test_a_run_without_results_has_zero_figures_and_no_lag():
    figures = run_figures({})
    assert figures["feed_lag_seconds"] is None and not any(v for k, v in figures.items() if k != "feed_lag_seconds")
