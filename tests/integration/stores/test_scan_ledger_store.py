"""scan_ledger_store against a real PostgreSQL: plan → queue → batches → finish, rescans, "the last finished scan"."""

from __future__ import annotations

from bisect import bisect_right
from datetime import UTC, datetime
from itertools import accumulate

import pytest

from iys_provider.initial_sync import consent_checks
from iys_provider.initial_sync.consent_checks import record_checked_users
from iys_provider.initial_sync.recipients import prepare_users
from iys_provider.initial_sync.scan_ledger import BatchState, ScanBatch, ScanStep, batch_sizes
from iys_provider.initial_sync.scan_ledger_store import (
    finish_batch,
    finish_scan,
    initial_sync_done,
    last_finished_scan,
    open_scan,
    pending_batches,
    plan_scan,
    read_batch_record,
    read_batch_users,
    schedule_scan,
)
from iys_provider.people.user_source import UserSource
from iys_provider.schema import migrate

BRAND = 4343
# Seven rows: five users, one of them twice (one row is kept, in a stable order), one without an id.
SOURCE = UserSource(
    "SELECT * FROM (VALUES ('u1', '05321110001', NULL), ('u2', NULL, 'b@example.com'), ('u3', '05321110003', NULL), "
    "('u4', '05321110004', NULL), ('u5', '05321110005', NULL), ('u3', '05321119999', NULL), "
    "(NULL, '05321110006', NULL)) AS t(user_id, phone, email)"
)


@pytest.fixture
def ledger(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    return pg


def schedule(conn, **kwargs):
    schedule, _ = schedule_scan(conn, brand_code=BRAND, source=SOURCE, batch_size=2, max_batches=10, **kwargs)
    return schedule


def queued(conn, scan_id):
    return conn.execute("SELECT count(*) FROM iys.initial_sync_queue WHERE scan_id = %s", (scan_id,)).fetchone()[0]


def finish_every_batch(conn, scan_id):
    for pending in pending_batches(conn, scan_id):
        finish_batch(conn, ScanBatch(scan_id, pending.batch_no), users=1, recipients=1, quarantined=0, requests=1)


def test_a_plan_snapshots_each_user_once_into_numbered_batches(ledger):
    with ledger.transaction():
        plan = plan_scan(ledger, brand_code=BRAND, source=SOURCE, batch_size=2)
    assert (plan.users, plan.batch_count, plan.batch_size) == (5, 3, 2)
    assert (plan.repeated_user_ids, plan.null_user_ids) == (1, 1)
    assert [tuple(b) for b in pending_batches(ledger, plan.scan_id)] == [
        (0, "u1", "u2"),
        (1, "u3", "u4"),
        (2, "u5", "u5"),
    ]
    users = read_batch_users(ledger, ScanBatch(plan.scan_id, 1))
    assert sorted(u.user_id for u in users) == ["u3", "u4"]
    # Of a repeated user_id, the scan keeps the row a later check of changed users reads too.
    changed = {u.user_id: u for u in SOURCE.read_changed(ledger, BRAND)}
    assert {u.user_id: u for u in users} == {"u3": changed["u3"], "u4": changed["u4"]}
    assert open_scan(ledger, BRAND) == (plan.scan_id, 3, 5)
    assert not initial_sync_done(ledger, BRAND)


# 72,000 users in batches shaped for 4 parallel tasks; one more row of u17 and one without a user id.
BIG = 72_000
BIG_SOURCE = UserSource(
    f"SELECT 'u' || g AS user_id, '0532' || lpad(g::text, 7, '0') AS phone, NULL AS email FROM generate_series(1, {BIG}) AS g "
    "UNION ALL SELECT NULL, '05320000000', NULL UNION ALL SELECT 'u17', '05329999999', NULL"
)


def test_a_big_scan_numbers_its_users_in_user_id_order_into_the_planned_batch_sizes(ledger):
    # Known from an earlier scan: every 1000th user, and 50 users the source no longer returns.
    ledger.execute(
        "INSERT INTO iys.user_sources (brand_code, user_id, digest) "
        "SELECT %(b)s, 'u' || g, 'd' FROM generate_series(1000, %(n)s, 1000) AS g "
        "UNION ALL SELECT %(b)s, 'gone-' || g, 'd' FROM generate_series(1, 50) AS g",
        {"b": BRAND, "n": BIG},
    )
    scheduled, forgotten = schedule_scan(
        ledger, brand_code=BRAND, source=BIG_SOURCE, batch_size=75_000, parallel_batches=4
    )
    plan = scheduled.planned
    # Sized for the rows with a user id, the repeated one included (as counted before the first is read).
    sizes = batch_sizes(BIG + 1, 75_000, parallel=4)
    assert sizes[0] < sizes[3] > sizes[-1]  # shaped: ramps up and down
    assert (plan.users, plan.repeated_user_ids, plan.null_user_ids) == (BIG, 1, 1)
    assert (plan.batch_count, plan.batch_size) == (len(sizes), max(sizes))

    # Batch k holds the users ranked [end of k−1, end of k) in user_id order, "C" collation (Python's
    # order of str); the repeated row took no place, so the last batch is one short.
    queued = ledger.execute(
        "SELECT user_id, batch_no FROM iys.initial_sync_queue WHERE scan_id = %s", (plan.scan_id,)
    ).fetchall()
    ranked = sorted(queued)
    ends = list(accumulate(sizes))
    assert [batch_no for _, batch_no in ranked] == [bisect_right(ends, rank) for rank in range(BIG)]
    assert [tuple(b) for b in scheduled.pending] == [
        (batch_no, ranked[start][0], ranked[end - 1][0])
        for batch_no, (start, end) in enumerate(zip([0, *ends[:-1]], [*ends[:-1], BIG], strict=True))
    ]
    assert open_scan(ledger, BRAND) == (plan.scan_id, len(sizes), BIG)

    # Leavers at plan time: the known users the snapshot does not hold, and only those.
    assert forgotten.leavers == 50
    assert ledger.execute(
        "SELECT count(*), count(*) FILTER (WHERE user_id LIKE 'gone-%%') FROM iys.user_sources WHERE brand_code = %s",
        (BRAND,),
    ).fetchone() == (BIG // 1000, 0)


@pytest.mark.parametrize(
    ("query", "nulls"),
    [
        ("SELECT 'u1' AS user_id, '05321110001' AS phone, NULL AS email WHERE false", 0),
        ("SELECT NULL::text AS user_id, '05321110001' AS phone, NULL AS email", 1),
    ],
)
def test_a_source_without_any_user_plans_an_empty_scan(ledger, query, nulls):
    with ledger.transaction():
        plan = plan_scan(ledger, brand_code=BRAND, source=UserSource(query), batch_size=2)
    assert (plan.users, plan.batch_count, plan.repeated_user_ids, plan.null_user_ids) == (0, 0, 0, nulls)
    assert pending_batches(ledger, plan.scan_id) == () and queued(ledger, plan.scan_id) == 0
    assert finish_scan(ledger, BRAND, plan.scan_id) == 0


def test_a_scan_resumes_its_pending_batches_and_finishes_only_when_none_is_left(ledger):
    planned = schedule(ledger)
    assert planned.step is ScanStep.PLAN and len(planned.pending) == 3
    scan_id = planned.scan_id
    first = ScanBatch(scan_id, 0)
    assert read_batch_record(ledger, first).state is BatchState.PENDING
    finish_batch(ledger, first, users=2, recipients=3, quarantined=0, requests=1)
    assert read_batch_record(ledger, first).state is BatchState.FINISHED
    assert read_batch_users(ledger, first) == []  # no copy of personal data outlives the batch

    resumed = schedule(ledger)
    assert (resumed.step, resumed.scan_id, resumed.batch_count) == (ScanStep.RESUME, scan_id, 3)
    assert [b.batch_no for b in resumed.pending] == [1, 2]
    assert finish_scan(ledger, BRAND, scan_id) is None
    assert not initial_sync_done(ledger, BRAND)

    finish_every_batch(ledger, scan_id)
    assert finish_scan(ledger, BRAND, scan_id) == 5
    assert initial_sync_done(ledger, BRAND)
    assert open_scan(ledger, BRAND) is None
    state = ledger.execute(
        "SELECT details FROM iys.sync_state WHERE brand_code = %s AND stream = 'initial_sync'", (BRAND,)
    ).fetchone()[0]
    assert state == {"scan_id": scan_id, "users": 5}
    done = schedule(ledger)
    assert done.step is ScanStep.DONE and done.pending == () and done.last_finished.scan_id == scan_id


def test_a_rescan_abandons_the_open_scan_which_never_counts_as_finished(ledger):
    old = schedule(ledger)
    rescanned = schedule(ledger, rescan=True)
    assert rescanned.step is ScanStep.RESCAN and rescanned.abandoned_open_scan
    assert rescanned.scan_id != old.scan_id and len(rescanned.pending) == 3
    assert queued(ledger, old.scan_id) == 0 and queued(ledger, rescanned.scan_id) == 5
    assert read_batch_record(ledger, ScanBatch(old.scan_id, 1)).state is BatchState.ABANDONED
    # The abandoned scan has a finished_at, yet the initial sync is not done.
    assert last_finished_scan(ledger, BRAND) is None and not initial_sync_done(ledger, BRAND)

    finish_every_batch(ledger, rescanned.scan_id)
    finish_scan(ledger, BRAND, rescanned.scan_id)
    again = schedule(ledger, rescan=True)
    assert again.step is ScanStep.RESCAN and not again.abandoned_open_scan  # nothing was open
    assert last_finished_scan(ledger, BRAND).scan_id == rescanned.scan_id


def test_the_last_finished_scan_is_the_latest_started_one_not_abandoned(ledger):
    ledger.execute(
        "INSERT INTO iys.initial_sync_scans (scan_id, brand_code, recipients_sql, batch_size, total_users, batch_count, "
        "started_at, finished_at, abandoned) VALUES "
        "(1, %(b)s, 'q', 1, 10, 1, '2026-01-01', '2026-01-01 02:00', false), "
        "(2, %(b)s, 'q', 1, 20, 1, '2026-01-03', '2026-01-03 02:00', false), "
        "(3, %(b)s, 'q', 1, 30, 1, '2026-01-05', '2026-01-05 01:00', true), "
        "(4, %(b)s + 1, 'q', 1, 40, 1, '2026-01-06', '2026-01-06 02:00', false)",
        {"b": BRAND},
    )
    last = last_finished_scan(ledger, BRAND)
    assert (last.scan_id, last.total_users) == (2, 20)
    assert last.started_at == datetime(2026, 1, 3, tzinfo=last.started_at.tzinfo)


def test_a_batch_is_finished_in_the_transaction_that_writes_its_consents(ledger, monkeypatch):
    plan = schedule(ledger)
    batch = ScanBatch(plan.scan_id, 0)
    prepared = prepare_users(read_batch_users(ledger, batch))

    def lost_connection(*args, **kwargs):
        raise RuntimeError("connection lost while finishing the batch")

    monkeypatch.setattr(consent_checks, "finish_batch", lost_connection)
    with pytest.raises(RuntimeError):
        record_checked_users(
            ledger, brand_code=BRAND, prepared=prepared, onay={}, checked_at=datetime.now(UTC), batch=batch
        )
    assert ledger.execute("SELECT count(*) FROM iys.user_recipients").fetchone()[0] == 0
    assert read_batch_record(ledger, batch).state is BatchState.PENDING

    monkeypatch.undo()
    written = record_checked_users(
        ledger, brand_code=BRAND, prepared=prepared, onay={}, checked_at=datetime.now(UTC), batch=batch, requests=2
    )
    assert written.links == 2
    assert read_batch_record(ledger, batch).state is BatchState.FINISHED
    assert ledger.execute(
        "SELECT users, recipients, quarantined, requests FROM iys.initial_sync_batches WHERE scan_id = %s AND batch_no = 0",
        (plan.scan_id,),
    ).fetchone() == (2, prepared.unique_recipients, 0, 2)
    assert queued(ledger, plan.scan_id) == 3
