"""Wait for İYS's async batch results and settle the submitted outbox rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue, RetryPolicy

from iys_provider.hooks.iys import IysHook
from iys_provider.lineage import TaskLineage
from iys_provider.operators.base import (
    DEFAULT_POSTGRES_CONN_ID,
    IYS_RETRY_POLICY,
    IysConnections,
    WaitsOnTheTriggerer,
)
from iys_provider.outbox.rules import DEFAULT_MAX_BATCH_AGE
from iys_provider.outbox.settlement import BatchResultsSummary, OutboxSettlement
from iys_provider.triggers.batch_results import IysBatchResultsTrigger
from iys_provider.triggers.polling import raise_trigger_error

__all__ = ["BatchResultsSummary", "IysBatchResultSensor"]


class IysBatchResultSensor(WaitsOnTheTriggerer, IysConnections, BaseSensorOperator):
    """Poll the results of every submitted batch until none is outstanding.

    Each poke is one pass of :class:`~iys_provider.outbox.settlement.OutboxSettlement`. The
    outstanding batches are read from ``iys.consent_updates`` (state ``submitted``), not from
    XCom, so a batch submitted by an earlier run or a crashed task is still collected. A batch
    is first polled ``batch_result_delay_seconds`` (connection extra, default 300 as İYS requires)
    after its submission. Use ``mode="reschedule"`` (the default here) so no worker slot is held
    while İYS processes the batch.

    Batches never hold the sensor forever: one that İYS says it does not know (a 4xx for its
    request id), or whose results are still incomplete ``max_batch_age_seconds`` after its
    submission, goes back to ``pending``; the next push verifies those rows with İYS before it
    sends anything again. An item status İYS does not document is kept on the row
    (``UNDOCUMENTED_ITEM_STATUS``) and the item stays open.

    Every row the sensor settles or reopens is stamped with the DAG run, so its XCom
    (:class:`BatchResultsSummary`) counts the whole run, whichever poke settled each row.

    :param iys_conn_id: the ``iys`` connection. (templated)
    :param postgres_conn_id: the Postgres connection holding schema ``iys``. (templated)
    :param max_batch_age_seconds: a batch without complete results this long after its
        submission goes back to pending.
    :param hook_params: keyword arguments for :class:`~iys_provider.hooks.iys.IysHook`.
    :param retry_policy: :class:`~iys_provider.operators.base.IysRetryPolicy` unless given here or in the
        DAG's ``default_args`` (``None`` turns it off).
    :param deferrable: after a first pass on the worker, wait on the triggerer
        (:class:`~iys_provider.triggers.batch_results.IysBatchResultsTrigger`, the same pass every
        ``poke_interval``, calling İYS from the triggerer's IP) instead of rescheduling the task.
    """

    lineage = TaskLineage(reads=("consent_updates",), writes=("consent_updates", "consents"), iys_reads=True)

    template_fields: Sequence[str] = ("iys_conn_id", "postgres_conn_id")

    def __init__(
        self,
        *,
        iys_conn_id: str = IysHook.default_conn_name,
        postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID,
        mode: str = "reschedule",
        poke_interval: float = 60,
        timeout: float = 2 * 3600,
        max_batch_age_seconds: float = DEFAULT_MAX_BATCH_AGE.total_seconds(),
        hook_params: dict[str, Any] | None = None,
        retry_policy: RetryPolicy | None = IYS_RETRY_POLICY,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, retry_policy=retry_policy, **kwargs)
        self._use_connections(iys_conn_id, postgres_conn_id, hook_params)
        self.deferrable = deferrable
        self.max_batch_age = timedelta(seconds=max_batch_age_seconds)
        self._run_id_outside_a_run = f"adhoc-{uuid.uuid4()}"

    def poke(self, context: Context) -> PokeReturnValue:
        run_id = context.get("run_id") or self._run_id_outside_a_run
        with self.database() as conn:
            settled = OutboxSettlement(
                self.iys_hook, conn, run_id, max_batch_age=self.max_batch_age, log=self.log
            ).run()
        return PokeReturnValue(is_done=settled.still_waiting == 0, xcom_value=settled.summary)

    def waiting_trigger(self, context: Context) -> IysBatchResultsTrigger:
        return IysBatchResultsTrigger(
            iys_conn_id=self.iys_conn_id,
            postgres_conn_id=self.postgres_conn_id,
            hook_params=self.hook_params,
            run_id=str(context.get("run_id") or self._run_id_outside_a_run),
            max_batch_age_seconds=self.max_batch_age.total_seconds(),
            poke_interval=self.poke_interval,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> BatchResultsSummary:
        """Resumes a deferred wait: every batch is settled; the run's counts are the trigger's last pass."""
        raise_trigger_error(event)
        return event["summary"]
