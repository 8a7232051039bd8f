"""Wait for İYS's async batch results and settle the submitted outbox rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import requests
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from iys_provider.exceptions import IysApiError, IysAuthError, IysTokenBlockedError
from iys_provider.hooks.iys import IysHook
from iys_provider.models import BatchItemStatus, Consent, is_documented
from iys_provider.operators.base import DEFAULT_POSTGRES_CONN_ID
from iys_provider.outbox import DEFAULT_MAX_BATCH_AGE, OutboxRow, OutboxState, Verdict, parse_row, verdict_for_iys_error
from iys_provider.outbox_store import (
    SUBMITTED_REQUESTS_SQL,
    SUBMITTED_ROWS_SQL,
    apply_confirmed,
    expire_submissions,
    finalise,
    note_submitted,
)
from iys_provider.schema import migrate


class IysBatchResultSensor(BaseSensorOperator):
    """Poll the results of every submitted batch until none is outstanding.

    The outstanding batches are read from ``iys.consent_updates`` (state ``submitted``), not from
    XCom, so a batch submitted by an earlier run or a crashed task is still collected. A batch
    is first polled ``batch_result_delay_seconds`` (connection extra, default 300 as İYS requires)
    after its submission. Use ``mode="reschedule"`` (the default here) so no worker slot is held
    while İYS processes the batch.

    Batches never hold the sensor forever: one that İYS says it does not know (a 4xx for its
    request id), or whose results are still incomplete ``max_batch_age_seconds`` after its
    submission, goes back to ``pending``; the next push verifies those rows with İYS before it
    sends anything again. An item status İYS does not document is logged and left unsettled.
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
        max_batch_age_seconds: float = DEFAULT_MAX_BATCH_AGE.total_seconds(),
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.max_batch_age = timedelta(seconds=max_batch_age_seconds)

    @cached_property
    def iys_hook(self) -> IysHook:
        return IysHook(iys_conn_id=self.iys_conn_id)

    def poke(self, context) -> PokeReturnValue:
        from airflow.providers.postgres.hooks.postgres import PostgresHook  # keep DAG parsing light

        conn = PostgresHook(postgres_conn_id=self.postgres_conn_id).get_conn()
        conn.autocommit = True
        settled = {"sent": 0, "skipped": 0, "rejected": 0, "reopened": 0}
        try:
            migrate(conn)
            delay = timedelta(seconds=self.iys_hook.settings.batch_result_delay_seconds)
            outstanding = conn.execute(SUBMITTED_REQUESTS_SQL).fetchall()
            waiting = 0
            for request_id, submitted_at, count in outstanding:
                now = datetime.now(UTC)
                if now < submitted_at + delay:
                    waiting += count
                    continue
                items = self._results(conn, request_id, settled)
                if items is _REOPENED:
                    continue
                still_open = count if items is None else self._settle(conn, request_id, items, settled)
                if still_open and now > submitted_at + self.max_batch_age:
                    settled["reopened"] += expire_submissions(
                        conn,
                        code="BATCH_EXPIRED",
                        detail=f"no complete batch result {self.max_batch_age} after submission; verified again "
                        "before any resend",
                        request_id=request_id,
                    )
                    self.log.warning("Batch %s has no complete result after %s: its rows go back to pending", request_id, self.max_batch_age)
                    continue
                waiting += still_open
            if waiting:
                self.log.info("%d submitted updates still wait for İYS's batch results", waiting)
            return PokeReturnValue(is_done=waiting == 0, xcom_value=settled)
        finally:
            conn.close()
            self.iys_hook.close()

    def _results(self, conn, request_id: str, settled: dict[str, int]):
        """The batch's result items, ``None`` while İYS has none yet, or :data:`_REOPENED`."""
        try:
            return self.iys_hook.get_batch_result(request_id)
        except (IysAuthError, IysTokenBlockedError):
            raise
        except IysApiError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500 and exc.status_code != 429:
                settled["reopened"] += expire_submissions(
                    conn, code="BATCH_UNKNOWN", detail=f"İYS does not know this batch: {exc}"[:500], request_id=request_id
                )
                self.log.warning("İYS does not know batch %s (%s): its rows go back to pending", request_id, exc.code)
                return _REOPENED
            self.log.warning("Batch %s: no readable result yet (%s)", request_id, exc)
            return None
        except requests.RequestException as exc:
            self.log.warning("Batch %s: result not fetched (%s)", request_id, type(exc).__name__)
            return None

    def _settle(self, conn, request_id: str, items, settled: dict[str, int]) -> int:
        """Apply one batch's results in one transaction; returns how many items are still open."""
        rows = {row[0]: row[1:] for row in conn.execute(SUBMITTED_ROWS_SQL, (request_id,)).fetchall()}
        by_index = {item.index: item for item in items}
        brand_code = self.iys_hook.brand_code
        pending = 0
        undocumented: dict[str, list[int]] = {}
        with conn.transaction():
            verdicts = []
            for index, (row_id, *fields) in rows.items():
                item = by_index.get(index)
                if item is None or item.status is BatchItemStatus.ENQUEUE:
                    pending += 1
                    continue
                if not is_documented(item.status):
                    undocumented.setdefault(str(item.status), []).append(row_id)
                    pending += 1
                    continue
                if item.status is BatchItemStatus.SUCCESS:
                    verdicts.append((row_id, Verdict(OutboxState.SENT, transaction_id=item.transaction_id)))
                    consent = parse_row(OutboxRow(row_id, *fields, attempts=0))
                    if isinstance(consent, Consent):
                        apply_confirmed(conn, brand_code, consent, item.transaction_id, item.creation_date)
                else:
                    error = item.error
                    verdict = verdict_for_iys_error(error.code if error else None, error.message if error else "failure")
                    if verdict.state is OutboxState.PENDING:
                        pending += 1  # İYS asks for another try: the batch expires and is verified again
                        continue
                    verdicts.append((row_id, verdict))
            finalise(conn, verdicts)
            for status, row_ids in undocumented.items():
                note_submitted(
                    conn, row_ids, code="UNDOCUMENTED_ITEM_STATUS",
                    detail=f"İYS reported the item as {status[:100]!r}, a status it does not document; not applied",
                )
        if undocumented:
            self.log.warning(
                "Batch %s: item status %s is not one İYS documents; those items stay open", request_id, sorted(undocumented)
            )
        for _, verdict in verdicts:
            settled[verdict.state.value] = settled.get(verdict.state.value, 0) + 1
        return pending


#: The batch went back to pending (İYS does not know it); nothing to settle.
_REOPENED = object()
