"""The optional İYS pool, checked: a run whose configured pool does not exist fails fast.

A task in a pool that does not exist stays ``scheduled`` forever (the scheduler only logs a
warning), and in Airflow 3 neither task code nor DAG parsing can look a pool up: both run with
the ORM blocked, and neither the Execution API nor the DAG processor's channel serves pools.
So the check watches the scheduler instead: a no-op probe runs in the pool while the gate,
in default_pool, waits for it. A slot given to the probe proves the pool; none within the
timeout fails the gate with the command that creates the pool, after skipping the probe and
the rest of the run (the Execution API may skip a ``scheduled`` task instance), so the run
ends ``failed`` instead of waiting forever.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import SkipDownstreamTasks

POOL_PROBE_TASK_ID = "iys_pool_probe"
POOL_CHECK_TASK_ID = "check_iys_pool"
#: States in which the probe has been given a slot of the pool (so the pool exists).
_PROBE_GOT_SLOT = {"queued", "running", "success", "failed", "up_for_retry"}


def pool_missing_message(pool: str, waited: float) -> str:
    return (
        f"The İYS tasks are configured to run in pool {pool!r} (IYS_POOL), but the scheduler gave that "
        f"pool no slot in {waited:.0f} s: it most likely does not exist, and its tasks would wait forever. "
        f'Create it with `airflow pools set {pool} 4 "İYS API rate budget"` (or Admin → Pools in the UI) '
        "and run again, or unset IYS_POOL to run the İYS tasks in default_pool."
    )


class IysPoolProbeOperator(BaseOperator):
    """Does nothing, in the configured pool: that it runs at all proves the pool exists.

    (Not an EmptyOperator: the scheduler marks those successful without a pool slot.)
    """

    ui_color = "#f0f0f0"

    def execute(self, context: Any) -> None:
        self.log.info("pool %r gave this run a slot", self.pool)


class IysCheckPoolOperator(BaseOperator):
    """Gate in ``default_pool``: succeeds once the probe got a slot of ``pool_name``, else fails fast.

    :param pool_name: the pool the İYS tasks run in.
    :param probe_task_id: the :class:`IysPoolProbeOperator` in that pool.
    :param timeout_seconds: how long the probe may wait for a slot.
    """

    def __init__(
        self,
        *,
        pool_name: str,
        probe_task_id: str = POOL_PROBE_TASK_ID,
        timeout_seconds: float = 300,
        poll_seconds: float = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_name = pool_name
        self.probe_task_id = probe_task_id
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
        # Skip the waiting probe and everything not yet started except the run's last tasks, which
        # depend on this gate and so end upstream_failed: the run is failed, nothing waits.
        dag = context["dag"]
        keep = {self.task_id} | {
            t.task_id for t in dag.tasks if not t.downstream_list and t.task_id != self.probe_task_id
        }
        skip = sorted(t.task_id for t in dag.tasks if t.task_id not in keep)
        task_runner.SUPERVISOR_COMMS.send(SkipDownstreamTasks(tasks=skip))
        raise AirflowFailException(pool_missing_message(self.pool_name, waited))
