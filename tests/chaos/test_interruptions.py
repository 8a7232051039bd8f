"""Postgres connections killed mid-batch and mid-page, task processes killed mid-request: reruns complete."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

from chaos.chaos_support import (
    OnRequest,
    assert_brand_promise,
    fresh_world,
    make_feed_visible,
    run_dag,
    sim_events,
    synced_world_with_traffic,
    task_states,
    terminate_task_backends,
)

from tests_support import sim_control


def wait_for(condition, what: str, timeout: float = 180.0, proc=None):
    """Poll a condition (never a fixed sleep): the simulator's counters tell when a request is in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and not proc.is_alive():
            raise AssertionError(f"the task process exited with {proc.exitcode} before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def counters(sim):
    return sim_control(sim, "counters", method="GET")


def retried(run) -> bool:
    return any("try 2" in state for states in task_states(run).values() for state in states)


# --------------------------------------------------------------------------- pg_terminate_backend


def test_postgres_connections_killed_mid_batch(airflow_db, scenario, pg, monkeypatch):
    sim = scenario.sim
    people = fresh_world(sim, pg)
    scenario.inject("pg_terminate_backend of the task's sessions while a batch waits for İYS")
    killed = []
    with monkeypatch.context() as m:
        OnRequest(
            m, path_contains="/status/", nth=4, after=True, action=lambda: killed.append(terminate_task_backends(pg))
        )
        run = run_dag("iys_initial_sync", {"batch_size": 100})
    assert killed and killed[0] >= 1, "no task session was terminated"
    assert run.state == "success", task_states(run)
    assert retried(run), task_states(run)
    assert_brand_promise(pg, sim, people)
    # The interrupted batch wrote nothing half-way: every batch finished exactly once.
    assert pg.execute("SELECT count(*), count(finished_at) FROM iys.initial_sync_batches").fetchone() == (3, 3)


def test_postgres_connections_killed_mid_page(airflow_db, scenario, pg, monkeypatch):
    sim = scenario.sim
    people, traffic = synced_world_with_traffic(sim, pg, feed_visible=False)
    # Enough movements for three pages of the IYS stream.
    sim_control(
        sim,
        "seed",
        {
            "emit_events": True,
            "consents": [
                {
                    "recipient": f"+9053330{i:05d}",
                    "type": "MESAJ",
                    "status": "ONAY",
                    "source": "IYS_MOBIL",
                    "consentDate": "2024-03-01 10:00:00",
                }
                for i in range(2300)
            ],
        },
    )
    make_feed_visible(sim)
    expected_events = {e["transactionId"] for e in sim_events(sim)}
    scenario.inject("pg_terminate_backend while the 2nd change page is being fetched")
    killed = []
    with monkeypatch.context() as m:
        OnRequest(
            m,
            path_contains="/consents/changes",
            nth=2,
            after=True,
            action=lambda: killed.append(terminate_task_backends(pg)),
        )
        run = run_dag("iys_incremental_sync")
    assert killed and killed[0] >= 1
    assert run.state == "success", task_states(run)
    assert retried(run), task_states(run)
    assert_brand_promise(pg, sim, people + traffic.new_users, expected_event_ids=expected_events, traffic=traffic)


# --------------------------------------------------------------------------- SIGKILL of a task process


def _run_batch(batch: dict) -> None:
    from iys_provider.operators.initial_sync import IysInitialSyncBatchOperator

    IysInitialSyncBatchOperator(task_id="sync_batch", batch=batch).execute(context={})


def _run_push(sim_url: str) -> None:
    """The push task; İYS becomes slow just as the first write leaves (so the kill lands mid-request)."""
    import requests

    from iys_provider.hooks.iys import IysHook
    from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator

    original = IysHook._send

    def send(self, method, path, **kwargs):
        if path.startswith("/v2/"):
            requests.post(f"{sim_url}/__sim/faults", json={"latency_ms": 1500}, timeout=10).raise_for_status()
        return original(self, method, path, **kwargs)

    IysHook._send = send
    IysPushConsentUpdatesOperator(task_id="push_consent_updates").execute(context={})


def _spawn(target, *args):
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL


def test_task_process_killed_mid_batch(airflow_db, scenario, pg):
    from iys_provider.operators.initial_sync import IysPlanInitialSyncOperator

    sim = scenario.sim
    people = fresh_world(sim, pg)
    batches = IysPlanInitialSyncOperator(task_id="plan_batches", batch_size=100).execute(context={})
    scenario.inject("SIGKILL of a batch task while İYS holds its multi-status request", faults={"latency_ms": 3000})
    proc = _spawn(_run_batch, batches[1])
    wait_for(lambda: counters(sim)["multi_status_calls"] >= 1, "the batch's first multi-status request", proc=proc)
    _kill(proc)
    scenario.calm()
    assert pg.execute("SELECT count(finished_at) FROM iys.initial_sync_batches").fetchone()[0] == 0

    run = run_dag("iys_initial_sync")
    assert run.state == "success", task_states(run)
    assert_brand_promise(pg, sim, people)
    assert pg.execute("SELECT count(*), count(finished_at) FROM iys.initial_sync_scans").fetchone() == (1, 1)


def test_task_process_killed_mid_write(airflow_db, scenario, pg):
    """İYS commits the write of a killed push task; the rerun recognises it instead of sending it again."""
    sim = scenario.sim
    people, traffic = synced_world_with_traffic(sim, pg)
    expected_events = {e["transactionId"] for e in sim_events(sim)}
    before = counters(sim)
    writes_before, sends_before = before["writes"], before["by_endpoint"].get("consent_add_v2", 0)
    scenario.inject("SIGKILL of the push task while İYS holds (and then commits) a write")
    proc = _spawn(_run_push, sim.url)
    wait_for(
        lambda: counters(sim)["by_endpoint"].get("consent_add_v2", 0) > sends_before,
        "the first write request",
        proc=proc,
    )
    _kill(proc)
    # İYS finishes the request it was holding: committed, the answer goes nowhere.
    wait_for(lambda: counters(sim)["writes"] == writes_before + 1, "İYS to commit the held write")
    scenario.calm()
    in_doubt = pg.execute(
        "SELECT count(*) FROM iys.consent_updates WHERE state = 'pending' AND attempts = 1"
    ).fetchone()[0]
    assert in_doubt == 1

    run = run_dag("iys_incremental_sync")
    assert run.state == "success", task_states(run)
    assert_brand_promise(pg, sim, people + traffic.new_users, expected_event_ids=expected_events, traffic=traffic)
