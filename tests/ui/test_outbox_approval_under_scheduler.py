"""A mass opt-out waits for a person, under ``airflow standalone`` (LocalExecutor) and its REST API.

2,000 RETs for addresses İYS holds as ONAY, against ``approval_max_updates`` 1,000: the
incremental run parks ``approve_unusual_volume`` in Airflow's ``awaiting_input`` state with the
rows held, the push sends nothing held, and the answer given through Airflow's REST API decides:
Approve delivers all of them in the same run; Reject leaves them unsent and the run failed.
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import requests
from ui.conftest import ROOT, _free_port, running_stack, task_states, trigger, wait_for_run

import local_stack
from iys_provider.schema import migrate

pytestmark = pytest.mark.stack
CONN_ID = "iys_approval"
DAG_ID = "iys_incremental_sync"  # one brand: the plain id
TASK = "approve_unusual_volume"
RETS = 2000
THRESHOLD = 1000
BRAND = 700001


@pytest.fixture(scope="module")
def stack(postgres_server_uri, request):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-approval-stack-"))
    dags = workdir / "dags"
    dags.mkdir()
    (dags / "iys_incremental_sync.py").symlink_to(ROOT / "dags" / "iys_incremental_sync.py")
    sim_port = _free_port()
    # A connection of its own: batch results are asked for at once (İYS requires 5 minutes).
    conn = local_stack.connections("postgresql://unused@127.0.0.1/unused", f"http://127.0.0.1:{sim_port}", 8)
    conn["iys_default"]["extra"]["batch_result_delay_seconds"] = 0
    env = {
        "AIRFLOW_DAGS_FOLDER": str(dags),
        "IYS_INCREMENTAL_SYNC_CRON": "none",
        "IYS_DEMO_USERS": "20",
        "IYS_PUSH": "0",  # the outbox's İYS calls only
        "IYS_SIM_PORT": str(sim_port),
        "IYS_CONNECTIONS": CONN_ID,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn["iys_default"]),
        f"AIRFLOW_VAR_IYS_RECIPIENTS_SQL__{CONN_ID.upper()}": "SELECT id::text AS user_id, phone, email FROM public.users",
    }
    with running_stack(postgres_server_uri, request, workdir, env) as stack:
        sim = stack.info["sim_url"]
        requests.post(f"{sim}/__sim/config", json={"batch_result_delay": 0}, timeout=10).raise_for_status()
        with psycopg.connect(stack.info["pg_dsn"], autocommit=True) as conn:
            migrate(conn)
        yield stack


def phones(start: int) -> list[str]:
    return [f"+90536{n:07d}" for n in range(start, start + RETS)]


def seed_onay_and_write_rets(stack, numbers: list[str]) -> None:
    """İYS holds each number as ONAY; the app writes a RET for each (as it writes them, national form)."""
    consents = [
        {"recipient": p, "type": "MESAJ", "status": "ONAY", "consentDate": "2024-03-01 10:00:00", "source": "HS_WEB"}
        for p in numbers
    ]
    requests.post(f"{stack.info['sim_url']}/__sim/seed", json={"consents": consents}, timeout=60).raise_for_status()
    when = datetime.now(UTC) - timedelta(minutes=5)
    with psycopg.connect(stack.info["pg_dsn"], autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY iys.consent_updates (brand_code, recipient, type, status, consent_date, source) FROM STDIN"
        ) as copy:
            for p in numbers:
                copy.write_row((BRAND, "0" + p[3:], "MESAJ", "RET", when, "HS_MOBIL"))


def wait_for_task_state(stack, run_id: str, wanted: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ti = stack.api(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}")
        if ti["state"] == wanted:
            return ti
        assert ti["state"] not in ("success", "failed", "skipped"), ti["state"]
        time.sleep(1)
    pytest.fail(f"{TASK} not {wanted} after {timeout} s: {task_states(stack, DAG_ID, run_id)}")


#: How long the question has been open before the test answers it. A person reads first; Airflow
#: 3.3.2's scheduler fails a task answered before it has handled the parking process's exit (the
#: executor's "success" then meets a task queued again: "state changed externally"), an answer
#: within a fraction of a second that no person gives. Seen once in CI; the rows stayed held.
READING_SECONDS = 3


def answer(stack, run_id: str, option: str) -> dict:
    stack.api(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails")  # the request exists
    asked = time.monotonic()
    while time.monotonic() - asked < READING_SECONDS:  # still waiting all along
        assert stack.api(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}")["state"] == "awaiting_input"
        time.sleep(0.5)
    return stack._api(
        "PATCH",
        f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {}},
    )


def outbox_states(stack, numbers: list[str]) -> dict[tuple[str, str | None], int]:
    with psycopg.connect(stack.info["pg_dsn"]) as conn:
        rows = conn.execute(
            "SELECT state, error_code, count(*) FROM iys.consent_updates WHERE recipient = ANY(%s) GROUP BY 1, 2",
            (["0" + p[3:] for p in numbers],),
        ).fetchall()
    return {(state, code): count for state, code, count in rows}


def iys_truth(stack, numbers: list[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for p in numbers[:: RETS // 20]:  # a sample of 20, asked one by one
        truth = requests.get(
            f"{stack.info['sim_url']}/__sim/truth", params={"recipient": p, "type": "MESAJ"}, timeout=10
        ).json()
        seen[truth["status"]] = seen.get(truth["status"], 0) + 1
    return seen


def held_request(stack, run_id: str) -> dict:
    detail = stack.api(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails")
    assert f"{RETS:,}" in detail["subject"] and f"{RETS:,} RET" in detail["body"]
    assert not any(p[3:] in json.dumps(detail) for p in phones(0)[:50])  # masked sample only
    return detail


def test_an_approved_mass_opt_out_is_sent_in_the_same_run(stack):
    numbers = phones(0)
    seed_onay_and_write_rets(stack, numbers)
    run_id = trigger(stack, DAG_ID, {"approval_max_updates": THRESHOLD})

    wait_for_task_state(stack, run_id, "awaiting_input")

    assert outbox_states(stack, numbers) == {("held", None): RETS}
    assert iys_truth(stack, numbers) == {"ONAY": 20}
    assert stack.api(f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"] == "running"
    held_request(stack, run_id)
    answer(stack, run_id, "Approve")

    state, _ = wait_for_run(stack, DAG_ID, run_id, timeout=300)
    assert state == "success", task_states(stack, DAG_ID, run_id)
    assert outbox_states(stack, numbers) == {("sent", None): RETS}
    assert iys_truth(stack, numbers) == {"RET": 20}


def test_a_rejected_mass_opt_out_stays_unsent_and_fails_the_run(stack):
    numbers = phones(RETS)
    seed_onay_and_write_rets(stack, numbers)
    run_id = trigger(stack, DAG_ID, {"approval_max_updates": THRESHOLD})
    wait_for_task_state(stack, run_id, "awaiting_input")
    held_request(stack, run_id)

    answer(stack, run_id, "Reject")

    state, _ = wait_for_run(stack, DAG_ID, run_id, timeout=300)
    states = task_states(stack, DAG_ID, run_id)
    assert state == "failed", states
    assert states[TASK] == ["failed"] and states["push_consent_updates"] == ["success"]
    assert outbox_states(stack, numbers) == {("held", "NOT_APPROVED"): RETS}
    assert iys_truth(stack, numbers) == {"ONAY": 20}


def test_a_mass_opt_out_nobody_answers_fails_the_run_and_stays_held(stack):
    numbers = phones(2 * RETS)
    seed_onay_and_write_rets(stack, numbers)
    # 0.005 h = 18 s: the scheduler's sweep (every 15 s) ends the wait.
    run_id = trigger(stack, DAG_ID, {"approval_max_updates": THRESHOLD, "approval_timeout_hours": 0.005})
    wait_for_task_state(stack, run_id, "awaiting_input")

    state, _ = wait_for_run(stack, DAG_ID, run_id, timeout=300)

    states = task_states(stack, DAG_ID, run_id)
    assert state == "failed", states
    assert states[TASK] == ["failed"] and states["push_consent_updates"] == ["success"]
    assert outbox_states(stack, numbers) == {("held", None): RETS}  # nothing lost, nothing sent
    assert iys_truth(stack, numbers) == {"ONAY": 20}
