"""The initial sync's ledger rules, without a database: batch sizes, planning steps, batch states, progress."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iys_provider.scan_ledger import (
    BatchRecord,
    BatchState,
    FinishedScan,
    OpenScan,
    ScanProgress,
    ScanStep,
    choose_batch_size,
    count_batches,
    next_scan_step,
)

OPEN = OpenScan(scan_id=2, batch_count=5, total_users=500)
FINISHED = FinishedScan(
    scan_id=1,
    started_at=datetime(2026, 1, 1, tzinfo=UTC),
    finished_at=datetime(2026, 1, 1, 3, tzinfo=UTC),
    total_users=400,
)
NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("users", "requested", "max_batches", "expected"),
    [
        (0, 10_000, 500, 10_000),
        (1_000, 10_000, 500, 10_000),
        (5_000_000, 10_000, 500, 10_000),
        (5_000_001, 10_000, 500, 10_001),  # grown just enough to stay within 500 batches
        (2_000, 100, 5, 400),
    ],
)
def test_batch_size_grows_only_to_keep_the_batch_count_bounded(users, requested, max_batches, expected):
    size = choose_batch_size(users, requested, max_batches)
    assert size == expected
    assert count_batches(users, size) <= max_batches


@pytest.mark.parametrize(
    ("rescan", "open_scan", "last_finished", "step"),
    [
        (True, OPEN, FINISHED, ScanStep.RESCAN),
        (True, None, None, ScanStep.RESCAN),
        (False, OPEN, FINISHED, ScanStep.RESUME),
        (False, OPEN, None, ScanStep.RESUME),
        (False, None, FINISHED, ScanStep.DONE),
        (False, None, None, ScanStep.PLAN),
    ],
)
def test_what_a_planning_run_does(rescan, open_scan, last_finished, step):
    assert next_scan_step(rescan=rescan, open_scan=open_scan, last_finished=last_finished) is step


@pytest.mark.parametrize(
    ("finished_at", "scan_abandoned", "state"),
    [
        (None, False, BatchState.PENDING),
        (NOW, False, BatchState.FINISHED),
        (None, True, BatchState.ABANDONED),
        (NOW, True, BatchState.ABANDONED),  # a rescan covers its users again, whatever it did
    ],
)
def test_batch_state(finished_at, scan_abandoned, state):
    assert BatchRecord(finished_at, batch_count=3, brand_code=1, scan_abandoned=scan_abandoned).state is state


def test_eta_is_unknown_before_the_first_batch_and_extrapolated_after():
    assert ScanProgress(batches_done=0, batch_count=10, users_done=0, elapsed_seconds=5.0).eta_seconds is None
    assert ScanProgress(batches_done=2, batch_count=10, users_done=200, elapsed_seconds=30.0).eta_seconds == 120.0
    assert ScanProgress(batches_done=10, batch_count=10, users_done=1000, elapsed_seconds=90.0).eta_seconds == 0.0
