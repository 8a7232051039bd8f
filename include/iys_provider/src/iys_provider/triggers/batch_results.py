"""The wait for İYS's batch results on the triggerer: the deferrable form of the batch-results sensor."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from iys_provider.outbox.settlement import OutboxSettlement
from iys_provider.triggers.polling import IysPollingTrigger

log = logging.getLogger(__name__)


class IysBatchResultsTrigger(IysPollingTrigger):
    """Settles submitted outbox batches every ``poke_interval`` until none is outstanding.

    Each look is one :class:`~iys_provider.outbox.settlement.OutboxSettlement` pass, the sensor's own
    poke, so rows are settled as soon as İYS has their results, stamped with the DAG run; the event
    carries the run's counts only. Connections, run and interval: :class:`IysPollingTrigger`.

    :param max_batch_age_seconds: a batch without complete results this long after submission is reopened.
    """

    def __init__(self, *, max_batch_age_seconds: float, **common: Any) -> None:
        super().__init__(**common)
        self.max_batch_age_seconds = float(max_batch_age_seconds)

    def wait_arguments(self) -> dict[str, Any]:
        return {"max_batch_age_seconds": self.max_batch_age_seconds}

    def look(self) -> dict[str, Any] | None:
        with self.connections() as (hook, conn):
            settled = OutboxSettlement(
                hook, conn, self.run_id, max_batch_age=timedelta(seconds=self.max_batch_age_seconds), log=log
            ).run()
        return None if settled.still_waiting else {"summary": dict(settled.summary)}
