"""The public operators as a DAG author meets them: keyword-only, templated fields, hook settings, no I/O."""

from __future__ import annotations

import pytest

from iys_provider.assets import CONSENTS_ASSET
from iys_provider.operators.changes import IysPullChangesOperator
from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator
from iys_provider.operators.initial_sync import (
    IysFinishInitialSyncOperator,
    IysInitialSyncBatchOperator,
    IysPlanInitialSyncOperator,
)
from iys_provider.operators.new_users import IysCheckNewUsersOperator
from iys_provider.operators.report import IysAnnounceConsentChangesOperator, IysSyncReportOperator

OPERATORS = [
    (IysPullChangesOperator, {}),
    (IysPushConsentUpdatesOperator, {}),
    (IysPlanInitialSyncOperator, {}),
    (IysInitialSyncBatchOperator, {"batch": {"scan_id": 1, "batch_no": 1}}),
    (IysFinishInitialSyncOperator, {}),
    (IysCheckNewUsersOperator, {}),
    (IysSyncReportOperator, {"pull_task_ids": ["pull"]}),
    (IysAnnounceConsentChangesOperator, {"report_task_id": "report"}),
]


@pytest.mark.parametrize(("operator", "required"), OPERATORS, ids=lambda v: getattr(v, "__name__", ""))
def test_connections_are_templated_and_the_hook_takes_hook_params(operator, required, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_IYS_DEFAULT", raising=False)  # nothing may be looked up here
    task = operator(task_id="t", iys_conn_id="my_iys", hook_params={"max_attempts": 2, "brand_code": 42}, **required)
    assert {"iys_conn_id", "postgres_conn_id"} <= set(task.template_fields)
    hook = task.iys_hook  # built without I/O: no connection lookup, no session
    assert (hook.iys_conn_id, hook.max_attempts, hook._brand_code_override) == ("my_iys", 2, 42)
    assert "connection" not in hook.__dict__ and "session" not in hook.__dict__


@pytest.mark.parametrize(("operator", "required"), OPERATORS, ids=lambda v: getattr(v, "__name__", ""))
def test_arguments_are_keyword_only(operator, required):
    with pytest.raises(TypeError):
        operator("t", **required)


def test_the_announce_operator_updates_the_asset_it_is_given():
    from airflow.sdk import Asset

    brand_b = Asset(name="iys_consents_b", uri="iys://consents/b/")
    assert IysAnnounceConsentChangesOperator(task_id="a", report_task_id="r").outlets == [CONSENTS_ASSET]
    task = IysAnnounceConsentChangesOperator(task_id="b", report_task_id="r", asset=brand_b)
    assert task.outlets == [brand_b] and task.asset is brand_b


def test_push_settings_from_seconds():
    task = IysPushConsentUpdatesOperator(
        task_id="push", future_tolerance_seconds=60, clock_skew_seconds=3, max_batch_age_seconds=120
    )
    assert (
        task.future_tolerance.total_seconds(),
        task.clock_skew.total_seconds(),
        task.max_batch_age.total_seconds(),
    ) == (
        60,
        3,
        120,
    )
