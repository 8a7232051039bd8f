"""DAG integrity: the dags/ folder imports cleanly, without deprecated imports, with the expected shape."""

from __future__ import annotations

import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPECTED_DAGS = {"iys_initial_sync", "iys_incremental_sync"}
#: The tasks that call İYS: bounded per run, and in the configured pool if there is one.
IYS_TASKS = {
    "iys_initial_sync": ("sync_batch",),
    "iys_incremental_sync": (
        "pull_iys_changes",
        "pull_hs_changes",
        "check_new_users",
        "push_consent_updates",
        "wait_for_batch_results",
    ),
}


@pytest.fixture(scope="module")
def dagbag_and_warnings():
    from airflow.dag_processing.dagbag import DagBag

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(ROOT / "dags"), safe_mode=True)
    return bag, caught


def test_no_import_errors(dagbag_and_warnings):
    bag, _ = dagbag_and_warnings
    assert bag.import_errors == {}
    assert EXPECTED_DAGS <= set(bag.dag_ids)


def test_no_deprecation_warnings_from_project_code(dagbag_and_warnings):
    _, caught = dagbag_and_warnings
    project = [
        w
        for w in caught
        if issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)
        and ("/dags/" in w.filename or "iys_provider" in w.filename)
    ]
    assert project == [], [f"{w.filename}:{w.lineno} {w.message}" for w in project]


def test_no_deprecated_airflow_imports_in_source():
    deprecated = (
        "airflow.decorators",
        "airflow.models.baseoperator",
        "airflow.hooks.base",
        "airflow.operators.",
        "airflow.models.param",
        "airflow.utils.task_group",
        "airflow.datasets",
        "from airflow.models import",
    )
    sources = list((ROOT / "dags").rglob("*.py")) + list((ROOT / "include").rglob("*.py"))
    offenders = [(p, d) for p in sources for d in deprecated if d in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_initial_sync_shape(dagbag_and_warnings):
    bag, _ = dagbag_and_warnings
    dag = bag.dags["iys_initial_sync"]
    assert dag.max_active_runs == 1
    assert {"rescan", "batch_size", "iys_conn_id", "postgres_conn_id", "dry_run"} <= set(dag.params)
    batch = dag.get_task("sync_batch")
    assert batch.pool == "default_pool"  # no set-up beyond the two connections (issue #12)
    assert batch.max_active_tis_per_dagrun == 4
    assert dag.max_active_tasks == 5
    assert "batch" in (batch.map_index_template or "")
    assert dag.timetable.expression == "0 1 * * *"
    assert str(dag.timetable.timezone) == "Europe/Istanbul"


def test_incremental_sync_shape(dagbag_and_warnings):
    bag, _ = dagbag_and_warnings
    dag = bag.dags["iys_incremental_sync"]
    assert dag.max_active_runs == 1
    assert dag.timetable.expression == "0 2 * * *"
    assert {"iys_conn_id", "postgres_conn_id", "max_pull_gap_hours"} <= set(dag.params)
    sensor = dag.get_task("wait_for_batch_results")
    assert sensor.mode == "reschedule"
    iys_tasks = [dag.get_task(t) for t in IYS_TASKS["iys_incremental_sync"]]
    assert {t.pool for t in iys_tasks} == {"default_pool"}
    assert {t.max_active_tis_per_dagrun for t in iys_tasks} == {4}
    assert dag.get_task("announce_consent_changes").outlets
    # Users who leave and retention run every night, and never hold back the push.
    for task_id in ("forget_leavers", "apply_retention"):
        assert dag.get_task(task_id).trigger_rule == "all_done"
    # An unusual outbox volume waits for a person between them; the gate runs whatever failed before.
    assert dag.get_task("forget_leavers").downstream_task_ids == {"approve_unusual_volume"}
    approval = dag.get_task("approve_unusual_volume")
    assert approval.downstream_task_ids == {"push_consent_updates"}
    assert (approval.trigger_rule, approval.retries) == ("all_done", 0)
    assert dag.get_task("push_consent_updates").trigger_rule == "all_done"
    assert {"approval_max_updates", "approval_max_share", "acknowledge_overdue_rets"} <= set(dag.params)
    assert dag.params["consent_events_retention_days"] is None
    assert dag.params["finished_updates_retention_days"] is None


def test_retention_defaults_come_from_the_environment_and_are_checked(monkeypatch):
    from iys_provider.dags.incremental_sync import build_incremental_sync_dag

    monkeypatch.setenv("IYS_CONSENT_EVENTS_RETENTION_DAYS", "90")
    monkeypatch.setenv("IYS_FINISHED_UPDATES_RETENTION_DAYS", "365")
    dag = build_incremental_sync_dag()
    assert (dag.params["consent_events_retention_days"], dag.params["finished_updates_retention_days"]) == (90, 365)

    monkeypatch.setenv("IYS_CONSENT_EVENTS_RETENTION_DAYS", "3")
    with pytest.raises(ValueError, match="consent_events_retention_days must be at least 8 days"):
        build_incremental_sync_dag()


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_a_configured_pool_is_checked_before_any_task_waits_on_it(dag_id, monkeypatch):
    """IYS_POOL puts the İYS tasks in that pool; a probe in it and a gate before them fail the run fast if it is missing."""
    from iys_provider.dags.common import IysConcurrency
    from iys_provider.dags.incremental_sync import build_incremental_sync_dag
    from iys_provider.dags.initial_sync import build_initial_sync_dag
    from iys_provider.operators.pool_check import POOL_CHECK_TASK_ID, POOL_PROBE_TASK_ID, POOL_WAIT_TASK_ID

    monkeypatch.setenv("IYS_POOL", "iys_api")
    monkeypatch.setenv("IYS_API_CONCURRENCY", "2")
    assert IysConcurrency.from_env() == IysConcurrency(pool="iys_api", max_active=2)
    build = {"iys_initial_sync": build_initial_sync_dag, "iys_incremental_sync": build_incremental_sync_dag}[dag_id]
    dag = build()
    dag.validate()
    assert dag.max_active_tasks == 3
    for task_id in IYS_TASKS[dag_id]:
        task = dag.get_task(task_id)
        assert (task.pool, task.max_active_tis_per_dagrun) == ("iys_api", 2)
        assert POOL_CHECK_TASK_ID in task.get_flat_relative_ids(upstream=True)
    probe, gate = dag.get_task(POOL_PROBE_TASK_ID), dag.get_task(POOL_CHECK_TASK_ID)
    wait = dag.get_task(POOL_WAIT_TASK_ID)
    assert probe.pool == "iys_api" and gate.pool == "default_pool" and wait.pool == "default_pool"
    assert type(probe).__name__ != "EmptyOperator"  # the scheduler finishes those without a pool slot
    assert not probe.upstream_list and not probe.downstream_list
    # The waiter (which skips the rest of the run when the probe gets no slot) comes first, then the gate.
    assert not wait.upstream_list and wait.downstream_task_ids == {POOL_CHECK_TASK_ID}
    assert gate.upstream_task_ids == {POOL_WAIT_TASK_ID}
    # The gate precedes every other task and the run's last tasks depend on it: a failed gate fails the run.
    others = {t.task_id for t in dag.tasks} - {POOL_WAIT_TASK_ID, POOL_CHECK_TASK_ID, POOL_PROBE_TASK_ID}
    assert gate.get_flat_relative_ids(upstream=False) == others
    last = {t.task_id for t in dag.tasks if not t.downstream_list} - {POOL_PROBE_TASK_ID}
    assert last <= gate.downstream_task_ids


def test_pool_missing_message_says_how_to_create_it():
    from iys_provider.operators.pool_check import pool_missing_message

    message = pool_missing_message("iys_api", 300)
    assert 'airflow pools set iys_api 4 "İYS API rate budget"' in message
    assert "unset IYS_POOL" in message


def test_no_pool_means_no_gate(monkeypatch):
    from iys_provider.dags.common import IysConcurrency

    for value in ("", "none", "default_pool"):
        monkeypatch.setenv("IYS_POOL", value)
        assert IysConcurrency.from_env().pool is None
    monkeypatch.setenv("IYS_API_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="IYS_API_CONCURRENCY"):
        IysConcurrency.from_env()


def test_a_queue_pins_the_iys_tasks_and_only_them(monkeypatch):
    """CeleryExecutor: İYS tasks go to the workers whose egress IP İYS whitelisted (IYS_QUEUE)."""
    from iys_provider.dags.incremental_sync import build_incremental_sync_dag
    from iys_provider.dags.initial_sync import build_initial_sync_dag

    monkeypatch.setenv("IYS_QUEUE", "iys_whitelisted")
    for dag in (build_initial_sync_dag(), build_incremental_sync_dag()):
        iys_tasks = set(IYS_TASKS[dag.dag_id])
        queues = {task.task_id: task.queue for task in dag.tasks}
        assert {queues[t] for t in iys_tasks} == {"iys_whitelisted"}
        assert "iys_whitelisted" not in {q for t, q in queues.items() if t not in iys_tasks}
