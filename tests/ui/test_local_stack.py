"""``make airflow`` (scripts/airflow_local.sh) as a user meets it, under a real scheduler (issue #12).

One stack for the module, with a DAG folder holding ``iys_initial_sync`` and a copy of it whose
İYS tasks are configured to use a pool nobody created:

* no pool is created, and ``iys_initial_sync`` triggered through the REST API runs to success;
* the copy fails fast, its first task naming the pool and the command that creates it;
* a second copy, its İYS tasks in a pool that exists (``default_pool`` named explicitly), passes
  the pool check and runs to success;
* the trigger command the banner prints works in a clean shell (another terminal);
* SIGINT, then SIGINT and SIGTERM again during the shutdown, still stop every process the script
  started and free their ports (last: it ends the stack).
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from ui.conftest import (  # tests/ is on sys.path (pytest.ini)
    running_stack,
    task_states,
    trigger,
    wait_for_run,
)

from iys_provider.operators.pool_check import POOL_CHECK_TASK_ID, POOL_PROBE_TASK_ID, POOL_WAIT_TASK_ID

pytestmark = pytest.mark.stack
ROOT = pathlib.Path(__file__).resolve().parents[2]
DAG_ID = "iys_initial_sync"
MISSING_POOL_DAG_ID = "iys_initial_sync_missing_pool"
MISSING_POOL = "iys_no_such_pool"
POOL_CHECK_SECONDS = 20
MISSING_POOL_DAG = f'''"""Airflow DAG: iys_initial_sync, its İYS tasks in a pool that does not exist (test_local_stack.py)."""
from iys_provider.dags.common import IysConcurrency
from iys_provider.dags.initial_sync import build_initial_sync_dag

dag = build_initial_sync_dag(
    "{MISSING_POOL_DAG_ID}", IysConcurrency(pool="{MISSING_POOL}", pool_check_seconds={POOL_CHECK_SECONDS})
)
'''
EXISTING_POOL_DAG_ID = "iys_initial_sync_existing_pool"
EXISTING_POOL_DAG = f'''"""Airflow DAG: iys_initial_sync, its İYS tasks in a pool that exists (test_local_stack.py)."""
from iys_provider.dags.common import IysConcurrency
from iys_provider.dags.initial_sync import build_initial_sync_dag

dag = build_initial_sync_dag(
    "{EXISTING_POOL_DAG_ID}", IysConcurrency(pool="default_pool", pool_check_seconds={POOL_CHECK_SECONDS})
)
'''


@pytest.fixture(scope="module")
def stack(postgres_server_uri, request):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-local-stack-"))
    dags = workdir / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").symlink_to(ROOT / "dags" / f"{DAG_ID}.py")
    (dags / f"{MISSING_POOL_DAG_ID}.py").write_text(MISSING_POOL_DAG)
    (dags / f"{EXISTING_POOL_DAG_ID}.py").write_text(EXISTING_POOL_DAG)
    env = {"AIRFLOW_DAGS_FOLDER": str(dags), "IYS_INITIAL_SYNC_CRON": "none"}
    with running_stack(postgres_server_uri, request, workdir, env) as stack:
        yield stack


# ---------------------------------------------------------------------------- (1) no pool needed


def test_initial_sync_runs_to_success_without_any_pool(stack):
    assert [p["name"] for p in stack.api("/pools")["pools"]] == ["default_pool"]
    run_id = trigger(stack, DAG_ID)
    state, _ = wait_for_run(stack, DAG_ID, run_id, timeout=300)
    states = task_states(stack, DAG_ID, run_id)
    assert state == "success", states
    assert states["sync_batch"] and set(states["sync_batch"]) == {"success"}
    assert POOL_CHECK_TASK_ID not in states  # no pool configured, nothing to check
    batch = stack.api(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/sync_batch/0")
    assert batch["pool"] == "default_pool"


def test_missing_pool_fails_fast_with_the_command_that_creates_it(stack):
    run_id = trigger(stack, MISSING_POOL_DAG_ID)
    state, seconds = wait_for_run(stack, MISSING_POOL_DAG_ID, run_id, timeout=240)
    states = task_states(stack, MISSING_POOL_DAG_ID, run_id)
    assert state == "failed", states
    assert seconds < POOL_CHECK_SECONDS + 120
    assert states[POOL_WAIT_TASK_ID] == ["success"]  # it skipped the rest of the run
    assert states[POOL_CHECK_TASK_ID] == ["failed"]
    assert states[POOL_PROBE_TASK_ID] == ["skipped"]  # no longer waiting for the missing pool
    assert states["plan_batches"] == ["skipped"]
    log = stack.api(f"/dags/{MISSING_POOL_DAG_ID}/dagRuns/{run_id}/taskInstances/{POOL_CHECK_TASK_ID}/logs/1")
    text = str(log["content"])
    assert f"airflow pools set {MISSING_POOL} 4" in text, text[-3000:]
    assert "unset IYS_POOL" in text


def test_an_existing_pool_passes_the_check_and_the_run_goes_on(stack):
    run_id = trigger(stack, EXISTING_POOL_DAG_ID)
    state, _ = wait_for_run(stack, EXISTING_POOL_DAG_ID, run_id, timeout=300)
    states = task_states(stack, EXISTING_POOL_DAG_ID, run_id)
    assert state == "success", states
    for task_id in (POOL_PROBE_TASK_ID, POOL_WAIT_TASK_ID, POOL_CHECK_TASK_ID, "plan_batches"):
        assert states[task_id] == ["success"], states


# ---------------------------------------------------------------------------- (6) the printed CLI


def test_the_printed_trigger_command_works_from_another_terminal(stack):
    banner = stack.log_file.read_text(errors="replace")
    match = re.search(r"Trigger:\s+(.+?)\s*$", banner, re.MULTILINE)
    assert match, banner[-3000:]
    command = match.group(1)
    before = {r["dag_run_id"] for r in stack.api(f"/dags/{DAG_ID}/dagRuns")["dag_runs"]}
    # Another terminal: none of the stack's Airflow or İYS settings in the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "IYS_", "_AIRFLOW"))}
    env["HOME"] = str(stack.workdir)  # no ~/airflow to fall back on
    result = subprocess.run(shlex.split(command), env=env, cwd="/", capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    after = {r["dag_run_id"] for r in stack.api(f"/dags/{DAG_ID}/dagRuns")["dag_runs"]}
    assert len(after - before) == 1, (before, after, result.stdout)


# ---------------------------------------------------------------------------- (7) repeated signals


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def listening(port: int) -> bool:
    """Whether something accepts connections on the port (a bind test would also trip on TIME_WAIT)."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def child_groups(pid: int) -> list[int]:
    """The process groups the script started (children leading their own group, by setsid), oldest first."""

    def stat(child: int) -> list[str]:
        return pathlib.Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()

    leaders = [
        child
        for child in descendants(pid)
        if alive(child) and int(stat(child)[1]) == pid and os.getpgid(child) == child  # ppid, pgid
    ]
    return sorted(leaders, key=lambda child: int(stat(child)[19]))  # by start time


def test_repeated_signals_during_shutdown_stop_everything(stack):
    script = stack.process
    started = descendants(script.pid)
    assert len(started) >= 4, started  # simulator, standalone and its components
    ports = [int(stack.info[url].rsplit(":", 1)[1]) for url in ("sim_url", "api_url")]
    assert all(listening(port) for port in ports)
    # The script stops its groups newest first, waiting for each. With the newest one frozen (SIGSTOP: it
    # cannot exit), the script is certainly still stopping when the repeated signals arrive, however
    # fast or busy the machine; it is thawed (SIGCONT) once they have.
    held = child_groups(script.pid)[-1]
    os.killpg(held, signal.SIGSTOP)
    try:
        script.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while "stopping" not in stack.log_file.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the log for the script's own word, not waiting for time to pass
        assert "stopping" in stack.log_file.read_text(errors="replace")
        script.send_signal(signal.SIGINT)
        script.send_signal(signal.SIGTERM)
        assert script.poll() is None, "the script should still be stopping its children"
    finally:
        os.killpg(held, signal.SIGCONT)
    script.wait(timeout=120)

    survivors = {pid for pid in started if alive(pid)}
    assert survivors == set(), [pathlib.Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in survivors]
    assert not any(listening(port) for port in ports), ports
    assert "stopped" in stack.log_file.read_text(errors="replace")
