"""``recipients_sql`` may name a ``.sql`` file: Airflow's templating reads it (and renders Jinja in it)."""

from __future__ import annotations

import pytest
from airflow.sdk import DAG

from iys_provider.operators.initial_sync import IysPlanInitialSyncOperator
from iys_provider.operators.new_users import IysCheckNewUsersOperator

QUERY = (
    "SELECT id::text AS user_id, mobile AS phone, NULL AS email FROM crm.customers WHERE brand = '{{ params.brand }}'"
)


@pytest.mark.parametrize("operator", [IysPlanInitialSyncOperator, IysCheckNewUsersOperator])
def test_a_sql_file_is_read_from_the_template_searchpath(tmp_path, operator):
    (tmp_path / "customers.sql").write_text(QUERY + "\n")
    with DAG("recipients_sql_file", schedule=None, template_searchpath=[str(tmp_path)], params={"brand": "acme"}):
        task = operator(task_id="users", recipients_sql="customers.sql")
    task.render_template_fields(context={"params": {"brand": "acme"}})
    assert task.recipients_sql.strip() == QUERY.replace("{{ params.brand }}", "acme")


@pytest.mark.parametrize("operator", [IysPlanInitialSyncOperator, IysCheckNewUsersOperator])
def test_an_inline_query_and_no_query_stay_as_given(operator):
    with DAG("recipients_sql_inline", schedule=None):
        inline = operator(task_id="inline", recipients_sql="SELECT id AS user_id, phone FROM public.users")
        default = operator(task_id="default")
    for task in (inline, default):
        task.render_template_fields(context={})
    assert inline.recipients_sql == "SELECT id AS user_id, phone FROM public.users"
    assert default.recipients_sql is None  # the Variable or the default query is read at execution
