"""The wait for İYS's batch results on the triggerer: the deferrable form of the batch-results sensor."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from iys_provider.database import iys_database
from iys_provider.hooks.iys import IysHook
from iys_provider.outbox.settlement import OutboxSettlement
from iys_provider.triggers.polling import IysPollingTrigger

log = logging.getLogger(__name__)


class IysBatchResultsTrigger(IysPollingTrigger):
    """Settles submitted outbox batches every ``poke_interval`` until none is outstanding.

    Each look is one :class:`~iys_provider.outbox.settlement.OutboxSettlement` pass, the sensor's own
    poke, so rows are settled as soon as İYS has their results, stamped with the DAG run; the event
    carries the run's counts only.

    :param iys_conn_id: the brand's ``iys`` connection.
    :param postgres_conn_id: the database holding schema ``iys``.
    :param hook_params: keyword arguments of :class:`~iys_provider.hooks.iys.IysHook`.
    :param run_id: the DAG run the settled rows are stamped with.
    :param max_batch_age_seconds: a batch without complete results this long after submission is reopened.
    :param poke_interval: seconds between passes.
    """

    def __init__(
        self,
        *,
        iys_conn_id: str,
        postgres_conn_id: str,
        run_id: str,
        max_batch_age_seconds: float,
        poke_interval: float,
        hook_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(poke_interval=poke_interval)
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.hook_params = dict(hook_params or {})
        self.run_id = run_id
        self.max_batch_age_seconds = float(max_batch_age_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "iys_conn_id": self.iys_conn_id,
                "postgres_conn_id": self.postgres_conn_id,
                "hook_params": self.hook_params,
                "run_id": self.run_id,
                "max_batch_age_seconds": self.max_batch_age_seconds,
                "poke_interval": self.poke_interval,
            },
        )

    def look(self) -> dict[str, Any] | None:
        hook = IysHook(iys_conn_id=self.iys_conn_id, **self.hook_params)
        with iys_database(self.postgres_conn_id, log=log, also_close=hook.close) as conn:
            settled = OutboxSettlement(
                hook, conn, self.run_id, max_batch_age=timedelta(seconds=self.max_batch_age_seconds), log=log
            ).run()
        if settled.still_waiting:
            log.info("%s batch(es) still waiting for İYS's results", settled.still_waiting)
            return None
        return {"summary": dict(settled.summary)}
