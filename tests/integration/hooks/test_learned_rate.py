"""Issue #14: the request rate every process on one client IP learns together from İYS's 429s.

The simulator's strict one-second window over real HTTP, the shared state in real Postgres. The
rule itself (rate_control.py) is tested without I/O in tests/unit/test_rate_control.py; here: its
SQL, its atomicity across connections, and the hook sending near İYS's limit from several
processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iys_provider.exceptions import IysQuotaExceededError
from iys_provider.hooks.iys import IysHook
from iys_provider.limits.rate_control import RATE_RULE
from iys_provider.limits.shared_state import PostgresSharedState
from iys_provider.models import ConsentType, RecipientType
from iys_provider.schema import migrate
from tests_support import iys_connection_json_with, sim_control

PHONE = "+905321234567"
RULE = RATE_RULE


def state_on(pg_dsn: str) -> PostgresSharedState:
    return PostgresSharedState(lambda: psycopg.connect(pg_dsn))


def fresh_key() -> str:
    return f"learned-{uuid.uuid4().hex}"


def row(pg, key: str) -> tuple[float, int]:
    return pg.execute("SELECT rate, rate_decreases FROM iys.rate_limiter WHERE limiter_key = %s", (key,)).fetchone()


def host(sim) -> str:
    return urlsplit(sim.url).netloc


def onay_seeded(sim) -> None:
    sim_control(
        sim,
        "seed",
        {"consents": [{"recipient": PHONE, "type": "MESAJ", "status": "ONAY", "consentDate": "2024-03-01 10:00:00"}]},
    )


# ----------------------------------------------------------------------------- the SQL of the rule


@pytest.mark.parametrize(("rate", "elapsed", "counted"), [(6.0, 0.5, 0.5), (6.0, 1.0, 1.0), (6.0, 3600.0, 1.0)])
def test_a_reservation_climbs_the_rate_as_the_rule_says(pg_dsn, pg, rate, elapsed, counted):
    state, key, ceiling = state_on(pg_dsn), fresh_key(), 8.0
    try:
        state.reserve_request_slot(key, ceiling)
        pg.execute(
            "UPDATE iys.rate_limiter SET rate = %s, rate_updated_at = clock_timestamp() - make_interval(secs => %s) "
            "WHERE limiter_key = %s",
            (rate, elapsed, key),
        )
        slot = state.reserve_request_slot(key, ceiling)
        expected = RULE.climbed(rate, ceiling, counted)
        # The statement's clock runs on a little past the UPDATE's: a few milliseconds of climb.
        assert slot.rate == pytest.approx(expected, abs=2e-3)
        assert row(pg, key)[0] == pytest.approx(slot.rate)
        assert slot.rate < ceiling
    finally:
        state.close()


@pytest.fixture
def migrated_pg(pg):
    """The session's database with the iys schema, whichever test ran before (or none, as under pytest-xdist)."""
    migrate(pg)
    return pg


CLIMB_SQL = """
SELECT iys.climbed_rate(%(rate)s, %(knee)s, %(ceiling)s, %(elapsed)s, %(max_gap)s, %(tau)s, %(knee_tau)s,
                        %(probe_tau)s, %(knee_share)s)
"""


@settings(
    max_examples=int(os.environ.get("IYS_HYPOTHESIS_EXAMPLES", "2000")) // 10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rate=st.one_of(st.none(), st.floats(min_value=0.1, max_value=20.0)),
    knee=st.one_of(st.none(), st.floats(min_value=0.1, max_value=20.0)),
    ceiling=st.floats(min_value=0.1, max_value=20.0),
    elapsed=st.floats(min_value=-5.0, max_value=5.0),
)
def test_the_sql_climb_is_the_rules_climb(migrated_pg, rate, knee, ceiling, elapsed):
    """iys.climbed_rate (V016) runs before every request; RateRule.climbed is what the docs and tests reason about."""
    pg = migrated_pg
    parameters = {
        "rate": rate,
        "knee": knee,
        "ceiling": ceiling,
        "elapsed": elapsed,
        "max_gap": RULE.climb_max_gap_seconds,
        "tau": RULE.climb_time_constant_seconds,
        "knee_tau": RULE.knee_time_constant_seconds,
        "probe_tau": RULE.probe_time_constant_seconds,
        "knee_share": RULE.knee_share,
    }
    expected = ceiling if rate is None else RULE.climbed(rate, ceiling, elapsed, knee)
    assert pg.execute(CLIMB_SQL, parameters).fetchone()[0] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_a_decrease_records_its_knee_and_the_next_reservations_climb_quickly_towards_it(pg_dsn, pg):
    state, key, ceiling = state_on(pg_dsn), fresh_key(), 10.0
    try:
        state.reserve_request_slot(key, ceiling)
        pg.execute("UPDATE iys.rate_limiter SET rate = 9.6 WHERE limiter_key = %s", (key,))
        assert state.record_rate_limited(key, ceiling, retry_after=None).rate == pytest.approx(9.12)
        learned = state.learned_rate(key)
        assert (learned.rate, learned.knee) == (pytest.approx(9.12), 9.6)
        # Ten seconds of traffic later (moved back on the database clock rather than waited for),
        # one second of it counts: the quick climb, not the slow one of a key without a knee.
        pg.execute(
            "UPDATE iys.rate_limiter SET rate_updated_at = clock_timestamp() - interval '10 seconds' "
            "WHERE limiter_key = %s",
            (key,),
        )
        slot = state.reserve_request_slot(key, ceiling)
        assert slot.rate == pytest.approx(RULE.climbed(9.12, ceiling, 1.0, knee=9.6), abs=1e-3)
        assert slot.rate - 9.12 > 5 * (RULE.climbed(9.12, ceiling, 1.0) - 9.12)
        # A 429 within the same window keeps the knee; the next window's 429 moves it down.
        state.record_rate_limited(key, ceiling, retry_after=None)
        assert state.learned_rate(key).knee == 9.6
    finally:
        state.close()


def test_a_429_for_a_slot_reserved_before_the_last_decrease_lowers_nothing(pg_dsn, pg):
    state, key, ceiling = state_on(pg_dsn), fresh_key(), 10.0
    try:
        early = state.reserve_request_slot(key, ceiling)
        assert state.record_rate_limited(key, ceiling, retry_after=0.0, sent_at_rate=early.rate).decreased
        # A window later (moved back on the database clock), the 429 of another request reserved
        # before that decrease comes back: the decrease already answered its rate.
        pg.execute(
            "UPDATE iys.rate_limiter SET rate_decreased_at = rate_decreased_at - interval '2 seconds' "
            "WHERE limiter_key = %s",
            (key,),
        )
        late = state.record_rate_limited(key, ceiling, retry_after=0.0, sent_at_rate=early.rate)
        assert not late.decreased
        learned = state.learned_rate(key)
        assert (learned.rate, learned.decreases, learned.knee) == (pytest.approx(9.5), 1, 10.0)
        # One sent at today's rate is a new overfull window.
        assert state.record_rate_limited(key, ceiling, retry_after=0.0, sent_at_rate=9.5).decreased
    finally:
        state.close()


def test_slots_are_spaced_at_the_learned_rate_not_the_configured_one(pg_dsn, pg):
    state, key = state_on(pg_dsn), fresh_key()
    try:
        state.reserve_request_slot(key, 10.0)
        pg.execute("UPDATE iys.rate_limiter SET rate = 4.0 WHERE limiter_key = %s", (key,))
        slots = [state.reserve_request_slot(key, 10.0) for _ in range(5)]
        gaps = [b.send_at - a.send_at for a, b in zip(slots, slots[1:], strict=False)]
        # 1/4 s apart on the database clock, converted to ours within a fraction of a millisecond.
        assert all(0.23 <= gap <= 0.27 for gap in gaps), gaps
        assert {round(slot.rate, 2) for slot in slots} == {4.0}
    finally:
        state.close()


def test_a_caller_with_a_lower_ceiling_sends_slower_without_dragging_the_rate_down(pg_dsn, pg):
    state, key = state_on(pg_dsn), fresh_key()
    try:
        assert state.reserve_request_slot(key, 10.0).rate == 10.0
        assert state.reserve_request_slot(key, 2.0).rate == 2.0
        assert state.reserve_request_slot(key, 10.0).rate == 10.0
        assert row(pg, key)[0] == 10.0
    finally:
        state.close()


# ----------------------------------------------------------------------------- 429s across processes


def test_simultaneous_429s_of_many_workers_lower_the_rate_once(pg_dsn, pg):
    """Eight workers, each on its own connection as in its own process, report a 429 at once."""
    workers, key, ceiling = 8, fresh_key(), 10.0
    states = [state_on(pg_dsn) for _ in range(workers)]
    try:
        states[0].reserve_request_slot(key, ceiling)
        for state in states:
            state.learned_rate(key)  # connected and migrated before the start
        start = threading.Barrier(workers)
        verdicts = [None] * workers

        def report(i: int) -> None:
            start.wait()
            verdicts[i] = states[i].record_rate_limited(key, ceiling, retry_after=None)

        threads = [threading.Thread(target=report, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sum(v.decreased for v in verdicts) == 1, verdicts
        assert all(v.rate == pytest.approx(9.5) for v in verdicts), verdicts
        assert row(pg, key) == (pytest.approx(9.5), 1)

        # A full window later (moved back on the database clock rather than waited for), the next
        # 429 lowers it again: 429s that go on are not the same burst.
        pg.execute(
            "UPDATE iys.rate_limiter SET rate_decreased_at = rate_decreased_at - interval '1 second' "
            "WHERE limiter_key = %s",
            (key,),
        )
        assert states[1].record_rate_limited(key, ceiling, retry_after=None).decreased
        assert row(pg, key) == (pytest.approx(9.025), 2)
        assert states[2].learned_rate(key).decreases == 2
    finally:
        for state in states:
            state.close()


@pytest.mark.parametrize(("retry_after", "least", "most"), [(0.8, 0.7, 0.85), (None, 0.08, 0.5)])
def test_a_429_holds_every_process_back_for_retry_after_else_one_slot(pg_dsn, retry_after, least, most):
    reporter, other, key = state_on(pg_dsn), state_on(pg_dsn), fresh_key()
    try:
        other.reserve_request_slot(key, 10.0)
        reported = time.monotonic()
        reporter.record_rate_limited(key, 10.0, retry_after=retry_after)
        slot = other.reserve_request_slot(key, 10.0)
        # Without Retry-After: one slot at the lowered rate (1/9.5 s), not a blanket second.
        assert least <= slot.send_at - reported <= most + (time.monotonic() - reported)
    finally:
        reporter.close()
        other.close()


# ----------------------------------------------------------------------------- through the hook


@pytest.fixture
def fast_connection(sim, monkeypatch):
    """``iys_default`` at 20 requests/s against a simulator that allows far more: 429s come only as injected."""
    sim_control(sim, "config", {"rate_limit_per_second": 1000})
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, rate_limit_per_second=20))
    onay_seeded(sim)
    IysHook().get_brands()  # the token, once, before the threads start
    return sim


def test_a_burst_of_429s_seen_by_several_tasks_lowers_the_shared_rate_once(fast_connection, pg):
    sim = fast_connection
    sim_control(
        sim, "faults", {"fail_next": [{"path_contains": "/status/", "status": 429, "code": "H124", "count": 3}]}
    )
    tasks = 3
    hooks = [IysHook() for _ in range(tasks)]
    for hook in hooks:
        hook.shared_state.learned_rate(host(sim))  # connected before the start
    start = threading.Barrier(tasks)
    failures: list[str] = []

    def one_call(hook: IysHook) -> None:
        try:
            start.wait()
            assert hook.get_onay_recipients([PHONE], ConsentType.MESAJ) == {PHONE}
        except Exception as exc:  # collected and asserted below
            failures.append(repr(exc))

    threads = [threading.Thread(target=one_call, args=(hook,)) for hook in hooks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert sim_control(sim, "counters", method="GET")["h124"] == 3
    assert sum(hook.stats.rate_limited for hook in hooks) == 3
    assert sum(hook.stats.rate_decreases for hook in hooks) == 1
    rate, decreases = row(pg, host(sim))
    # 20 × 0.95, climbed quickly towards the knee (20) for a moment since: well under a second.
    most = RULE.climbed(19.0, 20.0, 1.0, knee=20.0)
    assert decreases == 1 and 19.0 <= rate < most

    # Another process, starting now, sends at the lowered rate.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_one_call_in_a_new_process, args=(dict(os.environ), queue))
    process.start()
    outcome = queue.get(timeout=180)
    process.join(timeout=60)
    assert outcome[0] == "ok", outcome
    # At most one second of climb since (idle time counts for at most that).
    assert rate <= outcome[1] <= RULE.climbed(rate, 20.0, 1.0, knee=20.0) + 1e-9


def _one_call_in_a_new_process(environment: dict, queue) -> None:
    os.environ.update(environment)
    try:
        hook = IysHook()
        hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
        queue.put(("ok", hook.stats.rate))
    except Exception as exc:
        queue.put(("error", repr(exc)))


def test_clean_traffic_climbs_the_rate_back(fast_connection, pg):
    sim = fast_connection
    sim_control(
        sim,
        "faults",
        {"fail_next": [{"path_contains": "/status/", "status": 429, "code": "H124", "count": 1, "retry_after": 0}]},
    )
    hook = IysHook()
    hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
    lowered, decreases = row(pg, host(sim))
    assert decreases == 1
    for _ in range(40):  # two seconds at 20/s, no 429
        hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
    climbed, traffic = pg.execute(
        "SELECT rate, extract(epoch FROM rate_updated_at - rate_decreased_at)::float8 FROM iys.rate_limiter "
        "WHERE limiter_key = %s",
        (host(sim),),
    ).fetchone()
    assert row(pg, host(sim))[1] == 1
    assert traffic >= 1.5
    # The rule's climb over that traffic time: all of it while no gap between two requests reached
    # a second (a stalled machine may make one longer, and idle time does not count).
    expected = _climb(lowered, traffic)
    assert lowered + 0.5 * (expected - lowered) <= climbed <= expected + 1e-9, (lowered, climbed, expected)
    assert hook.stats.rate == pytest.approx(climbed, abs=1e-3)


def _climb(rate: float, seconds: float, ceiling: float = 20.0) -> float:
    """The rule's climb over ``seconds`` of traffic made of steps under a second each, after a 429 at the ceiling."""
    steps = int(seconds) + 1
    for _ in range(steps):
        rate = RULE.climbed(rate, ceiling, seconds / steps, knee=ceiling)
    return rate


def test_an_hourly_quota_429_leaves_the_rate_alone(fast_connection, pg):
    sim = fast_connection
    sim_control(
        sim,
        "faults",
        {"fail_next": [{"path_contains": "/consents/status", "status": 429, "code": "H086", "count": 1}]},
    )
    hook = IysHook()
    with pytest.raises(IysQuotaExceededError):
        hook.get_consent_status(PHONE, ConsentType.MESAJ)
    assert hook.stats.rate_limited == 1
    assert row(pg, host(sim)) == (20.0, 0)


# ----------------------------------------------------------------------------- near İYS's limit

SECONDS = 25
PROCESSES = 3


@pytest.mark.timing
def test_several_processes_share_the_limit_and_every_call_gets_through(sim, monkeypatch):
    """At rate_limit_per_second 10 against İYS's strict 10/s window, with 20–60 ms latency.

    The learned rate starts at 10 (where jitter makes a 429 all but certain) and comes down on the
    429s, shared by all processes. Asserted here, on any machine however busy: every call of every
    process got its answer (each 429 retried to a 200, nothing else refused), and every process
    ends with a learned rate between the rule's floor and the configured ceiling. How close to the
    limit they get and how few 429s it costs depend on the machine: the benchmark
    (bench/bench_rate_limiter.py, ``make bench-limiter``) prints those; this test only prints them.
    """
    sim_control(sim, "config", {"rate_limit_per_second": 10, "latency_ms": 20, "retry_after_header": False})
    sim_control(sim, "faults", {"latency_jitter_ms": 40})
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, rate_limit_per_second=10))
    onay_seeded(sim)
    IysHook().get_brands()  # the token every process reads from Postgres
    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_send_for, args=(dict(os.environ), ready, start, SECONDS, results), daemon=True)
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        assert ready.get(timeout=180) == "ready"
    sim_control(sim, "counters/reset")
    began = time.monotonic()
    start.set()
    outcomes = [results.get(timeout=SECONDS + 180) for _ in procs]
    elapsed = time.monotonic() - began
    for proc in procs:
        proc.join(timeout=60)
    assert all(outcome[0] == "ok" for outcome in outcomes), outcomes
    counters = sim_control(sim, "counters", method="GET")
    accepted = counters["responses_by_status"].get("200", 0)
    print(
        f"{accepted / elapsed:.2f} accepted/s, 429s {counters['http_429']} of {counters['requests']}, "
        f"learned rates {[round(outcome[1], 2) for outcome in outcomes]}"
    )
    calls = sum(outcome[3] for outcome in outcomes)
    assert calls > 0 and accepted == calls, (accepted, calls)  # every call answered, each exactly once
    assert set(counters["responses_by_status"]) <= {"200", "429"}, counters["responses_by_status"]
    assert counters["http_429"] == counters["h124"]  # only the per-second window refused anything
    rates = [outcome[1] for outcome in outcomes]
    assert all(RATE_RULE.floor(10.0) <= rate <= 10 for rate in rates), rates


def _send_for(environment: dict, ready, start, seconds: float, results) -> None:
    os.environ.update(environment)
    try:
        hook = IysHook()
        hook._access_token()  # Postgres and the shared token before the start
        ready.put("ready")
        start.wait()
        began, calls = time.monotonic(), 0
        while time.monotonic() - began < seconds:
            hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
            calls += 1
        results.put(("ok", hook.stats.rate, hook.stats.rate_limited, calls))
        hook.close()
    except Exception as exc:
        ready.put("error")
        results.put(("error", repr(exc)))


def test_a_batch_keeps_its_calls_in_flight_on_kept_connections(fast_connection, caplog):
    """8 status calls in flight (a batch's default: scan_ledger.batch_request_concurrency) fit the
    connection pool: urllib3 neither opens throw-away connections nor warns that its pool is full.

    İYS answering in half a second keeps all 8 in flight at once at 20 requests/s."""
    sim_control(fast_connection, "config", {"latency_ms": 500})
    phones = [f"+90532{i:07d}" for i in range(16_000)]
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        answer = IysHook().get_onay_recipients_by_channel(
            {(RecipientType.BIREYSEL, ConsentType.MESAJ): phones}, concurrency=8
        )
    assert answer == {(RecipientType.BIREYSEL, ConsentType.MESAJ): set()}
    assert [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"] == []
