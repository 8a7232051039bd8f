"""The reconciliation's operators and sensor as a DAG author meets them: keyword-only, templated, no I/O."""

from __future__ import annotations

import pytest

from iys_provider.operators.reconciliation import (
    IysCompareSummaryOperator,
    IysPlanReconciliationOperator,
    IysReconcileDayOperator,
    IysReconciliationReportOperator,
)
from iys_provider.sensors.reconciliation import IysReconciliationHashSensor

OPERATORS = [
    (IysPlanReconciliationOperator, {}, {"report_date", "archive_location"}),
    (IysCompareSummaryOperator, {"report_date": "2026-11-27"}, {"report_date"}),
    (IysReconciliationHashSensor, {"report_date": "2026-11-27"}, {"report_date", "max_wait_minutes"}),
    (IysReconcileDayOperator, {"report_date": "2026-11-27"}, {"report_date", "archive_location", "file_format"}),
    (IysReconciliationReportOperator, {"report_dates": ["2026-11-27"]}, {"report_dates", "archive_location"}),
]


@pytest.mark.parametrize(("operator", "required", "templated"), OPERATORS, ids=lambda v: getattr(v, "__name__", ""))
def test_templated_fields_and_a_hook_built_without_io(operator, required, templated, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_IYS_DEFAULT", raising=False)  # nothing may be looked up here
    task = operator(task_id="t", iys_conn_id="my_iys", hook_params={"max_attempts": 2, "brand_code": 42}, **required)
    assert {"iys_conn_id", "postgres_conn_id", *templated} <= set(task.template_fields)
    hook = task.iys_hook
    assert (hook.iys_conn_id, hook.max_attempts, hook._brand_code_override) == ("my_iys", 2, 42)
    assert "connection" not in hook.__dict__ and "session" not in hook.__dict__


@pytest.mark.parametrize(("operator", "required", "templated"), OPERATORS, ids=lambda v: getattr(v, "__name__", ""))
def test_arguments_are_keyword_only(operator, required, templated):
    with pytest.raises(TypeError):
        operator("t", **required)


def test_the_hash_sensor_reschedules_and_waits_at_most_its_limit():
    sensor = IysReconciliationHashSensor(task_id="w", report_date="2026-11-27", max_wait_minutes="10")
    assert sensor.mode == "reschedule" and sensor._max_wait().total_seconds() == 600
    assert IysReconciliationHashSensor(task_id="w", report_date="2026-11-27")._max_wait().total_seconds() == 900
    assert sensor.timeout == 6 * 3600


@pytest.mark.parametrize("bad", ["soon", "-1"])
def test_the_hash_sensor_refuses_a_wait_that_is_not_a_number_of_minutes(bad):
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="max_wait_minutes must"):
        IysReconciliationHashSensor(task_id="w", report_date="2026-11-27", max_wait_minutes=bad)._max_wait()


def test_the_report_runs_after_every_day_whatever_happened():
    assert IysReconciliationReportOperator(task_id="r", report_dates=[]).trigger_rule == "all_done"
