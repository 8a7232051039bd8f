"""Settling submitted outbox rows from İYS's async batch results.

The rules (what an item's result means for its row) are in :mod:`iys_provider.outbox.rules`, their SQL in
:mod:`iys_provider.outbox.store`; this module runs one pass over the outstanding batches with them.
:class:`~iys_provider.sensors.batch_results.IysBatchResultSensor` is its Airflow face, one pass per poke.

* the outstanding batches are read from ``iys.consent_updates`` (state ``submitted``), so a batch
  submitted by an earlier run or a crashed task is still collected; each is first asked for
  ``batch_result_delay_seconds`` (connection extra) after its submission;
* a batch İYS does not know (a 4xx for its request id), or whose results are still incomplete
  ``max_batch_age`` after its submission, goes back to ``pending``: the next push verifies those
  rows with İYS before it sends anything again;
* an item status İYS does not document is kept on the row (``UNDOCUMENTED_ITEM_STATUS``) and the
  item stays open;
* every row settled or reopened is stamped with ``run_id``, so the summary counts the whole run,
  whichever pass settled each row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import psycopg
import requests

from iys_provider.exceptions import IysApiError, IysAuthError, IysTokenBlockedError
from iys_provider.hooks.iys import IysHook
from iys_provider.models import BatchItemStatus, BatchResultItem, Consent, StepKind, is_documented
from iys_provider.outbox.rules import (
    DEFAULT_MAX_BATCH_AGE,
    OutboxRow,
    OutboxState,
    Verdict,
    parse_row,
    verdict_for_iys_error,
)
from iys_provider.outbox.store import (
    apply_confirmed_many,
    collected_by_run,
    expire_submissions,
    finalise,
    note_submitted,
    submitted_requests,
    submitted_rows,
)


class BatchResultsSummary(TypedDict):
    """What the settlement of one DAG run settled, read from the database (all passes and tries together)."""

    step: str
    sent: int
    skipped: int
    rejected: int
    reopened: int


@dataclass(frozen=True)
class SettlementPass:
    """One pass: the submitted updates still waiting for İYS, and the run's summary so far."""

    still_waiting: int
    summary: BatchResultsSummary


@dataclass
class OutboxSettlement:
    """One pass over the brand's outstanding batches over ``conn`` (autocommit) through ``hook``, for ``run_id``."""

    hook: IysHook
    conn: psycopg.Connection
    run_id: str
    max_batch_age: timedelta = DEFAULT_MAX_BATCH_AGE
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))

    def run(self) -> SettlementPass:
        conn, run_id = self.conn, self.run_id
        delay = timedelta(seconds=self.hook.settings.batch_result_delay_seconds)
        brand_code = self.hook.brand_code
        waiting = 0
        for request_id, submitted_at, count in submitted_requests(conn, brand_code):
            now = self.clock()
            if now < submitted_at + delay:
                waiting += count
                continue
            items = self._results(request_id)
            if items is _REOPENED:
                continue
            still_open = count if items is None else self._settle(request_id, items)
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
            step=StepKind.OUTBOX_SETTLEMENT.value,
            sent=collected.get("sent", 0),
            skipped=collected.get("skipped", 0),
            rejected=collected.get("rejected", 0),
            reopened=collected.get("reopened", 0),
        )
        return SettlementPass(still_waiting=waiting, summary=summary)

    def _results(self, request_id: str) -> list[BatchResultItem] | None | object:
        """The batch's result items, ``None`` while İYS has none yet, or :data:`_REOPENED`."""
        try:
            return self.hook.get_batch_result(request_id)
        except (IysAuthError, IysTokenBlockedError):
            raise
        except IysApiError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500 and exc.status_code != 429:
                expire_submissions(
                    self.conn,
                    self.hook.brand_code,
                    code="BATCH_UNKNOWN",
                    detail=f"İYS does not know this batch: {exc}"[:500],
                    request_id=request_id,
                    result_run_id=self.run_id,
                )
                self.log.warning("İYS does not know batch %s (%s): its rows go back to pending", request_id, exc.code)
                return _REOPENED
            self.log.warning("Batch %s: no readable result yet (%s)", request_id, exc)
            return None
        except requests.RequestException as exc:
            self.log.warning("Batch %s: result not fetched (%s)", request_id, type(exc).__name__)
            return None

    def _settle(self, request_id: str, items) -> int:
        """Apply one batch's results in one transaction; returns how many items are still open."""
        conn = self.conn
        brand_code = self.hook.brand_code
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
            finalise(conn, verdicts, result_run_id=self.run_id)
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
