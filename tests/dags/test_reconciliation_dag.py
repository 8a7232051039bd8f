"""DAG integrity of ``iys_reconciliation``: parsed from dags/, its shape, per-brand ids, pool and Params."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DAY_TASKS = ("day.compare_summary", "day.wait_for_hash", "day.reconcile_day")


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"), safe_mode=True)
    assert bag.import_errors == {}
    return bag.dags["iys_reconciliation"]


def test_shape(dag):
    assert dag.max_active_runs == 1
    assert dag.timetable.expression == "0 5 * * *"  # after the incremental sync at 02:00
    assert str(dag.timetable.timezone) == "Europe/Istanbul"
    assert {
        "iys_conn_id",
        "postgres_conn_id",
        "report_date",
        "archive_location",
        "file_format",
        "hash_wait_minutes",
    } <= set(dag.params)
    assert dag.params["report_date"] is None and dag.params["file_format"] == "auto"  # read İYS's file as it is
    assert dag.params["archive_location"] == "default"  # evidence kept under the Airflow home
    assert dag.params["hash_wait_minutes"] == 15
    sensor = dag.get_task("day.wait_for_hash")
    assert sensor.mode == "reschedule"  # no worker slot held while İYS hashes
    assert sensor.max_wait_minutes == "{{ params.hash_wait_minutes }}"
    assert sensor.trigger_rule == "all_done"  # a failed summary never holds back the hash
    for task_id in DAY_TASKS:
        task = dag.get_task(task_id)
        assert task.map_index_template == "{{ task.report_date }}"
        assert (task.pool, task.max_active_tis_per_dagrun) == ("default_pool", 4)
    assert dag.get_task("report").trigger_rule == "all_done"  # reports after every day, failed ones too
    assert dag.get_task("report").upstream_task_ids == {"day.reconcile_day"}
    assert dag.get_task("announce_consent_changes").outlets
    assert "day.wait_for_hash" in dag.get_task("day.reconcile_day").upstream_task_ids


def test_one_reconciliation_dag_per_brand(monkeypatch):
    from iys_provider.dags.reconciliation import build_reconciliation_dags

    monkeypatch.setenv("IYS_CONNECTIONS", "iys_brand_a,iys_brand_b")
    dags = {d.dag_id: d for d in build_reconciliation_dags()}
    assert set(dags) == {"iys_reconciliation__iys_brand_a", "iys_reconciliation__iys_brand_b"}
    brand_a = dags["iys_reconciliation__iys_brand_a"]
    assert brand_a.params["iys_conn_id"] == "iys_brand_a" and "brand:iys_brand_a" in brand_a.tags
    assert [a.name for a in brand_a.get_task("announce_consent_changes").outlets] == ["iys_consents__iys_brand_a"]


def test_a_configured_pool_is_checked_first(monkeypatch):
    from iys_provider.dags.reconciliation import build_reconciliation_dag
    from iys_provider.operators.pool_check import POOL_CHECK_TASK_ID

    monkeypatch.setenv("IYS_POOL", "iys_api")
    dag = build_reconciliation_dag()
    dag.validate()
    for task_id in DAY_TASKS:
        assert dag.get_task(task_id).pool == "iys_api"
        assert POOL_CHECK_TASK_ID in dag.get_task(task_id).get_flat_relative_ids(upstream=True)


def test_archive_file_format_and_wait_defaults_come_from_the_environment(monkeypatch):
    from iys_provider.dags.reconciliation import build_reconciliation_dag

    monkeypatch.setenv("IYS_RECONCILIATION_ARCHIVE", "s3://aws_default@evidence/iys")
    monkeypatch.setenv("IYS_RECONCILIATION_FILE_FORMAT", "no_header+crlf")
    monkeypatch.setenv("IYS_RECONCILIATION_HASH_WAIT_MINUTES", "5")
    dag = build_reconciliation_dag()
    assert (dag.params["archive_location"], dag.params["file_format"], dag.params["hash_wait_minutes"]) == (
        "s3://aws_default@evidence/iys",
        "no_header+crlf",
        5.0,
    )
    monkeypatch.setenv("IYS_RECONCILIATION_FILE_FORMAT", "tsv")
    with pytest.raises(ValueError, match="IYS_RECONCILIATION_FILE_FORMAT='tsv': unknown reconciliation file format"):
        build_reconciliation_dag()
    monkeypatch.setenv("IYS_RECONCILIATION_FILE_FORMAT", "auto")
    monkeypatch.setenv("IYS_RECONCILIATION_HASH_WAIT_MINUTES", "soon")
    with pytest.raises(ValueError, match="IYS_RECONCILIATION_HASH_WAIT_MINUTES='soon' is not a number of minutes"):
        build_reconciliation_dag()


def test_the_default_archive_is_under_the_airflow_home(monkeypatch, tmp_path):
    from iys_provider.operators.reconciliation import archive_location_of

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    assert archive_location_of("default") == archive_location_of(None) == (tmp_path / "iys-evidence").as_uri()
    assert (
        archive_location_of("None") is None and archive_location_of("") is None and archive_location_of("none") is None
    )
    assert archive_location_of(" s3://aws_default@evidence/iys ") == "s3://aws_default@evidence/iys"
