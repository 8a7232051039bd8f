"""Wait for İYS's async batch results and settle the submitted outbox rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, TypedDict

import requests
from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue

from iys_provider.database import iys_database
from iys_provider.exceptions import IysApiError, IysAuthError, IysTokenBlockedError
from iys_provider.hooks.iys import IysHook
from iys_provider.models import BatchItemStatus, Consent, is_documented
from iys_provider.operators.base import DEFAULT_POSTGRES_CONN_ID
from iys_provider.outbox import DEFAULT_MAX_BATCH_AGE, OutboxRow, OutboxState, Verdict, parse_row, verdict_for_iys_error
from iys_provider.outbox_store import (
    apply_confirmed_many,
    collected_by_run,
    expire_submissions,
    finalise,
    note_submitted,
    submitted_requests,
    submitted_rows,
)


class BatchResultsSummary(TypedDict):
    """What the sensor of one DAG run settled, read from the database (all pokes and tries together)."""

    sent: int
    skipped: int
    rejected: int
    reopened: int


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
    sends anything again. An item status İYS does not document is kept on the row
    (``UNDOCUMENTED_ITEM_STATUS``) and the item stays open.

    Every row the sensor settles or reopens is stamped with the DAG run, so its XCom
    (:class:`BatchResultsSummary`) counts the whole run, whichever poke settled each row.

    :param iys_conn_id: the ``iys`` connection. (templated)
    :param postgres_conn_id: the Postgres connection holding schema ``iys``. (templated)
    :param max_batch_age_seconds: a batch without complete results this long after its
        submission goes back to pending.
    :param hook_params: keyword arguments for :class:`~iys_provider.hooks.iys.IysHook`.
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
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.max_batch_age = timedelta(seconds=max_batch_age_seconds)
        self.hook_params = dict(hook_params or {})
        self._run_id_outside_a_run = f"adhoc-{uuid.uuid4()}"

    @cached_property
    def iys_hook(self) -> IysHook:
        return IysHook(iys_conn_id=self.iys_conn_id, **self.hook_params)

    def poke(self, context: Context) -> PokeReturnValue:
        run_id = context.get("run_id") or self._run_id_outside_a_run
        with iys_database(self.postgres_conn_id, log=self.log, also_close=self._close_hook) as conn:
            delay = timedelta(seconds=self.iys_hook.settings.batch_result_delay_seconds)
            brand_code = self.iys_hook.brand_code
            waiting = 0
            for request_id, submitted_at, count in submitted_requests(conn, brand_code):
                now = datetime.now(UTC)
                if now < submitted_at + delay:
                    waiting += count
                    continue
                items = self._results(conn, request_id, run_id)
                if items is _REOPENED:
                    continue
                still_open = count if items is None else self._settle(conn, request_id, items, run_id)
                if still_open and now > submitted_at + self.max_batch_age:
                    expire_submissions(
                        conn,
                        brand_code,
                        code="BATCH_EXPIRED",
                        detail=f"no complete batch result {self.max_batch_age} after submission; verified again "
                        "before any resend",
                        request_id=request_id,
                        result_run_id=run_id,
                    )
                    self.log.warning(
                        "Batch %s has no complete result after %s: its rows go back to pending",
                        request_id,
                        self.max_batch_age,
                    )
                    continue
                waiting += still_open
            if waiting:
                self.log.info("%d submitted updates still wait for İYS's batch results", waiting)
            collected = collected_by_run(conn, brand_code, run_id)
        summary = BatchResultsSummary(
            sent=collected.get("sent", 0),
            skipped=collected.get("skipped", 0),
            rejected=collected.get("rejected", 0),
            reopened=collected.get("reopened", 0),
        )
        return PokeReturnValue(is_done=waiting == 0, xcom_value=summary)

    def _close_hook(self) -> None:
        if "iys_hook" in self.__dict__:  # the next poke reopens its session and shared state itself
            self.iys_hook.close()

    def _results(self, conn, request_id: str, run_id: str):
        """The batch's result items, ``None`` while İYS has none yet, or :data:`_REOPENED`."""
        try:
            return self.iys_hook.get_batch_result(request_id)
        except (IysAuthError, IysTokenBlockedError):
            raise
        except IysApiError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500 and exc.status_code != 429:
                expire_submissions(
                    conn,
                    self.iys_hook.brand_code,
                    code="BATCH_UNKNOWN",
                    detail=f"İYS does not know this batch: {exc}"[:500],
                    request_id=request_id,
                    result_run_id=run_id,
                )
                self.log.warning("İYS does not know batch %s (%s): its rows go back to pending", request_id, exc.code)
                return _REOPENED
            self.log.warning("Batch %s: no readable result yet (%s)", request_id, exc)
            return None
        except requests.RequestException as exc:
            self.log.warning("Batch %s: result not fetched (%s)", request_id, type(exc).__name__)
            return None

    def _settle(self, conn, request_id: str, items, run_id: str) -> int:
        """Apply one batch's results in one transaction; returns how many items are still open."""
        brand_code = self.iys_hook.brand_code
        rows = {row[0]: row[1:] for row in submitted_rows(conn, brand_code, request_id)}
        by_index = {item.index: item for item in items}
        pending = 0
        undocumented: dict[str, list[int]] = {}
        with conn.transaction():
            verdicts = []
            confirmed = []
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
                        confirmed.append((consent, item.transaction_id, item.creation_date))
                else:
                    error = item.error
                    verdict = verdict_for_iys_error(
                        error.code if error else None, error.message if error else "failure"
                    )
                    if verdict.state is OutboxState.PENDING:
                        pending += 1  # İYS asks for another try: the batch expires and is verified again
                        continue
                    verdicts.append((row_id, verdict))
            apply_confirmed_many(conn, brand_code, confirmed)
            finalise(conn, verdicts, result_run_id=run_id)
            for status, row_ids in undocumented.items():
                note_submitted(
                    conn,
                    row_ids,
                    code="UNDOCUMENTED_ITEM_STATUS",
                    detail=f"İYS reported the item as {status[:100]!r}, a status it does not document; not applied",
                )
        if undocumented:
            self.log.warning(
                "Batch %s: item status %s is not one İYS documents; those items stay open",
                request_id,
                sorted(undocumented),
            )
        return pending


#: The batch went back to pending (İYS does not know it); nothing to settle.
_REOPENED = object()
