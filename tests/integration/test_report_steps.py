"""A step added to the incremental run is in its report and its ``iys.sync_runs`` row, the report operator unchanged."""

from __future__ import annotations

import json
import pathlib

import pytest
from incremental_support import DAVE, add_update, make_feed_visible, seed

from tests_support import task_states

TEST_DAGS = pathlib.Path(__file__).resolve().parents[1] / "extra_step_dags"
WITH_A_COUNTING_STEP = "iys_incremental_sync_with_a_counting_step"
WITH_A_FAILING_STEP = "iys_incremental_sync_with_a_failing_step"
#: What the added step of the test DAGs returns: a kind the report has never heard of.
WIDGETS = {"step": "widget_count", "widgets_counted": 3, "widgets_ignored": 1}


@pytest.fixture
def test_dag_bundle(monkeypatch):
    """The project's DAGs and the test DAGs, each folder a bundle (dag.test() serialises a DAG from its bundle)."""
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "iys-test-dags", "classpath": local, "kwargs": {"path": str(TEST_DAGS)}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))


def _parsed(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(TEST_DAGS), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def report_xcom(run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        (row,) = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, task_ids="report", key="return_value")
        ).all()
        return XComModel.deserialize_value(row)


def _one_opt_out(sim, pg) -> None:
    """Dave holds ARAMA ONAY in İYS and withdraws it: the run pushes one RET (a figure of a known step)."""
    pg.execute("INSERT INTO public.users VALUES ('dave', '0532 111 00 04', 'dave@example.com')")
    seed(sim, (DAVE, "ARAMA", "ONAY"))
    make_feed_visible(sim)
    add_update(pg, DAVE, "RET", type_="ARAMA")


def test_a_step_added_before_the_report_is_recorded_with_its_result(airflow_db, test_dag_bundle, synced, pg):
    _one_opt_out(synced, pg)
    dag = _parsed(WITH_A_COUNTING_STEP)
    assert "count_widgets" in dag.get_task("report").upstream_task_ids

    run = dag.test()

    assert run.state == "success", task_states(run)
    pushed, details = pg.execute(
        "SELECT pushed, details FROM iys.sync_runs WHERE dag_id = %s", (dag.dag_id,)
    ).fetchone()
    assert details["other_steps"] == {"count_widgets": WIDGETS}
    assert details["failed_steps"] == []
    assert pushed == 1  # the known steps are still read into their columns
    assert report_xcom(run)["other_steps"] == {"count_widgets": WIDGETS}


def test_a_failed_added_step_fails_the_run_by_name_after_the_row_is_written(airflow_db, test_dag_bundle, synced, pg):
    _one_opt_out(synced, pg)

    run = _parsed(WITH_A_FAILING_STEP).test()

    states = task_states(run)
    assert run.state == "failed", states
    assert states["count_widgets"] == ["failed(try 1)"] and states["report"] == ["failed(try 1)"], states
    failed_steps, other_steps, pushed = pg.execute(
        "SELECT details->'failed_steps', details->'other_steps', pushed FROM iys.sync_runs WHERE dag_id = %s",
        (WITH_A_FAILING_STEP,),
    ).fetchone()
    assert (failed_steps, other_steps, pushed) == (["count_widgets"], {}, 1)
