"""The fault matrix: initial sync, then incremental sync (pull + push), each under one kind of fault.

Every scenario runs the real DAGs with ``dag.test()`` against the simulator and Postgres and
ends with the brand promise (see ``chaos_support.assert_brand_promise``).
"""

from __future__ import annotations

import pytest
from chaos.chaos_support import (
    OnRequest,
    assert_brand_promise,
    assert_faults_fired,
    fault_counts,
    fresh_world,
    make_feed_visible,
    make_incremental_traffic,
    run_dag,
    sim_events,
    task_states,
)

from tests_support import sim_control

FLAKY = {
    "error_rate": 0.05,  # 500 H015 / 503 H192
    "drop_rate": 0.02,  # connection closed without an answer
    "latency_jitter_ms": 20,
    "latency_spike_rate": 0.05,
    "latency_spike_ms": 400,
    # A DAG run here makes a dozen requests or more, too few for the rates alone to be sure to
    # inject each kind (the initial sync once met none): every 4th / 7th / 5th request as well.
    "error_every": 4,
    "drop_every": 7,
    "spike_every": 5,
}


def full_cycle(
    scenario,
    pg,
    *,
    initial=None,
    incremental=None,
    during_initial=None,
    during_incremental=None,
    monkeypatch=None,
    fired: tuple[str, ...] = (),
):
    """Initial sync, traffic, incremental sync — faults active during both DAG runs; returns the users.

    ``fired``: the simulator's fault counters that must grow during each DAG run that had faults.
    """
    sim = scenario.sim
    people = fresh_world(sim, pg)
    if initial:
        initial()
    before = fault_counts(sim)
    with monkeypatch.context() as m:
        if during_initial:
            during_initial(m)
        run = run_dag("iys_initial_sync", {"batch_size": 100})
    assert run.state == "success", task_states(run)
    if initial:
        assert_faults_fired(before, fault_counts(sim), fired, "initial sync")
    assert_brand_promise(pg, sim, people)

    faults = sim_control(sim, "faults", method="GET")
    scenario.calm()  # the test's own traffic goes through without faults
    traffic = make_incremental_traffic(sim, pg, people)
    make_feed_visible(sim)
    expected_events = {e["transactionId"] for e in sim_events(sim)}
    sim_control(sim, "faults", {k: v for k, v in faults.items() if k != "fail_next"})
    if incremental:
        incremental()
    before = fault_counts(sim)
    with monkeypatch.context() as m:
        if during_incremental:
            during_incremental(m)
        run = run_dag("iys_incremental_sync")
    assert run.state == "success", task_states(run)
    if incremental:
        assert_faults_fired(before, fault_counts(sim), fired, "incremental sync")
    assert_brand_promise(pg, sim, people + traffic.new_users, expected_event_ids=expected_events, traffic=traffic)
    return people, traffic


def test_baseline_without_faults(airflow_db, scenario, pg, monkeypatch):
    full_cycle(scenario, pg, monkeypatch=monkeypatch)


def test_5xx_drops_and_latency_spikes(airflow_db, scenario, pg, monkeypatch):
    scenario.reseed_faults(20260101)

    def flaky():
        scenario.inject(
            "5% 500/503, 2% dropped connections, 5% +400 ms spikes (and every 4th, 7th, 5th request)", faults=FLAKY
        )

    full_cycle(
        scenario,
        pg,
        initial=flaky,
        incremental=flaky,
        monkeypatch=monkeypatch,
        fired=("injected_errors", "dropped_connections", "latency_spikes"),
    )


def test_write_responses_lost_after_iys_committed(airflow_db, scenario, pg, monkeypatch):
    def lose_answers():
        scenario.inject("next 4 writes committed, answer lost", faults={"drop_after_commit_next": 4})

    _, traffic = full_cycle(
        scenario, pg, incremental=lose_answers, monkeypatch=monkeypatch, fired=("dropped_connections",)
    )
    assert sim_control(scenario.sim, "faults", method="GET")["drop_after_commit_next"] == 0  # all 4 were used


def test_access_token_revoked_mid_run(airflow_db, scenario, pg, monkeypatch):
    sim = scenario.sim

    def revoke(m):
        scenario.inject("access tokens revoked mid-run")
        OnRequest(
            m, path_contains="/status/", nth=3, action=lambda: sim_control(sim, "revoke_tokens", {"refresh": False})
        )

    def revoke_during_pull(m):
        OnRequest(
            m,
            path_contains="/consents/changes",
            nth=1,
            action=lambda: sim_control(sim, "revoke_tokens", {"refresh": False}),
        )

    full_cycle(scenario, pg, during_initial=revoke, during_incremental=revoke_during_pull, monkeypatch=monkeypatch)
    grants = [r[0] for r in pg.execute("SELECT grant_type FROM iys.token_requests ORDER BY id")]
    assert grants.count("refresh_token") == 2, grants  # each revocation cost exactly one refresh


def test_refresh_token_expired_mid_run(airflow_db, scenario, pg, monkeypatch):
    sim = scenario.sim

    def expire(m):
        scenario.inject("access + refresh tokens invalidated mid-run")
        OnRequest(
            m, path_contains="/status/", nth=2, action=lambda: sim_control(sim, "revoke_tokens", {"refresh": True})
        )

    def expire_during_push(m):
        OnRequest(m, path_contains="/v2/", nth=1, action=lambda: sim_control(sim, "revoke_tokens", {"refresh": True}))

    full_cycle(scenario, pg, during_initial=expire, during_incremental=expire_during_push, monkeypatch=monkeypatch)
    grants = [r[0] for r in pg.execute("SELECT grant_type FROM iys.token_requests ORDER BY id")]
    # password, then per expiry: the refused refresh grant and a password grant.
    assert grants == ["password", "refresh_token", "password", "refresh_token", "password"], grants


def test_429_storm(airflow_db, scenario, pg, monkeypatch):
    def storm():
        scenario.inject(
            "İYS limit 5 req/s (client paces 8/s) + bursts of 3×429 per endpoint",
            config={"rate_limit_per_second": 5},
            faults={
                "fail_next": [
                    {"path_contains": path, "status": 429, "code": "H124", "count": 3, "retry_after": 0.2}
                    for path in ("/status/", "/consents/changes", "/v2/", "/consents/status")
                ]
            },
        )

    full_cycle(
        scenario, pg, initial=storm, incremental=storm, monkeypatch=monkeypatch, fired=("injected_errors", "h124")
    )


@pytest.mark.parametrize("hold", ["simulated clock"])
def test_token_endpoint_answers_h084(airflow_db, scenario, pg, monkeypatch, hold, capfd):
    """The run stops making token calls, fails with a clear message, and the next run (after the hour) succeeds."""
    sim = scenario.sim
    people = fresh_world(sim, pg)
    scenario.inject(
        "token endpoint answers 429 H084",
        faults={"fail_next": [{"path_contains": "/oauth2/token", "status": 429, "code": "H084", "count": 1}]},
    )
    run = run_dag("iys_initial_sync", {"batch_size": 100})
    assert run.state == "failed"
    states = task_states(run)
    # Every try of every batch (Airflow's task retries included) hit the shared block, not İYS.
    assert sim_control(sim, "counters", method="GET")["token_requests"] == 1, states
    assert sim_control(sim, "counters", method="GET")["h084"] == 1  # the injected answer, given once
    (blocked_until, reason) = pg.execute("SELECT blocked_until, block_reason FROM iys.ip_blocks").fetchone()
    assert blocked_until is not None and "H084" in reason
    out = capfd.readouterr()
    text = out.out + out.err
    assert "H084" in text and "no token call is made until" in text.lower(), "the failure does not explain the block"
    assert sim_control(sim, "counters", method="GET")["multi_status_calls"] == 0

    # The hour passes (İYS's clock, and our stored block), the next run completes.
    sim_control(sim, "clock", {"advance_seconds": 3601})
    pg.execute("UPDATE iys.ip_blocks SET blocked_until = now() - interval '1 second'")
    run = run_dag("iys_initial_sync")
    assert run.state == "success", task_states(run)
    assert_brand_promise(pg, sim, people)
    assert sim_control(sim, "counters", method="GET")["token_requests"] == 2
