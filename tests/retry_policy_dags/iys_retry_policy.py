"""Test DAGs: one change-feed pull each, retried like the package's DAGs retry it, under İYS's retry policy.

A DAG folder of its own for ``tests/ui/test_retry_policy_under_scheduler.py``. The tasks are the
package's own operator with ``retries`` and a retry delay of two seconds: were a failure left to
Airflow's default, the next try would start two seconds later.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from iys_provider.operators.changes import IysPullChangesOperator

#: The İYS connection the test stack defines (its token block lasts as long as the simulator's).
CONN_ID = "iys_retry"
REFUSED = "iys_retry_policy_refused"
BLOCKED = "iys_retry_policy_blocked"
BUSY = "iys_retry_policy_busy"


def _pull_dag(dag_id: str, **hook_params) -> DAG:
    with DAG(dag_id, schedule=None, catchup=False, tags=["test"]) as dag:
        IysPullChangesOperator(
            task_id="pull_changes",
            stream="IYS",
            iys_conn_id=CONN_ID,
            hook_params=hook_params or None,
            retries=2,
            retry_delay=timedelta(seconds=2),
        )
    return dag


refused_dag = _pull_dag(REFUSED)
blocked_dag = _pull_dag(BLOCKED)
# One attempt per request: a busy or failing İYS fails the task at once, and the task's retry is the one seen.
busy_dag = _pull_dag(BUSY, max_attempts=1)
