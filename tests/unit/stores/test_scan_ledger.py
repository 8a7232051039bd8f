"""The initial sync's ledger rules, without a database: batch sizes, planning steps, batch states, progress."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iys_provider.initial_sync.scan_ledger import (
    DEFAULT_BATCH_SIZE,
    MIN_SHAPED_BATCH,
    USERS_PER_FULL_CALL,
    BatchRecord,
    BatchState,
    FinishedScan,
    OpenScan,
    ScanProgress,
    ScanStep,
    batch_request_concurrency,
    batch_sizes,
    choose_batch_size,
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
    assert math.ceil(users / size) <= max_batches


def test_a_million_users_ramp_up_run_in_equal_batches_and_ramp_down():
    sizes = batch_sizes(1_000_000, DEFAULT_BATCH_SIZE, parallel=4)
    assert sizes[:3] == (19_000, 38_000, 56_000) and sizes[-3:] == (56_000, 38_000, 19_000)
    assert set(sizes[3:-3]) == {70_000, 71_000} and len(sizes) == 17
    assert sum(sizes) == 1_000_000


@pytest.mark.parametrize(
    ("rows", "batch_size", "parallel", "expected"),
    [
        (0, 75_000, 4, ()),
        (5, 2, 4, (2, 2, 1)),  # small batches: equal parts, as requested
        (1_200, 250, 4, (240,) * 5),  # the parts one apart at most, never above batch_size
        (60_000, 75_000, 4, (60_000,)),  # too small to shape: ramps would cost more calls than they save
        (100_000, 75_000, 1, (50_000, 50_000)),  # one task at a time: nothing to stagger
        (
            70_000,
            75_000,
            4,
            (3_000, 5_000, 8_000, *(10_000,) * 2, *(9_000,) * 2, 8_000, 5_000, 3_000),
        ),  # shaped from 2W−1 bodies of 10k, in whole calls' worth of users
        (350_000, 75_000, 4, (13_000, 25_000, 38_000, *(50_000,) * 2, *(49_000,) * 2, 38_000, 25_000, 13_000)),
        (100_003, 75_000, 4, (4_000, 7_000, 11_000, *(14_000,) * 3, 14_003, 11_000, 7_000, 4_000)),  # the remainder
    ],
)
def test_batch_sizes(rows, batch_size, parallel, expected):
    assert batch_sizes(rows, batch_size, parallel=parallel) == expected


def test_a_scan_too_big_for_its_shape_within_max_batches_gets_equal_grown_batches():
    sizes = batch_sizes(40_000_000, 75_000, max_batches=500, parallel=4)
    assert len(sizes) == 500 and set(sizes) == {80_000}


@pytest.mark.parametrize(
    ("batch_no", "batch_count", "base", "expected"),
    [
        (16, 17, 4, 4),  # the last batch: as many as configured
        (15, 17, 4, 6),
        (14, 17, 4, 8),
        (0, 17, 4, 8),
        (0, 1, 4, 4),  # a scan of one batch is its last
        (0, 3, 1, 2),
        (1, 3, 1, 1),
        (2, 3, 1, 1),
    ],
)
def test_earlier_batches_keep_more_calls_in_flight_than_the_last_two(batch_no, batch_count, base, expected):
    assert batch_request_concurrency(batch_no, batch_count, base) == expected


def test_equal_parts_refuse_a_unit_they_cannot_cut_into():
    from iys_provider.initial_sync.scan_ledger import _equal_parts

    with pytest.raises(ValueError, match="units of 1000"):
        _equal_parts(2_000, 1_500, 1_000)
    assert _equal_parts(5_500, 2_000, 1_000) == (2_000, 2_000, 1_500)


def test_batch_sizes_refuse_nonsense():
    with pytest.raises(ValueError, match="at least 1"):
        batch_sizes(10, 0)
    with pytest.raises(ValueError, match="at least 1"):
        batch_sizes(10, 5, parallel=0)


@settings(max_examples=int(os.environ.get("IYS_HYPOTHESIS_EXAMPLES", "2000")), deadline=None)
@given(
    rows=st.integers(0, 50_000_000),
    batch_size=st.integers(1, 200_000),
    max_batches=st.integers(1, 1_000),
    parallel=st.one_of(st.integers(1, 32), st.integers(1, 100_000)),
)
def test_batch_sizes_cover_every_user_within_max_batches(rows, batch_size, max_batches, parallel):
    sizes = batch_sizes(rows, batch_size, max_batches=max_batches, parallel=parallel)
    assert sum(sizes) == rows and all(size > 0 for size in sizes)
    assert len(sizes) <= max_batches
    assert max(sizes, default=0) <= choose_batch_size(rows, batch_size, max_batches)
    if max(sizes, default=0) - min(sizes, default=0) > 1:
        # Not equal parts, so shaped: a rising ramp of parallel − 1 batches from a quarter (for 4) of a
        # body of at least MIN_SHAPED_BATCH, the body in equal parts, the ramp mirrored at the end.
        steps = parallel - 1
        ramp, body, ramp_down = sizes[:steps], sizes[steps:-steps], sizes[-steps:]
        assert 0 < steps and list(ramp) == sorted(set(ramp)) and ramp_down == ramp[::-1]
        # In whole calls' worth of users where a ramp step is that big (the last body batch takes the
        # remainder), else in single users.
        unit = USERS_PER_FULL_CALL if ramp[0] >= USERS_PER_FULL_CALL else 1
        assert all(size % unit == 0 for size in (*ramp, *body[:-1]))
        assert ramp[0] >= min(USERS_PER_FULL_CALL, MIN_SHAPED_BATCH // parallel)
        assert ramp[-1] <= min(body) + unit and max(body) - min(body) < 2 * unit


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
