"""Two brands of one İYS account under a real scheduler: one rate and one token budget (issue #13).

``airflow standalone`` (LocalExecutor) with ``IYS_CONNECTIONS`` naming two brands, so the DAG
folder holds four DAGs. Both brands' initial syncs are triggered at once, their batches running
in parallel task processes, then both incremental syncs. The İYS connections allow
:data:`HOOK_RATE` requests per second, and the simulator refuses (429) anything above
:data:`SIM_RATE` in any one-second window: were the budget kept per brand (or per DAG), the
two brands together would send twice :data:`HOOK_RATE` and meet 429s.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile
from datetime import datetime

import psycopg
import pytest
import requests
from ui.conftest import ROOT, AirflowStack, _free_port, running_stack, task_states, trigger, wait_for_run

import local_stack

pytestmark = [pytest.mark.stack, pytest.mark.timing]
CONNS = {"iys_brand_a": 700001, "iys_brand_b": 700002}
USERS = 1200
BATCH_SIZE = 100
HOOK_RATE = 2
SIM_RATE = 3
SOURCE_SQL = {
    "iys_brand_a": "SELECT id::text AS user_id, phone, email FROM public.users",
    "iys_brand_b": "SELECT id::text AS user_id, phone, email FROM public.users WHERE id % 2 = 0",
}


@pytest.fixture(scope="module")
def stack(postgres_server_uri, request):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-brands-stack-"))
    dags = workdir / "dags"
    dags.mkdir()
    for name in ("iys_initial_sync", "iys_incremental_sync"):
        (dags / f"{name}.py").symlink_to(ROOT / "dags" / f"{name}.py")
    sim_port = _free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = {
        "AIRFLOW_DAGS_FOLDER": str(dags),
        "IYS_INITIAL_SYNC_CRON": "none",
        "IYS_INCREMENTAL_SYNC_CRON": "none",
        "IYS_SIM_PORT": str(sim_port),
        "IYS_SIM_BRAND_CODES": ",".join(str(code) for code in CONNS.values()),
        "IYS_CONNECTIONS": ",".join(CONNS),
        "IYS_API_CONCURRENCY": "4",
        "AIRFLOW_PARALLELISM": "8",
        "IYS_DEMO_USERS": str(USERS),
        "IYS_PUSH": "0",  # no registration calls: this stack counts every İYS request of the syncs
    }
    template = local_stack.connections("postgresql://unused@127.0.0.1/unused", sim_url, HOOK_RATE)["iys_default"]
    for conn_id, brand in CONNS.items():
        conn = json.loads(json.dumps(template))
        conn["extra"]["brand_code"] = brand
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
        env[f"AIRFLOW_VAR_IYS_RECIPIENTS_SQL__{conn_id.upper()}"] = SOURCE_SQL[conn_id]
    with running_stack(postgres_server_uri, request, workdir, env) as stack:
        requests.post(
            f"{sim_url}/__sim/config", json={"rate_limit_per_second": SIM_RATE}, timeout=10
        ).raise_for_status()
        yield stack


def counters(stack: AirflowStack) -> dict:
    response = requests.get(f"{stack.info['sim_url']}/__sim/counters", timeout=10)
    response.raise_for_status()
    return response.json()


def run_both(stack: AirflowStack, base: str, conf: dict, timeout: float) -> dict[str, str]:
    """Trigger ``base`` of both brands at once; the run id of each DAG, after both succeeded."""
    runs = {f"{base}__{conn_id}": None for conn_id in CONNS}
    for dag_id in runs:
        runs[dag_id] = trigger(stack, dag_id, conf)
    for dag_id, run_id in runs.items():
        state, _ = wait_for_run(stack, dag_id, run_id, timeout=timeout)
        assert state == "success", (dag_id, task_states(stack, dag_id, run_id))
    return runs


def batch_intervals(stack: AirflowStack, runs: dict[str, str]) -> list[tuple[str, datetime, datetime]]:
    intervals = []
    for dag_id, run_id in runs.items():
        tis = stack.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        for ti in tis["task_instances"]:
            if ti["task_id"] == "sync_batch":
                parse = datetime.fromisoformat
                intervals.append((dag_id, parse(ti["start_date"]), parse(ti["end_date"])))
    return intervals


def most_at_once(intervals: list[tuple[str, datetime, datetime]]) -> tuple[int, set[str]]:
    """The most batches running at one instant, and the DAGs they belonged to then."""
    best, dags_then = 0, set()
    for _, start, _ in intervals:
        running = [(dag, s, e) for dag, s, e in intervals if s <= start < e]
        if len(running) > best:
            best, dags_then = len(running), {dag for dag, _, _ in running}
    return best, dags_then


def test_two_brands_at_once_share_one_rate_and_token_budget(stack):
    assert counters(stack)["token_requests"] == 0
    runs = run_both(stack, "iys_initial_sync", {"batch_size": BATCH_SIZE}, timeout=600)

    intervals = batch_intervals(stack, runs)
    assert len(intervals) == USERS // BATCH_SIZE + USERS // 2 // BATCH_SIZE
    at_once, dags_then = most_at_once(intervals)
    # Both brands' batches really ran side by side, more of them than one DAG run allows.
    assert at_once > 4 and len(dags_then) == 2, (at_once, dags_then)

    seen = counters(stack)
    window = (max(e for _, _, e in intervals) - min(s for _, s, _ in intervals)).total_seconds()
    rate = seen["multi_status_calls"] / window
    sys.stderr.write(
        f"\n[brands] {len(intervals)} batches of 2 brands, up to {at_once} at once; {seen['multi_status_calls']} "
        f"multi-status calls in {window:.1f} s = {rate:.2f}/s (limit {HOOK_RATE}/s, İYS here {SIM_RATE}/s); "
        f"429s {seen['http_429']}, token requests {seen['token_requests']}\n"
    )
    assert seen["http_429"] == 0 and seen["h084"] == 0, seen
    assert seen["token_requests"] == 1  # one account: one token for both brands and every worker
    assert rate <= HOOK_RATE * 1.05

    with psycopg.connect(stack.info["pg_dsn"]) as conn:
        users = dict(conn.execute("SELECT brand_code, count(*) FROM iys.user_sources GROUP BY 1").fetchall())
        consents = dict(conn.execute("SELECT brand_code, count(*) FROM iys.consents GROUP BY 1").fetchall())
    assert users == {700001: USERS, 700002: USERS // 2}
    assert consents.keys() == {700001, 700002}

    runs = run_both(stack, "iys_incremental_sync", {}, timeout=300)
    seen = counters(stack)
    assert seen["http_429"] == 0 and seen["h084"] == 0 and seen["token_requests"] == 1, seen
    with psycopg.connect(stack.info["pg_dsn"]) as conn:
        reported = conn.execute("SELECT brand_code, dag_id FROM iys.sync_runs ORDER BY 1").fetchall()
    assert reported == [(700001, "iys_incremental_sync__iys_brand_a"), (700002, "iys_incremental_sync__iys_brand_b")]
