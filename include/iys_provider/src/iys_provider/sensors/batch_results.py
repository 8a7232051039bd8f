"""Wait for İYS's async batch results and settle the submitted outbox rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from iys_provider.hooks.iys import IysHook
from iys_provider.models import BatchItemStatus, Consent
from iys_provider.operators.base import DEFAULT_POSTGRES_CONN_ID
from iys_provider.outbox import OutboxRow, OutboxState, Verdict, parse_row, verdict_for_iys_error
from iys_provider.outbox_store import (
    SUBMITTED_REQUESTS_SQL,
    SUBMITTED_ROWS_SQL,
    apply_confirmed,
    finalise,
)
from iys_provider.schema import migrate


class IysBatchResultSensor(BaseSensorOperator):
    """Poll the results of every submitted batch until none is outstanding.

    The outstanding batches are read from ``iys.consent_updates`` (state ``submitted``), not from
    XCom, so a batch submitted by an earlier run or a crashed task is still collected. A batch
    is first polled ``batch_result_delay_seconds`` (connection extra, default 300 as İYS requires)
    after its submission. Use ``mode="reschedule"`` (the default here) so no worker slot is held
    while İYS processes the batch.
    """

    template_fields: Sequence[str] = ("iys_conn_id", "postgres_conn_id")

    def __init__(
        self,
        *,
        iys_conn_id: str = IysHook.default_conn_name,
        postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID,
        mode: str = "reschedule",
        poke_interval: float = 60,
        timeout: float = 2 * 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id

    @cached_property
    def iys_hook(self) -> IysHook:
        return IysHook(iys_conn_id=self.iys_conn_id)

    def poke(self, context) -> PokeReturnValue:
        from airflow.providers.postgres.hooks.postgres import PostgresHook  # keep DAG parsing light

        conn = PostgresHook(postgres_conn_id=self.postgres_conn_id).get_conn()
        conn.autocommit = True
        settled = {"sent": 0, "skipped": 0, "rejected": 0}
        try:
            migrate(conn)
            delay = timedelta(seconds=self.iys_hook.settings.batch_result_delay_seconds)
            outstanding = conn.execute(SUBMITTED_REQUESTS_SQL).fetchall()
            waiting = 0
            for request_id, submitted_at, count in outstanding:
                if datetime.now(UTC) < submitted_at + delay:
                    waiting += count
                    continue
                items = self.iys_hook.get_batch_result(request_id)
                if items is None:
                    waiting += count
                    continue
                waiting += self._settle(conn, request_id, items, settled)
            if waiting:
                self.log.info("%d submitted updates still wait for İYS's batch results", waiting)
            return PokeReturnValue(is_done=waiting == 0, xcom_value=settled)
        finally:
            conn.close()

    def _settle(self, conn, request_id: str, items, settled: dict[str, int]) -> int:
        """Apply one batch's results in one transaction; returns how many items are still enqueued."""
        rows = {row[0]: row[1:] for row in conn.execute(SUBMITTED_ROWS_SQL, (request_id,)).fetchall()}
        by_index = {item.index: item for item in items}
        brand_code = self.iys_hook.brand_code
        pending = 0
        with conn.transaction():
            verdicts = []
            for index, (row_id, *fields) in rows.items():
                item = by_index.get(index)
                if item is None or item.status is BatchItemStatus.ENQUEUE:
                    pending += 1
                    continue
                if item.status is BatchItemStatus.SUCCESS:
                    verdicts.append((row_id, Verdict(OutboxState.SENT, transaction_id=item.transaction_id)))
                    consent = parse_row(OutboxRow(row_id, *fields, attempts=0))
                    if isinstance(consent, Consent):
                        apply_confirmed(conn, brand_code, consent, item.transaction_id, item.creation_date)
                else:
                    error = item.error
                    verdicts.append((row_id, verdict_for_iys_error(error.code if error else None, error.message if error else "failure")))
            finalise(conn, verdicts)
        for _, verdict in verdicts:
            settled[verdict.state.value] = settled.get(verdict.state.value, 0) + 1
        return pending
