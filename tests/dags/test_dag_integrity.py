"""DAG integrity: the dags/ folder imports cleanly, without deprecated imports, with the expected shape."""

from __future__ import annotations

import pathlib
import warnings

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPECTED_DAGS = {"iys_initial_sync", "iys_incremental_sync"}


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
    assert batch.pool == "iys_api"
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
    assert all(
        dag.get_task(t).pool == "iys_api" for t in ("pull_iys_changes", "pull_hs_changes", "push_consent_updates")
    )
    assert dag.get_task("announce_consent_changes").outlets
