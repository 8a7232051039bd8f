"""The İYS retry policy: which failures are tried again and when (limits/retry_policy.py), and that every
İYS operator, sensor and DAG carries it unless the user names another.

The expected delays are what docs/limits.md promises, written out here: a known block end plus 15
seconds, an hour for an unknown block end and for an hourly quota, İYS's ``Retry-After`` or 60 seconds
for a per-second limit or a server fault.
"""

from __future__ import annotations

import pathlib
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk import DAG, ExceptionRetryPolicy, RetryAction, RetryRule

from iys_provider.dags.incremental_sync import build_incremental_sync_dag
from iys_provider.dags.initial_sync import build_initial_sync_dag
from iys_provider.dags.push import build_push_dag
from iys_provider.dags.reconciliation import build_reconciliation_dag
from iys_provider.exceptions import (
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysStepFailure,
    IysSuccessRatioGuardError,
    IysTokenBlockedError,
)
from iys_provider.limits.retry_policy import RetryVerdict, retry_advice
from iys_provider.operators.base import IysBaseOperator, IysRetryPolicy
from iys_provider.operators.changes import IysPullChangesOperator
from iys_provider.sensors.batch_results import IysBatchResultSensor
from iys_provider.sensors.reconciliation import IysReconciliationHashSensor

NOW = datetime(2026, 3, 2, 10, 17, 5, tzinfo=UTC)
MARGIN = timedelta(seconds=15)


def api_error(status: int | None, code: str | None, retry_after: float | None = None, cls=IysApiError) -> IysApiError:
    return cls("refused", status_code=status, code=code, endpoint="/sbs/x", retry_after=retry_after)


# ---------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize("block", [timedelta(minutes=47, seconds=3), timedelta(seconds=20), timedelta(hours=1)])
def test_a_token_block_is_retried_once_it_has_ended(block):
    advice = retry_advice(IysTokenBlockedError("H084", blocked_until=NOW + block), NOW)
    assert advice.verdict is RetryVerdict.RETRY
    assert advice.delay == block + timedelta(seconds=15)


def test_a_block_that_has_just_ended_waits_only_the_margin():
    advice = retry_advice(IysTokenBlockedError("H084", blocked_until=NOW - timedelta(seconds=3)), NOW)
    assert (advice.verdict, advice.delay) == (RetryVerdict.RETRY, timedelta(seconds=15))


def test_a_block_of_unknown_end_waits_an_hour():
    advice = retry_advice(IysTokenBlockedError("H084", blocked_until=None), NOW)
    assert (advice.verdict, advice.delay) == (RetryVerdict.RETRY, timedelta(hours=1))


def test_an_h084_outside_the_token_call_waits_an_hour():
    advice = retry_advice(api_error(429, "H084"), NOW)
    assert (advice.verdict, advice.delay) == (RetryVerdict.RETRY, timedelta(hours=1))


@pytest.mark.parametrize("code", ["H086", "H089"])
def test_an_hourly_quota_is_retried_after_the_hour(code):
    advice = retry_advice(api_error(429, code, retry_after=30, cls=IysQuotaExceededError), NOW)
    assert (advice.verdict, advice.delay) == (RetryVerdict.RETRY, timedelta(hours=1, seconds=15))
    assert code in advice.reason


@pytest.mark.parametrize(
    ("status", "code", "retry_after", "delay"),
    [
        (429, "H124", 7.0, timedelta(seconds=7)),
        (429, "H124", None, timedelta(seconds=60)),
        (429, None, None, timedelta(seconds=60)),
        (500, "H101", None, timedelta(seconds=60)),
        (503, "H192", 12.5, timedelta(seconds=12.5)),
        (502, None, None, timedelta(seconds=60)),
        (500, "H470", None, timedelta(seconds=60)),
    ],
)
def test_a_per_second_limit_or_a_server_fault_gets_a_short_retry(status, code, retry_after, delay):
    advice = retry_advice(api_error(status, code, retry_after), NOW)
    assert (advice.verdict, advice.delay) == (RetryVerdict.RETRY, delay)


@pytest.mark.parametrize(
    "error",
    [
        api_error(422, "H174"),  # a consent older than three business days
        api_error(422, "H175"),
        api_error(422, "H467"),
        api_error(400, "H155"),
        api_error(400, None),
        api_error(404, None),
        api_error(409, "H999"),
        api_error(422, "H168"),
        api_error(401, None, cls=IysAuthError),
        api_error(403, "H031", cls=IysAuthError),
        api_error(400, None, cls=IysAuthError),  # the token grant refused
        api_error(200, None, cls=IysMalformedResponseError),  # a body not of the documented shape
        api_error(None, None, cls=IysMalformedResponseError),
        api_error(404, None, cls=IysMalformedResponseError),
        IysSuccessRatioGuardError("ratio 0.64", endpoint="/sbs/x", ratio=0.64),
        IysStepFailure("the 7-day window is lost"),
    ],
    ids=lambda e: f"{type(e).__name__}-{getattr(e, 'status_code', '')}-{getattr(e, 'code', '')}",
)
def test_refusals_client_errors_and_the_guard_fail_at_once(error):
    advice = retry_advice(error, NOW)
    assert advice.verdict is RetryVerdict.FAIL
    assert advice.delay is None and advice.reason


def test_a_business_refusal_fails_even_with_a_server_status():
    # The H-code is İYS's verdict; a 5xx status around it does not make the refusal pass.
    assert retry_advice(api_error(500, "H178"), NOW).verdict is RetryVerdict.FAIL


@pytest.mark.parametrize("status", [502, 503])
def test_a_proxy_page_instead_of_an_answer_is_a_server_fault(status):
    advice = retry_advice(api_error(status, None, cls=IysMalformedResponseError), NOW)
    assert (advice.verdict, advice.delay) == (RetryVerdict.RETRY, timedelta(seconds=60))


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("database gone"),
        RuntimeError("a bug"),
        TimeoutError(),
        api_error(None, None),  # the token call got no answer at all
    ],
    ids=repr,
)
def test_what_is_not_an_iys_answer_gets_the_tasks_own_retries(error):
    advice = retry_advice(error, NOW)
    assert (advice.verdict, advice.delay) == (RetryVerdict.DEFAULT, None)


# ---------------------------------------------------------------------------- the Airflow face


def test_the_policy_reads_its_injected_clock():
    clock_now = datetime(2026, 3, 2, 23, 59, 50, tzinfo=UTC)
    policy = IysRetryPolicy(clock=lambda: clock_now)
    blocked_until = datetime(2026, 3, 3, 0, 30, 0, tzinfo=UTC)
    decision = policy.evaluate(IysTokenBlockedError("H084", blocked_until=blocked_until), try_number=1, max_tries=2)
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(minutes=30, seconds=10) + MARGIN
    assert "2026-03-03 00:30:00" in decision.reason


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (api_error(422, "H175"), RetryAction.FAIL),
        (api_error(429, "H124"), RetryAction.RETRY),
        (OSError("network"), RetryAction.DEFAULT),
    ],
)
def test_each_verdict_is_airflows_action(error, action):
    assert IysRetryPolicy().evaluate(error, try_number=1, max_tries=3).action is action


def test_operators_and_sensors_carry_the_policy_by_default():
    with DAG("t_default_policy", schedule=None):
        tasks = [
            IysBaseOperator(task_id="base"),
            IysPullChangesOperator(task_id="pull", stream="IYS"),
            IysBatchResultSensor(task_id="wait"),
            IysReconciliationHashSensor(task_id="hash", report_date="2026-03-01"),
        ]
    assert all(isinstance(task.retry_policy, IysRetryPolicy) for task in tasks)


def test_a_policy_the_user_gives_wins():
    own = ExceptionRetryPolicy(rules=[RetryRule(exception=IysApiError, action=RetryAction.RETRY)])
    with DAG("t_own_policy", schedule=None, default_args={"retries": 2}):
        operator = IysBaseOperator(task_id="base", retry_policy=own)
        sensor = IysBatchResultSensor(task_id="wait", retry_policy=own)
        off = IysBaseOperator(task_id="off", retry_policy=None)
    assert operator.retry_policy is own and sensor.retry_policy is own
    assert off.retry_policy is None


def test_a_policy_in_default_args_wins():
    own = ExceptionRetryPolicy(rules=[])
    with DAG("t_default_args_policy", schedule=None, default_args={"retry_policy": own}):
        operator = IysBaseOperator(task_id="base")
        sensor = IysBatchResultSensor(task_id="wait")
    assert operator.retry_policy is own and sensor.retry_policy is own


@pytest.mark.parametrize(
    "build",
    [build_incremental_sync_dag, build_initial_sync_dag, build_reconciliation_dag, build_push_dag],
    ids=lambda b: b.__name__,
)
def test_every_iys_task_of_the_dags_has_the_policy(build):
    dag = build()
    # The pool check's tasks (plain Airflow operators) never call İYS.
    iys_tasks = {
        t.task_id: t
        for t in dag.tasks
        if _operator_class(t).__module__.startswith(("iys_provider.operators", "iys_provider.sensors"))
        and _operator_class(t).__module__ != "iys_provider.operators.pool_check"
    }
    assert iys_tasks
    assert [task_id for task_id, t in iys_tasks.items() if not isinstance(t.retry_policy, IysRetryPolicy)] == []
    # The DAGs do retry İYS tasks (retries=2 and the like): the policy decides which failures use them.
    assert any(
        t.partial_kwargs.get("retries") if hasattr(t, "partial_kwargs") else t.retries for t in iys_tasks.values()
    )


def _operator_class(task):
    # A mapped task names the operator its tries are built from.
    return getattr(task, "operator_class", type(task))


def test_a_mapped_iys_task_gets_the_policy_from_partial():
    dag = build_initial_sync_dag()
    mapped = [t for t in dag.tasks if type(t).__name__ == "MappedOperator"]
    assert mapped
    assert all(isinstance(t.retry_policy, IysRetryPolicy) for t in mapped)
    # The try the worker runs is the unmapped operator, built from the partial's arguments.
    assert all(isinstance(t.partial_kwargs["retry_policy"], IysRetryPolicy) for t in mapped)


def test_the_policy_module_has_no_airflow_or_database_import():
    source = pathlib.Path(retry_advice.__code__.co_filename).read_text(encoding="utf-8")
    assert "import airflow" not in source and "from airflow" not in source and "psycopg" not in source
