"""Test DAGs: the incremental sync with steps added before its report, the report itself unchanged.

A DAG bundle of its own for ``tests/integration/test_report_steps.py``.
"""

from __future__ import annotations

from airflow.sdk import task

from iys_provider.dags.incremental_sync import build_incremental_sync_dag

WITH_A_COUNTING_STEP = "iys_incremental_sync_with_a_counting_step"
WITH_A_FAILING_STEP = "iys_incremental_sync_with_a_failing_step"


def _with_step_before_report(dag_id: str, *, fails: bool):
    dag = build_incremental_sync_dag(dag_id=dag_id)
    with dag:

        @task(task_id="count_widgets", trigger_rule="all_done")
        def count_widgets() -> dict:
            if fails:
                raise RuntimeError("the widget source is unreachable")
            # A kind of step the report has never heard of, and its figures.
            return {"step": "widget_count", "widgets_counted": 3, "widgets_ignored": 1}

        dag.get_task("apply_retention") >> count_widgets() >> dag.get_task("report")
    return dag


counting_dag = _with_step_before_report(WITH_A_COUNTING_STEP, fails=False)
failing_dag = _with_step_before_report(WITH_A_FAILING_STEP, fails=True)
