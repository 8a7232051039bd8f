"""No opt-out left behind, through the simulator and Postgres: the user's own "no" counts at once,
a RET that failed for a passing reason is tried again, an undelivered RET fails every run until a
person acknowledges it, and the change feed's 7-day guard holds at its edges.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from incremental_support import ALICE, add_update, consent, counters, iys_now, outbox, pull, push, truth

from iys_provider.business_days import newest_expired_consent_date
from iys_provider.operators.changes import DEFAULT_MAX_PULL_GAP_HOURS
from iys_provider.outbox.rules import DEFAULT_CLOCK_SKEW
from tests_support import run_dag, sim_control, task_states

ROOT = Path(__file__).resolve().parents[2]

EVE = "+905321110005"
FIVE_O_THREES = {"path_contains": "/status/MESAJ", "status": 503, "code": "H192", "count": 1000, "retry_after": 0}


def sendable(pg, user_id: str) -> set[str]:
    return {t for (t,) in pg.execute("SELECT type FROM iys.sendable WHERE user_id = %s", (user_id,))}


def row_state(pg, row_id):
    return pg.execute(
        "SELECT state, error_code, failure_retryable, requeues FROM iys.consent_updates WHERE id = %s", (row_id,)
    ).fetchone()


# --------------------------------------------------------------------------- the user's own "no"


def test_an_app_ret_leaves_sendable_at_commit_and_stays_out_once_iys_confirms(synced, pg):
    assert sendable(pg, "alice") == {"MESAJ", "ARAMA"}
    row = add_update(pg, "0532 111 00 01", "RET")  # as the app writes it: autocommitted here
    assert sendable(pg, "alice") == {"ARAMA"}
    push()
    assert outbox(pg, row)[0] == "sent" and consent(pg, ALICE)[0] == "RET"
    assert sendable(pg, "alice") == {"ARAMA"}


def test_a_newer_word_in_iys_wins_over_an_app_ret(synced, pg):
    row = add_update(pg, ALICE, "RET", type_="ARAMA", when=iys_now() - timedelta(minutes=30))
    assert sendable(pg, "alice") == {"MESAJ"}
    # The citizen said ONAY through İYS ten minutes ago (as the change feed records it): İYS wins.
    ten_minutes_ago = iys_now() - timedelta(minutes=10)
    pg.execute(
        "UPDATE iys.consents SET consent_date = %s, creation_date = %s WHERE recipient = %s AND type = 'ARAMA'",
        (ten_minutes_ago, ten_minutes_ago, ALICE),
    )
    assert sendable(pg, "alice") == {"MESAJ", "ARAMA"}
    push()
    assert outbox(pg, row)[:2] == ("skipped", "OLDER_THAN_IYS")
    assert sendable(pg, "alice") == {"MESAJ", "ARAMA"}


# --------------------------------------------------------------------------- failed RETs are tried again


def test_a_ret_failed_by_5xx_is_delivered_by_the_next_run(synced, pg):
    sim = synced
    sim_control(sim, "faults", {"fail_next": [FIVE_O_THREES]})
    row = add_update(pg, ALICE, "RET")
    push(max_attempts=1)
    assert row_state(pg, row) == ("failed", "H192", True, 0)
    assert sendable(pg, "alice") == {"ARAMA"}  # failed, not delivered: still out
    sim_control(sim, "faults", {"fail_next": []})  # İYS is healthy again

    counts = push()

    assert counts["requeued"] == 1
    assert outbox(pg, row)[0] == "sent" and truth(sim, ALICE) == "RET"
    assert row_state(pg, row)[3] == 1


def test_requeues_are_bounded_so_a_broken_endpoint_costs_a_known_number_of_calls(synced, pg):
    sim = synced
    sim_control(sim, "faults", {"fail_next": [FIVE_O_THREES]})
    row = add_update(pg, ALICE, "RET")
    calls = []
    for _ in range(4):
        before = counters(sim)["multi_status_calls"]
        push(max_attempts=1, max_requeues=2)
        calls.append(counters(sim)["multi_status_calls"] - before)
    # The first try, then two requeues; the fourth run leaves the row failed and asks nothing.
    assert row_state(pg, row) == ("failed", "H192", True, 2)
    assert calls[:3] == [calls[0]] * 3 and calls[0] > 0 and calls[3] == 0


def test_a_refusal_stays_final_and_a_failure_too_old_for_iys_is_not_requeued(synced, pg):
    sim = synced
    sim_control(sim, "config", {"unknown_status_mode": "422"})  # İYS refuses the single-status query
    refused = add_update(pg, EVE, "ONAY")  # an opt-in for an address İYS does not know: refused, 422
    push()
    assert row_state(pg, refused)[:3] == ("failed", "H114", False)
    # A RET that failed for a passing reason, but is past İYS's registration window by now.
    old = add_update(pg, ALICE, "RET", when=newest_expired_consent_date(datetime.now(UTC)))
    pg.execute("UPDATE iys.consent_updates SET state = 'failed', failure_retryable = true WHERE id = %s", (old,))
    before = counters(sim)

    counts = push()

    assert counts["requeued"] == 0
    assert row_state(pg, refused)[:2] == ("failed", "H114") and row_state(pg, old)[0] == "failed"
    assert counters(sim)["requests"] == before["requests"]


# --------------------------------------------------------------------------- overdue RETs never go quiet

ACKNOWLEDGE_SQL = re.compile(r"```sql\n(UPDATE iys\.consent_updates\s+SET acknowledged_at.*?;)\n```", re.S)


def readme_acknowledgement_sql() -> str:
    """The one-line SQL the README gives for acknowledging overdue RETs, as a user would copy it."""
    match = ACKNOWLEDGE_SQL.search((ROOT / "README.md").read_text())
    assert match, "the README shows how to acknowledge overdue opt-outs"
    return match.group(1)


def overdue_ret(pg) -> int:
    """A RET that never reached İYS and is a day past its legal deadline.

    Expired as of the push's clock skew earlier, as the push judges it: in the skew's seconds after
    Turkish midnight the push still sees yesterday, when a day before today's newest expired date
    need not be expired (on a Thursday that is Saturday, registrable until Wednesday)."""
    expired = newest_expired_consent_date(datetime.now(UTC) - DEFAULT_CLOCK_SKEW)
    return add_update(pg, ALICE, "RET", when=expired - timedelta(days=1))


@pytest.mark.parametrize("acknowledge", ["param", "readme_sql"])
def test_overdue_rets_fail_every_run_until_a_person_acknowledges_them(airflow_db, synced, pg, acknowledge):
    row = overdue_ret(pg)
    for _ in range(2):
        run = run_dag("iys_incremental_sync")
        states = task_states(run)
        assert run.state == "failed" and states["report"][-1].startswith("failed"), states
        assert states["push_consent_updates"] == ["success(try 1)"]
    assert outbox(pg, row)[:2] == ("rejected", "EXPIRED")  # too late for İYS: never sent
    assert "MESAJ" not in sendable(pg, "alice")  # the citizen still said no

    if acknowledge == "param":
        run = run_dag("iys_incremental_sync", {"acknowledge_overdue_rets": True})
        assert run.state == "success", task_states(run)
    else:
        pg.execute(readme_acknowledgement_sql().replace("<brand code>", "700001"))
    run = run_dag("iys_incremental_sync")

    assert run.state == "success", task_states(run)
    acknowledged_at, by, state = pg.execute(
        "SELECT acknowledged_at, acknowledged_by, state FROM iys.consent_updates WHERE id = %s", (row,)
    ).fetchone()
    assert acknowledged_at is not None and by and state == "rejected"  # the record stays
    assert "MESAJ" not in sendable(pg, "alice")
    overdue, acknowledged = pg.execute(
        "SELECT details->'overdue_rets', details->'acknowledged_rets' FROM iys.sync_runs ORDER BY finished_at DESC"
    ).fetchone()
    assert (overdue, acknowledged) == (0, 1)


# --------------------------------------------------------------------------- the 7-day guard at its edges


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


@pytest.mark.parametrize(
    ("pulled_hours_ago", "scanned_hours_ago", "guard_fails"),
    [
        (DEFAULT_MAX_PULL_GAP_HOURS - 1, 200, False),  # 143 h: inside the limit
        (DEFAULT_MAX_PULL_GAP_HOURS + 1, 200, True),  # 145 h: beyond it
        (1, 200, False),  # an old scan with a recent pull: the newer of the two counts
        (DEFAULT_MAX_PULL_GAP_HOURS + 1, 1, False),  # a recent scan after an old pull
        (None, DEFAULT_MAX_PULL_GAP_HOURS - 1, False),  # a scan, no pull yet
        (None, DEFAULT_MAX_PULL_GAP_HOURS + 1, True),
    ],
)
def test_the_seven_day_guard_at_its_edges(synced, pg, pulled_hours_ago, scanned_hours_ago, guard_fails):
    from airflow.sdk.exceptions import AirflowFailException

    assert DEFAULT_MAX_PULL_GAP_HOURS == 144
    pg.execute("DELETE FROM iys.sync_state WHERE stream = 'changes:IYS'")
    if pulled_hours_ago is not None:
        pull("IYS")
        pg.execute(
            "UPDATE iys.sync_state SET last_success_at = %s WHERE stream = 'changes:IYS'",
            (hours_ago(pulled_hours_ago),),
        )
    pg.execute("UPDATE iys.initial_sync_scans SET started_at = %s", (hours_ago(scanned_hours_ago),))
    calls = counters(synced)["changes_calls"]
    if guard_fails:
        with pytest.raises(AirflowFailException, match="rescan"):
            pull("IYS")
        assert counters(synced)["changes_calls"] == calls
    else:
        pull("IYS")
        assert counters(synced)["changes_calls"] > calls
