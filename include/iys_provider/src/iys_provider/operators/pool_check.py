"""The optional İYS pool, checked: a run whose configured pool does not exist fails fast.

A task in a pool that does not exist stays ``scheduled`` forever (the scheduler only logs a
warning), and in Airflow 3 neither task code nor DAG parsing can look a pool up: both run with
the ORM blocked, and neither the Execution API nor the DAG processor's channel serves pools.
So the check watches the scheduler instead: a no-op probe runs in the pool while a waiter, in
default_pool, waits for it. A slot given to the probe proves the pool. None within the timeout:
the waiter skips the probe and the rest of the run (:class:`~airflow.sdk.SkipMixin`, as a
short-circuit does), except the gate after it and the run's last tasks; the gate then fails
with the command that creates the pool, so the run ends ``failed`` instead of waiting forever.

Two tasks, because a task that skips others through the Task SDK succeeds itself: the waiter
skips, the gate fails.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, SkipMixin
from airflow.sdk.exceptions import AirflowFailException

POOL_PROBE_TASK_ID = "iys_pool_probe"
POOL_WAIT_TASK_ID = "wait_for_iys_pool"
POOL_CHECK_TASK_ID = "check_iys_pool"
#: XCom of the waiter when the probe got no slot: how long it waited, in seconds.
POOL_MISSING_XCOM_KEY = "pool_missing_after_seconds"
#: States in which the probe has been given a slot of the pool (so the pool exists).
_PROBE_GOT_SLOT = {"queued", "running", "success", "failed", "up_for_retry"}


def pool_missing_message(pool: str, waited: float) -> str:
    return (
        f"The İYS tasks are configured to run in pool {pool!r} ([iys] pool: IYS_POOL or AIRFLOW__IYS__POOL), but the scheduler gave that "
        f"pool no slot in {waited:.0f} s: it most likely does not exist, and its tasks would wait forever. "
        f'Create it with `airflow pools set {pool} 4 "İYS API rate budget"` (or Admin → Pools in the UI) '
        "and run again, or unset IYS_POOL (and AIRFLOW__IYS__POOL) to run the İYS tasks in default_pool."
    )


class IysPoolProbeOperator(BaseOperator):
    """Does nothing, in the configured pool: that it runs at all proves the pool exists.

    (Not an EmptyOperator: the scheduler marks those successful without a pool slot.)
    """

    ui_color = "#f0f0f0"

    def execute(self, context: Any) -> None:
        self.log.info("pool %r gave this run a slot", self.pool)


class IysWaitForPoolOperator(BaseOperator, SkipMixin):
    """Waits in ``default_pool`` for the probe to get a slot of ``pool_name``; without one, clears the run.

    Succeeds either way. When the probe got no slot within ``timeout_seconds``, it skips the probe
    and every task not yet started except ``gate_task_id`` and the run's last tasks, and leaves
    the seconds it waited in XCom (:data:`POOL_MISSING_XCOM_KEY`) for the gate, which fails.

    :param pool_name: the pool the İYS tasks run in.
    :param probe_task_id: the :class:`IysPoolProbeOperator` in that pool.
    :param gate_task_id: the :class:`IysCheckPoolOperator` after this task.
    :param timeout_seconds: how long the probe may wait for a slot.
    :param poll_seconds: how often the probe's state is read.
    """

    # Nothing templated: the pool and the tasks are fixed when the DAG file is parsed.
    template_fields: Sequence[str] = ()

    def __init__(
        self,
        *,
        pool_name: str,
        probe_task_id: str = POOL_PROBE_TASK_ID,
        gate_task_id: str = POOL_CHECK_TASK_ID,
        timeout_seconds: float = 300,
        poll_seconds: float = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_name = pool_name
        self.probe_task_id = probe_task_id
        self.gate_task_id = gate_task_id
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds

    def execute(self, context: Any) -> None:
        ti = context["ti"]
        started = time.monotonic()
        while True:
            states = ti.get_task_states(dag_id=ti.dag_id, task_ids=[self.probe_task_id], run_ids=[ti.run_id])
            state = (states.get(ti.run_id) or {}).get(self.probe_task_id)
            if state in _PROBE_GOT_SLOT:
                self.log.info("pool %r exists (probe %s)", self.pool_name, state)
                return
            waited = time.monotonic() - started
            if waited >= self.timeout_seconds:
                break
            time.sleep(self.poll_seconds)
        self.log.warning("pool %r gave the probe no slot in %.0f s: skipping the run's tasks", self.pool_name, waited)
        ti.xcom_push(key=POOL_MISSING_XCOM_KEY, value=round(waited))
        # The gate and the run's last tasks stay: they depend on the gate, which fails, so the run
        # is failed; everything else, the waiting probe included, is skipped, so nothing waits.
        dag = context["dag"]
        keep = {self.task_id, self.gate_task_id} | {
            t.task_id for t in dag.tasks if not t.downstream_list and t.task_id != self.probe_task_id
        }
        self.skip(ti=ti, tasks=sorted((t for t in dag.tasks if t.task_id not in keep), key=lambda t: t.task_id))


class IysCheckPoolOperator(BaseOperator):
    """Gate in ``default_pool`` before the İYS tasks: fails, with the command that creates the pool, if it is missing.

    Reads what :class:`IysWaitForPoolOperator` (``wait_task_id``, its only upstream) found.

    :param pool_name: the pool the İYS tasks run in.
    :param wait_task_id: the :class:`IysWaitForPoolOperator` before this gate.
    """

    template_fields: Sequence[str] = ()

    def __init__(self, *, pool_name: str, wait_task_id: str = POOL_WAIT_TASK_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_name = pool_name
        self.wait_task_id = wait_task_id

    def execute(self, context: Any) -> None:
        waited = context["ti"].xcom_pull(task_ids=self.wait_task_id, key=POOL_MISSING_XCOM_KEY)
        if waited is not None:
            raise AirflowFailException(pool_missing_message(self.pool_name, waited))
        self.log.info("pool %r exists", self.pool_name)
