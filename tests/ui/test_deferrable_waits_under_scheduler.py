"""Deferrable waits under ``airflow standalone`` (LocalExecutor, triggerer): the sync and the reconciliation
complete with ``[iys] deferrable_waits`` on, and their waits really ran on the triggerer.

The simulator holds each wait open until the task is seen ``deferred`` in Airflow's REST API: the
batch results stay ``processing`` (a fault) and the day's hash job stays queued on İYS's clock.
Then the test releases it (fault off, İYS's clock forward) and the trigger's next look ends the
wait; the task resumes on a worker and the run succeeds. The initial sync has no wait to defer;
it runs in the same stack to show the setting changes nothing there.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
import requests
from ui.conftest import ROOT, _free_port, running_stack, task_states, trigger, wait_for_run

import local_stack
from iys_provider.models import IYS_TIMEZONE

pytestmark = pytest.mark.stack
BRAND = local_stack.SIM_BRAND_CODE
CONN_ID = "iys_deferrable"
#: More than the outbox sends one by one (``single_add_threshold``): they go to İYS as a batch.
OPT_OUTS = 60


@pytest.fixture(scope="module")
def stack(postgres_server_uri, request):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-deferrable-stack-"))
    dags = workdir / "dags"
    dags.mkdir()
    for name in ("iys_initial_sync.py", "iys_incremental_sync.py", "iys_reconciliation.py"):
        (dags / name).symlink_to(ROOT / "dags" / name)
    sim_port = _free_port()
    conn = local_stack.connections("postgresql://unused@127.0.0.1/unused", f"http://127.0.0.1:{sim_port}", 8)
    conn["iys_default"]["extra"]["batch_result_delay_seconds"] = 0  # İYS requires 5 minutes
    env = {
        "AIRFLOW_DAGS_FOLDER": str(dags),
        "AIRFLOW__IYS__DEFERRABLE_WAITS": "true",
        "IYS_INITIAL_SYNC_CRON": "none",
        "IYS_INCREMENTAL_SYNC_CRON": "none",
        "IYS_RECONCILIATION_CRON": "none",
        "IYS_DEMO_USERS": "20",
        "IYS_PUSH": "0",
        "IYS_SIM_PORT": str(sim_port),
        # A connection of its own (the stack writes iys_default): results are asked for at once.
        "IYS_CONNECTIONS": CONN_ID,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn["iys_default"]),
        f"AIRFLOW_VAR_IYS_RECIPIENTS_SQL__{CONN_ID.upper()}": "SELECT id::text AS user_id, phone, email FROM public.users",
    }
    with running_stack(postgres_server_uri, request, workdir, env) as stack:
        sim(stack, "config", {"batch_result_delay": 0})
        yield stack


def sim(stack, action: str, payload: dict | None = None) -> dict:
    url = f"{stack.info['sim_url']}/__sim/{action}"
    response = requests.get(url, timeout=30) if payload is None else requests.post(url, json=payload, timeout=30)
    response.raise_for_status()
    return response.json()


def wait_for_deferred(stack, dag_id: str, run_id: str, task_id: str, timeout: float = 300) -> list[dict]:
    """The task's instances (all map indexes) once one of them is ``deferred``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = stack.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?task_id={task_id}")["task_instances"]
        if any(ti["state"] == "deferred" for ti in found):
            return found
        assert not any(ti["state"] in ("failed", "up_for_retry") for ti in found), found
        run_state = stack.api(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        assert run_state in ("queued", "running"), task_states(stack, dag_id, run_id)
        time.sleep(1)
    pytest.fail(f"{task_id} never deferred in {timeout} s: {task_states(stack, dag_id, run_id)}")


def turkey_day(days_ago: int) -> date:
    return datetime.now(UTC).astimezone(IYS_TIMEZONE).date() - timedelta(days=days_ago)


def test_the_sync_and_the_reconciliation_complete_with_their_waits_on_the_triggerer(stack):
    initial = trigger(stack, "iys_initial_sync")
    state, _ = wait_for_run(stack, "iys_initial_sync", initial, timeout=600)
    assert state == "success", task_states(stack, "iys_initial_sync", initial)

    day = turkey_day(3)
    with psycopg.connect(stack.info["pg_dsn"], autocommit=True) as conn:
        phones = [
            r[0]
            for r in conn.execute(
                "SELECT recipient FROM iys.consents WHERE type = 'MESAJ' AND status = 'ONAY' ORDER BY recipient LIMIT 2"
            )
        ]
        # A citizen's RETs three days ago: a day for the reconciliation.
        for phone in phones:
            citizen = {"recipient": phone, "type": "MESAJ", "status": "RET", "source": "IYS_KISAMESAJ"}
            sim(stack, "citizen_change", {**citizen, "creationDate": f"{day} 10:00:00"})
        # The app's opt-outs for numbers İYS holds as ONAY: enough of them to go in a batch.
        opted_out = [f"+90537{n:07d}" for n in range(OPT_OUTS)]
        sim(
            stack,
            "seed",
            {
                "consents": [
                    {
                        "recipient": p,
                        "type": "MESAJ",
                        "status": "ONAY",
                        "consentDate": "2024-03-01 10:00:00",
                        "source": "HS_WEB",
                    }
                    for p in opted_out
                ]
            },
        )
        with conn.cursor().copy(
            "COPY iys.consent_updates (brand_code, recipient, type, status, consent_date, source) FROM STDIN"
        ) as copy:
            for p in opted_out:
                copy.write_row(
                    (BRAND, "0" + p[3:], "MESAJ", "RET", datetime.now(UTC) - timedelta(minutes=5), "HS_MOBIL")
                )

    # The batch's results stay "processing" until the wait is on the triggerer.
    sim(stack, "faults", {"batch_item_status": "processing"})
    incremental = trigger(stack, "iys_incremental_sync")
    deferred = wait_for_deferred(stack, "iys_incremental_sync", incremental, "wait_for_batch_results")
    assert [ti["try_number"] for ti in deferred] == [1]
    sim(stack, "faults", {"batch_item_status": None})
    state, _ = wait_for_run(stack, "iys_incremental_sync", incremental, timeout=600)
    assert state == "success", task_states(stack, "iys_incremental_sync", incremental)
    (waited,) = stack.api(
        f"/dags/iys_incremental_sync/dagRuns/{incremental}/taskInstances/wait_for_batch_results/tries"
    )["task_instances"]
    assert (waited["try_number"], waited["state"]) == (1, "success")  # resumed, not retried or rescheduled
    with psycopg.connect(stack.info["pg_dsn"]) as conn:
        settled = conn.execute(
            "SELECT state, count(*) FROM iys.consent_updates WHERE recipient = ANY(%s) GROUP BY 1",
            (["0" + p[3:] for p in opted_out],),
        ).fetchall()
    assert settled == [("sent", OPT_OUTS)]
    assert sim(stack, f"truth?recipient=%2B{opted_out[0][1:]}&type=MESAJ")["status"] == "RET"

    # İYS's hash jobs take their time (on İYS's clock): the day's wait goes to the triggerer.
    sim(stack, "config", {"reconciliation_queue_seconds": 30, "reconciliation_hash_seconds": 60})
    reconciliation = trigger(stack, "iys_reconciliation")
    waits = wait_for_deferred(stack, "iys_reconciliation", reconciliation, "day.wait_for_hash")
    assert all(ti["try_number"] == 1 for ti in waits if ti["state"] == "deferred")
    sim(stack, "clock", {"advance_seconds": 200})
    state, _ = wait_for_run(stack, "iys_reconciliation", reconciliation, timeout=600)
    assert state == "success", task_states(stack, "iys_reconciliation", reconciliation)
    waited = stack.api(f"/dags/iys_reconciliation/dagRuns/{reconciliation}/taskInstances?task_id=day.wait_for_hash")[
        "task_instances"
    ]
    assert {(ti["state"], ti["try_number"]) for ti in waited} == {("success", 1)}  # resumed, never retried
    with psycopg.connect(stack.info["pg_dsn"]) as conn:
        status, process = conn.execute(
            "SELECT status, process_status FROM iys.reconciliations WHERE brand_code = %s AND report_date = %s",
            (BRAND, day),
        ).fetchone()
    assert (status, process) == ("agreed", "completed")
