"""İYS's retry policy under a real scheduler: a refusal is not retried, a busy İYS is retried after its
``Retry-After``, a token block is waited out.

``airflow standalone`` (LocalExecutor) with the DAGs of tests/retry_policy_dags/: one change-feed
pull each, ``retries=2`` and a retry delay of two seconds. The simulator's control knobs cause the
failures: a client error on the change feed, a 503 or 429 with ``Retry-After`` on it, and a real H084 (a token quota of one an hour, spent
by another client on the IP; then the quota back while the simulator's block still runs: a token
call during the block would restart it and be refused again). What the scheduler decided is read from the REST API and, for the retry's
delay (which the API does not show), from the ``task_instance`` row of the stack's metadata
database.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
import time
from datetime import datetime, timedelta

import psycopg
import pytest
import requests
from ui.conftest import ROOT, AirflowStack, _free_port, running_stack, task_states, trigger, wait_for_run

import local_stack

pytestmark = [pytest.mark.stack]
DAGS = ROOT / "tests" / "retry_policy_dags"
CONN_ID = "iys_retry"
REFUSED = "iys_retry_policy_refused"
BLOCKED = "iys_retry_policy_blocked"
BUSY = "iys_retry_policy_busy"
#: The simulator's Retry-After on the busy answers: neither the DAG's two seconds nor the policy's 60-s default.
BUSY_RETRY_AFTER = 7
TASK = "pull_changes"
#: The simulator's H084 block and the connection's (``auth_block_seconds``): as long as each other,
#: as on İYS (an hour), only shorter.
BLOCK_SECONDS = 30
#: What docs/limits.md promises after a block's end before the next try.
MARGIN = timedelta(seconds=15)


@pytest.fixture(scope="module")
def stack(postgres_server_uri, request):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-retry-stack-"))
    dags = workdir / "dags"
    dags.mkdir()
    (dags / "iys_retry_policy.py").symlink_to(DAGS / "iys_retry_policy.py")
    sim_port = _free_port()
    conn = local_stack.connections("postgresql://unused@127.0.0.1/unused", f"http://127.0.0.1:{sim_port}", 5)[
        "iys_default"
    ]
    conn["extra"]["auth_block_seconds"] = BLOCK_SECONDS
    env = {
        "AIRFLOW_DAGS_FOLDER": str(dags),
        "IYS_SIM_PORT": str(sim_port),
        "IYS_PUSH": "0",  # no registration calls: this stack counts every İYS request
        "IYS_DEMO_USERS": "20",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn),
    }
    with running_stack(postgres_server_uri, request, workdir, env) as stack:
        stack.metadata_dsn = local_stack.ensure_database(postgres_server_uri, stack.databases[1])
        yield stack


def sim(stack: AirflowStack, action: str, payload: dict | None = None) -> dict:
    url = f"{stack.info['sim_url']}/__sim/{action}"
    response = requests.get(url, timeout=10) if payload is None else requests.post(url, json=payload, timeout=10)
    response.raise_for_status()
    return response.json()


def tries(stack: AirflowStack, dag_id: str, run_id: str) -> list[dict]:
    found = stack.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}/tries")["task_instances"]
    return sorted(found, key=lambda t: t["try_number"])


def wait_for_state(stack: AirflowStack, dag_id: str, run_id: str, state: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = stack.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}")
        if ti["state"] == state:
            return ti
        assert ti["state"] not in ("success", "failed"), ti
        time.sleep(1)
    pytest.fail(f"{dag_id}.{TASK} not {state} after {timeout} s: {task_states(stack, dag_id, run_id)}")


def scheduler_row(stack: AirflowStack, dag_id: str, run_id: str) -> tuple:
    with psycopg.connect(stack.metadata_dsn) as conn:
        return conn.execute(
            "SELECT state, try_number, end_date, retry_delay_override, retry_reason FROM task_instance "
            "WHERE dag_id = %s AND run_id = %s AND task_id = %s",
            (dag_id, run_id, TASK),
        ).fetchone()


def forget_tokens(stack: AirflowStack) -> None:
    """No cached token: the next task asks İYS for one."""
    with psycopg.connect(stack.info["pg_dsn"], autocommit=True) as conn:
        conn.execute("DELETE FROM iys.api_tokens")
        conn.execute("DELETE FROM iys.ip_blocks")


def test_a_client_error_is_not_retried_though_the_task_has_retries(stack):
    sim(stack, "requests/reset", {})
    sim(stack, "faults", {"fail_next": [{"path_contains": "consents/changes", "status": 400, "code": "H097"}]})

    run_id = trigger(stack, REFUSED)
    state, _ = wait_for_run(stack, REFUSED, run_id, timeout=300)

    assert state == "failed"
    assert [(t["try_number"], t["state"]) for t in tries(stack, REFUSED, run_id)] == [(1, "failed")]
    row_state, try_number, _, _, _ = scheduler_row(stack, REFUSED, run_id)
    assert (row_state, try_number) == ("failed", 1)
    # İYS was asked once: no second client error against the IP's success ratio.
    feed_calls = [r for r in sim(stack, "requests")["requests"] if r["endpoint"] == "changes"]
    assert [r["status"] for r in feed_calls] == [400]


@pytest.mark.parametrize(("status", "code"), [(503, "H192"), (429, "H124")])
def test_a_busy_iys_is_retried_after_its_retry_after(stack, status, code):
    sim(stack, "requests/reset", {})
    busy = {"path_contains": "consents/changes", "status": status, "code": code, "retry_after": BUSY_RETRY_AFTER}
    sim(stack, "faults", {"fail_next": [busy]})

    run_id = trigger(stack, BUSY)
    state, _ = wait_for_run(stack, BUSY, run_id, timeout=300)

    assert state == "success", task_states(stack, BUSY, run_id)
    first, second = tries(stack, BUSY, run_id)
    assert (first["try_number"], second["try_number"], second["state"]) == (1, 2, "success")
    # What the scheduler decided after try 1: İYS's Retry-After, not the task's two seconds nor the
    # policy's 60-s default for a busy answer without one.
    with psycopg.connect(stack.metadata_dsn) as conn:
        delay_seconds, reason = conn.execute(
            "SELECT retry_delay_override, retry_reason FROM task_instance_history "
            "WHERE dag_id = %s AND run_id = %s AND task_id = %s AND try_number = 1",
            (BUSY, run_id, TASK),
        ).fetchone()
    assert delay_seconds == BUSY_RETRY_AFTER and f"HTTP {status}" in reason, (delay_seconds, reason)
    waited = datetime.fromisoformat(second["start_date"]) - datetime.fromisoformat(first["end_date"])
    assert waited >= timedelta(seconds=BUSY_RETRY_AFTER), waited
    # One busy answer (the hook made one attempt), then try 2's pull answered (204: nothing new).
    feed = [r["status"] for r in sim(stack, "requests")["requests"] if r["endpoint"] == "changes"]
    assert feed[0] == status and feed[1:] and set(feed[1:]) <= {200, 204}, feed


def test_a_token_block_is_waited_out_before_the_next_try(stack):
    forget_tokens(stack)
    # A fresh token quota of one an hour, spent by another client on this IP: the task's token call
    # exceeds it and starts the simulator's block.
    sim(stack, "reset", {"keep_config": True})
    sim(stack, "config", {"token_limit_per_hour": 1, "token_block_seconds": BLOCK_SECONDS})
    spent = requests.post(
        f"{stack.info['sim_url']}/oauth2/token",
        data={"grant_type": "password", "username": local_stack.SIM_USERNAME, "password": local_stack.SIM_PASSWORD},
        timeout=10,
    )
    assert spent.status_code == 200, spent.text
    sim(stack, "requests/reset", {})
    sim(stack, "counters/reset", {})

    run_id = trigger(stack, BLOCKED)
    wait_for_state(stack, BLOCKED, run_id, "up_for_retry", timeout=300)
    # The first try asked for a token once, was refused, and made no other call.
    assert [(r["endpoint"], r["status"]) for r in sim(stack, "requests")["requests"]] == [("token", 429)]
    with psycopg.connect(stack.info["pg_dsn"]) as conn:
        (blocked_until,) = conn.execute("SELECT blocked_until FROM iys.ip_blocks").fetchone()
    state, try_number, ended, delay_seconds, reason = scheduler_row(stack, BLOCKED, run_id)
    assert (state, try_number) == ("up_for_retry", 1)
    # The scheduler's next try: the block's end the package recorded, plus the margin (not 2 s).
    next_try = ended + timedelta(seconds=delay_seconds)
    assert abs(next_try - (blocked_until + MARGIN)) < timedelta(seconds=2), (next_try, blocked_until, reason)
    assert "blocked until" in reason

    # Quota back; the simulator's own block still runs, and a token call before its end restarts it.
    sim(stack, "config", {"token_limit_per_hour": 100})
    state, _ = wait_for_run(stack, BLOCKED, run_id, timeout=BLOCK_SECONDS + 240)

    assert state == "success", task_states(stack, BLOCKED, run_id)
    first, second = tries(stack, BLOCKED, run_id)
    assert second["state"] == "success" and first["try_number"] == 1
    assert datetime.fromisoformat(second["start_date"]) >= blocked_until + MARGIN - timedelta(seconds=1)
    seen = sim(stack, "counters")
    sys.stderr.write(
        f"\n[retry policy] block recorded until {blocked_until:%H:%M:%S.%f}; try 1 ended {ended:%H:%M:%S.%f}, "
        f"retry delay {delay_seconds:.1f} s -> next try {next_try:%H:%M:%S.%f}; try 2 started "
        f"{second['start_date']}; İYS counters: h084 {seen['h084']}, token requests {seen['token_requests']}\n"
    )
    assert seen["h084"] == 1 and seen["token_requests"] == 2, seen
    endpoints = [(r["endpoint"], r["status"]) for r in sim(stack, "requests")["requests"]]
    assert endpoints[:2] == [("token", 429), ("token", 200)]
