"""The push receiver or its PostgreSQL SIGKILLed mid-burst: no movement answered 2xx is lost.

İYS counts a 2xx as delivered and never sends that movement again, so a 2xx must mean committed.
Each scenario pushes single-movement lists from several threads into ``iys-push-receiver`` (a real
process, TLS), kills one part after a number of 2xx answers (a count, not a timer), keeps pushing
through the outage, checks what was acknowledged before anything is redelivered, restarts the
part, redelivers every movement not answered 2xx (İYS's at-least-once), and checks the inbox, the
events and the consents against the newest movement per address computed here from what was sent.
"""

from __future__ import annotations

import os
from collections import Counter

import psycopg
import pytest
from chaos.push_crash_support import (
    IYS_ANSWER_SECONDS,
    KillablePostgres,
    PushBurst,
    ReceiverProcess,
    make_movements,
    newest_per_address,
    tail,
    wait_for,
)
from push_support import PUSH_PASSWORD, PUSH_USERNAME, throwaway_tls

from iys_provider.schema import migrate
from tests_support import SIM_BRAND_CODE, iys_connection_json_with

CONN_ID = "iys_push_crash"
MOVEMENTS = 400
RECIPIENTS = 40
CRASH_AFTER = 120  # 2xx answers before the kill: mid-burst, with requests in flight


def receiver_env(sim, **connections: str) -> dict[str, str]:
    env = {
        **os.environ,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": iys_connection_json_with(
            sim.url, push_username=PUSH_USERNAME, push_password=PUSH_PASSWORD
        ),
    }
    env.update({f"AIRFLOW_CONN_{conn_id.upper()}": value for conn_id, value in connections.items()})
    return env


def inbox(dsn: str) -> dict[str, tuple[bool, int]]:
    """transactionId -> (applied, deliveries) of the brand's inbox."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT transaction_id, applied_at IS NOT NULL, deliveries FROM iys.push_inbox WHERE brand_code = %s",
            (SIM_BRAND_CODE,),
        ).fetchall()
    return {tx: (applied, deliveries) for tx, applied, deliveries in rows}


def assert_acknowledged_kept(dsn: str, acknowledged: set[str], moment: str) -> None:
    """Every movement answered 2xx so far is in the inbox, applied, and in the events (durable commits)."""
    assert acknowledged, f"nothing was acknowledged {moment}"
    kept = inbox(dsn)
    with psycopg.connect(dsn) as conn:
        events = {tx for (tx,) in conn.execute("SELECT transaction_id FROM iys.consent_events").fetchall()}
    missing = sorted(acknowledged - set(kept))
    assert not missing, f"{len(missing)} movements answered 2xx are not in the inbox {moment}: {missing[:5]}"
    unapplied = sorted(tx for tx in acknowledged if not kept[tx][0])
    assert not unapplied, f"{len(unapplied)} movements answered 2xx are not applied {moment}: {unapplied[:5]}"
    no_event = sorted(acknowledged - events)
    assert not no_event, f"{len(no_event)} movements answered 2xx have no event {moment}: {no_event[:5]}"


def assert_all_kept_once(dsn: str, burst: PushBurst, movements: list[dict]) -> int:
    """After redelivery: every movement once, counted per delivery, and each address at its newest movement.

    Returns how many deliveries were committed but never answered (the kill cut the answer off).
    """
    sent = {m["transactionId"] for m in movements}
    assert burst.acknowledged() == sent
    assert_acknowledged_kept(dsn, sent, "after redelivery")
    kept = inbox(dsn)
    assert set(kept) == sent, f"unexpected inbox rows {sorted(set(kept) - sent)[:5]}"
    acknowledgements, attempts = burst.acknowledgements(), burst.attempts()
    # Each 2xx is one committed delivery; a request that died unanswered may have committed one more.
    wrong = {
        tx: (acknowledgements[tx], deliveries, attempts[tx])
        for tx, (_, deliveries) in kept.items()
        if not acknowledgements[tx] <= deliveries <= attempts[tx]
    }
    assert not wrong, f"deliveries outside [2xx answers, attempts]: {dict(list(wrong.items())[:5])}"
    with psycopg.connect(dsn) as conn:
        events = Counter(tx for (tx,) in conn.execute("SELECT transaction_id FROM iys.consent_events").fetchall())
        consents = {
            (recipient, ctype): (status, tx)
            for recipient, ctype, status, tx in conn.execute(
                "SELECT recipient, type, status, transaction_id FROM iys.consents WHERE brand_code = %s",
                (SIM_BRAND_CODE,),
            ).fetchall()
        }
    assert set(events) == sent and set(events.values()) == {1}, "consent_events not exactly one row per movement"
    expected = newest_per_address(movements)
    differ = {key: (consents.get(key), want) for key, want in expected.items() if consents.get(key) != want}
    assert not differ, f"{len(differ)} consents not at their newest movement (held, expected): {differ}"
    assert set(consents) == set(expected)
    return sum(deliveries - acknowledgements[tx] for tx, (_, deliveries) in kept.items())


def assert_answers_in_time(burst: PushBurst) -> None:
    slow = [a for a in burst.answers if a.latency >= IYS_ANSWER_SECONDS]
    assert not slow, f"{len(slow)} answers took İYS's {IYS_ANSWER_SECONDS} s or longer: {slow[:3]}"


def latency_note(answers) -> str:
    if not answers:
        return "no answers"
    latencies = sorted(a.latency for a in answers)
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    return f"n={len(latencies)} p50={latencies[len(latencies) // 2]:.3f}s p95={p95:.3f}s max={latencies[-1]:.3f}s"


@pytest.fixture
def push_schema(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    return pg


@pytest.fixture
def tls(tmp_path):
    return throwaway_tls(tmp_path / "tls")


@pytest.fixture
def killable_postgres():
    server = KillablePostgres()
    try:
        server.start()
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            migrate(conn)
        yield server
    finally:
        server.stop()


def test_receiver_killed_mid_burst_loses_nothing_answered(scenario, push_schema, pg_dsn, tls, tmp_path):
    movements = make_movements(MOVEMENTS, recipients=RECIPIENTS, seed=26)
    receiver = ReceiverProcess(
        conn_id=CONN_ID,
        postgres_conn_id="iys_postgres",  # the session database (tests/conftest.py pg_dsn)
        tls=tls,
        env=receiver_env(scenario.sim),
        log=tmp_path / "receiver.log",
    )
    scenario.inject(f"SIGKILL of iys-push-receiver after {CRASH_AFTER} 2xx answers of a {MOVEMENTS}-movement burst")
    try:
        first_start = receiver.start()
        burst = PushBurst(
            receiver.channel_url, tls.ca_file, crash_after=CRASH_AFTER, crash=receiver.kill, outage_answers=40
        )
        burst.start(movements)
        wait_for(burst.quiet, "outage answers or the end of the first pass", timeout=300)
        assert burst.crashed_at is not None, f"the receiver was never killed: {burst.statuses()} {burst.errors}"
        unacknowledged_at_kill = len(movements) - len(burst.acknowledged())
        assert unacknowledged_at_kill > 0, "the kill came after the burst"
        # Before anything is sent again: what was acknowledged before and during the kill is committed.
        assert_acknowledged_kept(pg_dsn, burst.acknowledged(), "after the receiver was killed")
        outage = burst.during_outage()
        assert len(outage) >= 40
        assert all(a.status is None for a in outage), Counter(a.status for a in outage)
        restart = receiver.start()
        burst.resume()
        burst.join()
        rounds = burst.redeliver(movements)
        recovery = burst.first_acknowledged_after(burst.resumed_at)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- receiver log ---\n{tail(receiver.log)}") from exc
    finally:
        receiver.stop()

    committed_unanswered = assert_all_kept_once(pg_dsn, burst, movements)
    answered = [a for a in burst.answers if a.status is not None]
    assert {a.status for a in answered} == {200}, burst.statuses()
    assert_answers_in_time(burst)
    scenario.notes.append(
        f"pushes={len(burst.answers)} by_status={dict(burst.statuses())} redelivery_rounds={rounds} "
        f"committed_unanswered={committed_unanswered} unacknowledged_at_kill={unacknowledged_at_kill} "
        f"receiver_start={first_start:.2f}s "
        f"receiver_restart={restart:.2f}s first_2xx_after_restart={recovery:.3f}s latency[{latency_note(answered)}]"
    )
    print(scenario.notes[-1])


def test_postgres_killed_mid_burst_answers_503_in_time_and_loses_nothing_answered(
    scenario, killable_postgres, tls, tmp_path
):
    movements = make_movements(MOVEMENTS, recipients=RECIPIENTS, seed=27)
    server = killable_postgres
    receiver = ReceiverProcess(
        conn_id=CONN_ID,
        postgres_conn_id="iys_push_crash_pg",
        tls=tls,
        env=receiver_env(scenario.sim, iys_push_crash_pg=server.connection_json()),
        log=tmp_path / "receiver.log",
    )
    scenario.inject(f"SIGKILL of the receiver's PostgreSQL postmaster after {CRASH_AFTER} 2xx answers")
    try:
        receiver.start()
        burst = PushBurst(
            receiver.channel_url, tls.ca_file, crash_after=CRASH_AFTER, crash=server.kill, outage_answers=24
        )
        burst.start(movements)
        wait_for(burst.quiet, "outage answers or the end of the first pass", timeout=300)
        assert burst.crashed_at is not None, f"PostgreSQL was never killed: {burst.statuses()} {burst.errors}"
        unacknowledged_at_kill = len(movements) - len(burst.acknowledged())
        assert unacknowledged_at_kill > 0, "the kill came after the burst"
        outage = burst.during_outage()
        assert len(outage) >= 24
        # While PostgreSQL is down the receiver is up: every answer is a 503, never a 2xx or a 500.
        assert Counter(a.status for a in outage) == {503: len(outage)}, Counter(a.status for a in outage)
        restart = server.start()
        # Before anything is sent again: every 2xx answered before and during the kill survived it.
        assert_acknowledged_kept(server.dsn, burst.acknowledged(), "after PostgreSQL's crash recovery")
        burst.resume()
        burst.join()
        rounds = burst.redeliver(movements)
        recovery = burst.first_acknowledged_after(burst.resumed_at)
        assert receiver.process.poll() is None, "the receiver died with its database"
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- receiver log ---\n{tail(receiver.log)}") from exc
    finally:
        receiver.stop()

    committed_unanswered = assert_all_kept_once(server.dsn, burst, movements)
    assert set(burst.statuses()) <= {200, 503}, burst.statuses()
    assert_answers_in_time(burst)
    scenario.notes.append(
        f"pushes={len(burst.answers)} by_status={dict(burst.statuses())} redelivery_rounds={rounds} "
        f"committed_unanswered={committed_unanswered} unacknowledged_at_kill={unacknowledged_at_kill} "
        f"children_gone_after_kill={burst.crash_result:.2f}s postgres_restart={restart:.2f}s "
        f"first_2xx_after_restart={recovery:.3f}s outage_latency[{latency_note(outage)}] "
        f"all_latency[{latency_note(burst.answers)}]"
    )
    print(scenario.notes[-1])
