"""The workflow services without Airflow: a hook, a connection and a clock in, a small result out.

Their Airflow faces (operators, sensors) are tested in the modules of their workflows; here each service
is driven directly, its clock set by the test, against the simulator and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from incremental_support import CAROL, add_update, consent, make_feed_visible, outbox, seed

from iys_provider.change_feed.pull import ChangeFeedPull, FeedGapError
from iys_provider.hooks.iys import IysHook
from iys_provider.models import IYS_TIMEZONE, ChangeStream
from iys_provider.operators.reconciliation import IysCompareSummaryOperator
from iys_provider.outbox.push import OutboxPush, PushSettings
from iys_provider.outbox.rules import DEFAULT_MAX_BATCH_AGE
from iys_provider.outbox.settlement import OutboxSettlement
from iys_provider.reconciliation.day import DayNotAgreedError, ReconciliationDay
from iys_provider.sensors.reconciliation import IysReconciliationHashSensor
from tests_support import SIM_BRAND_CODE, sim_control

PHONE = "+905321110301"


def at(moment: datetime):
    return lambda: moment


def test_the_pull_applies_a_page_and_guards_the_feed_window_by_its_clock(synced, pg):
    sim = synced
    sim_control(sim, "citizen_change", {"recipient": CAROL, "type": "MESAJ", "status": "RET", "source": "IYS_WEB"})
    make_feed_visible(sim)
    hook = IysHook()

    result = ChangeFeedPull(hook, pg, ChangeStream.IYS).run()

    assert (result["step"], result["stream"], result["pulled"], result["applied"]) == ("change_feed_pull", "IYS", 1, 1)
    assert consent(pg, CAROL)[:2] == ("RET", "IYS_WEB")
    # Three hours later by the service's clock: beyond a 2-hour limit it refuses with the remedy, within 4 it pulls.
    later = datetime.now(UTC) + timedelta(hours=3)
    with pytest.raises(FeedGapError, match="rescan"):
        ChangeFeedPull(hook, pg, ChangeStream.IYS, max_pull_gap=timedelta(hours=2), clock=at(later)).run()
    again = ChangeFeedPull(hook, pg, ChangeStream.IYS, max_pull_gap=timedelta(hours=4), clock=at(later)).run()
    assert (again["pulled"], again["new"]) == (0, 0)


def test_a_settlement_pass_waits_settles_and_reopens_by_its_clock(synced, pg):
    sim = synced
    seed(sim, (CAROL, "MESAJ", "ONAY"))
    hook = IysHook()
    batches = PushSettings(single_add_threshold=0)  # even one update goes out as an async batch
    row = add_update(pg, CAROL, "RET")
    assert OutboxPush(hook, pg, batches).run()["submitted"] == 1

    before_the_delay = OutboxSettlement(hook, pg, "night-1", clock=at(datetime.now(UTC) - timedelta(hours=1))).run()
    assert before_the_delay.still_waiting == 1 and before_the_delay.summary["sent"] == 0
    assert outbox(pg, row)[0] == "submitted"

    settled = OutboxSettlement(hook, pg, "night-1").run()
    assert settled.still_waiting == 0
    assert settled.summary == {"step": "outbox_settlement", "sent": 1, "skipped": 0, "rejected": 0, "reopened": 0}
    assert outbox(pg, row)[:2] == ("sent", None)

    # A batch İYS keeps processing past max_batch_age (by the service's clock) goes back to pending.
    seed(sim, (CAROL, "ARAMA", "ONAY"))
    late = add_update(pg, CAROL, "RET", type_="ARAMA")
    assert OutboxPush(hook, pg, batches).run()["submitted"] == 1
    sim_control(sim, "faults", {"batch_item_status": "processing"})
    too_late = datetime.now(UTC) + DEFAULT_MAX_BATCH_AGE + timedelta(minutes=1)
    expired = OutboxSettlement(hook, pg, "night-2", clock=at(too_late)).run()
    assert expired.still_waiting == 0 and expired.summary["reopened"] == 1
    assert outbox(pg, late)[:2] == ("pending", "BATCH_EXPIRED")


def test_a_reconciliation_day_refuses_a_day_its_clock_puts_outside_the_window_then_agrees_it(sim, pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    sim_control(sim, "config", {"reconciliation_queue_seconds": 0, "reconciliation_hash_seconds": 0})
    day = datetime.now(UTC).astimezone(IYS_TIMEZONE).date() - timedelta(days=3)
    sim_control(
        sim,
        "citizen_change",
        {"recipient": PHONE, "type": "MESAJ", "status": "ONAY", "source": "IYS_WEB", "creationDate": f"{day} 10:00:00"},
    )
    context = {"run_id": "night-1"}
    # What the tasks before the day's reconcile record: both summaries, İYS's hash of the day.
    IysCompareSummaryOperator(task_id="compare_summary", report_date=day.isoformat()).execute(context)
    assert IysReconciliationHashSensor(task_id="wait_for_hash", report_date=day.isoformat()).poke(context).is_done
    ChangeFeedPull(IysHook(), pg, ChangeStream.IYS).run()  # the day's movement, in our events too
    hook = IysHook()

    next_week = datetime.now(UTC) + timedelta(days=8)
    with pytest.raises(DayNotAgreedError, match=f"Not asking İYS about {day}"):
        ReconciliationDay(hook, pg, day, "night-1", clock=at(next_week)).run()
    puts = [r for r in sim_control(sim, "requests", method="GET")["requests"] if r["method"] == "PUT"]
    assert puts == []

    result = ReconciliationDay(hook, pg, day, "night-1").run()
    assert result == {
        "report_date": day.isoformat(),
        "status": "agreed",
        "movements_ours": 1,
        "repaired": 0,
        "archived": False,  # no archive given: nothing is kept
    }
    row = pg.execute(
        "SELECT status, archived_file FROM iys.reconciliations WHERE brand_code = %s AND report_date = %s",
        (SIM_BRAND_CODE, day),
    ).fetchone()
    assert row == ("agreed", None)
