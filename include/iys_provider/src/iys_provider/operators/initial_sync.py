"""Operators of the initial sync: plan batches, check each batch against İYS, finish the scan.

Compose them with dynamic task mapping::

    plan = IysPlanInitialSyncOperator(task_id="plan_batches")
    batches = IysInitialSyncBatchOperator.partial(task_id="sync_batch", max_active_tis_per_dagrun=4).expand(
        batch=plan.output
    )
    plan >> batches >> IysFinishInitialSyncOperator(task_id="finish_scan")

A scan's plan is stored in ``iys.initial_sync_batches``; every run processes only the batches not
finished yet, so a run that dies halfway is simply run (or cleared) again. The scan's lifecycle
is :mod:`iys_provider.initial_sync.scan_ledger`; how a batch is checked, :mod:`iys_provider.initial_sync.consent_checks`.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from typing import Any, Required, TypedDict

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from iys_provider.config import load_settings
from iys_provider.consent_store import consent_totals
from iys_provider.hooks.iys import MAX_RECIPIENTS_PER_STATUS_CALL
from iys_provider.initial_sync.consent_checks import CheckOutcome, check_scan_batch
from iys_provider.initial_sync.scan_ledger import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCHES,
    BatchState,
    ScanBatch,
    ScanProgress,
    ScanSchedule,
    ScanStep,
    batch_request_concurrency,
    batch_sizes,
)
from iys_provider.initial_sync.scan_ledger_store import (
    finish_scan,
    open_scan,
    pending_batches,
    read_batch_record,
    scan_progress,
    schedule_scan,
)
from iys_provider.lineage import TaskLineage
from iys_provider.operators.base import IysBaseOperator
from iys_provider.people.leavers import (
    DEFAULT_MAX_LEAVER_SHARE,
    Forgotten,
    LeaversResult,
    TooManyLeaversError,
    leavers_result,
    parse_max_leaver_share,
    refusal,
)
from iys_provider.people.leavers_store import known_users
from iys_provider.people.user_source import DEFAULT_STATEMENT_TIMEOUT_SECONDS, configured_user_source
from iys_provider.templating import as_bool, as_int

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "FinishInitialSyncResult",
    "InitialSyncBatchResult",
    "IysFinishInitialSyncOperator",
    "IysInitialSyncBatchOperator",
    "IysPlanInitialSyncOperator",
    "PlannedBatch",
]


class PlannedBatch(TypedDict):
    """One batch to map :class:`IysInitialSyncBatchOperator` over; ``of``, ``first`` and ``last`` label its task."""

    scan_id: int
    batch_no: int
    of: int
    first: str
    last: str


class InitialSyncBatchResult(TypedDict, total=False):
    """What one batch task did; with nothing to do, only ``batch_no`` and ``abandoned`` or ``already_done``."""

    batch_no: Required[int]
    abandoned: bool
    already_done: bool
    users: int
    recipients: int
    quarantined: int
    status_changes: int
    requests: int
    retries: int
    rate_limited: int
    api_seconds: float
    local_seconds: float
    write_seconds: float
    rows_written: int
    peak_rss_mb: float


class FinishInitialSyncResult(TypedDict, total=False):
    """``scan_id`` and ``users`` of the scan this task finished; only ``complete`` when none was open."""

    complete: Required[bool]
    scan_id: int
    users: int


class IysPlanInitialSyncOperator(IysBaseOperator):
    """Plan (or resume) a scan of every user; returns the batches still to process.

    The first run snapshots the users of the source query into numbered batches (the query runs
    once, read-only, and its sorted rows are streamed into the queue); later runs return only the
    unfinished batches of the open scan, and nothing once the scan is complete (unless
    ``rescan``). The returned list is what ``IysInitialSyncBatchOperator`` is mapped over.
    Airflow maps it only once the whole list is returned, so no batch starts before the plan is
    done: a plan is kept short (about 7 s for a million users on 2 cores, most of it writing the
    queue) and its first batch small, so the first İYS call follows soon after.

    A new plan also forgets the brand's known users that its snapshot does not hold (they left the
    source, see :mod:`iys_provider.people.leavers`), in the plan's transaction. Their count is logged and
    pushed as the XCom ``leavers`` (a :class:`~iys_provider.operators.leavers.LeaversResult`), so
    the returned list stays what the batches are mapped over.

    :param recipients_sql: source query, or the path of a ``.sql`` file holding it (relative to
        the DAG's folder or its ``template_searchpath``); default: the ``iys_recipients_sql``
        Variable, else ``SELECT id::text AS user_id, phone, email FROM public.users``. (templated)
    :param batch_size: users per batch at most (grown automatically to keep ≤ ``max_batches``
        batches); a big scan starts and ends with smaller ones, a small one is cut into smaller
        ones so that every parallel task gets some (:func:`~iys_provider.initial_sync.scan_ledger.batch_sizes`).
        (templated)
    :param max_batches: the most batches a scan is split into (mapped tasks are scheduler rows).
    :param parallel_batches: how many batch tasks run at once, which the batch sizes are shaped
        for; default the ``[iys] api_concurrency`` setting (what the DAGs let run at once, 4 unless
        set), read when the operator is created, that is when the DAG file is parsed.
    :param rescan: abandon the current or finished scan and start over. (templated)
    :param dry_run: plan and report, write nothing. (templated)
    :param source_statement_timeout: seconds each statement running the source query may take
        (it runs read-only, see :mod:`iys_provider.people.user_source`); default 15 minutes, generous:
        snapshotting a million users sorts them for about 2 s.
    :param max_leaver_share: a plan that would forget more than this share of the users synced so
        far, or all of them, fails and forgets nobody (a broken source query looks like everybody
        leaving); 1 lets any departure through. Default 0.5. (templated)
    """

    lineage = TaskLineage(
        reads=("user_sources", "initial_sync_scans"),
        writes=(
            "initial_sync_scans",
            "initial_sync_batches",
            "initial_sync_queue",
            "user_recipients",
            "rejected_recipients",
            "user_sources",
        ),
        user_source=True,
    )

    template_fields: Sequence[str] = (
        *IysBaseOperator.template_fields,
        "recipients_sql",
        "batch_size",
        "rescan",
        "dry_run",
        "max_leaver_share",
    )
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"recipients_sql": "sql"}

    def __init__(
        self,
        *,
        recipients_sql: str | None = None,
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        max_batches: int = DEFAULT_MAX_BATCHES,
        parallel_batches: int | None = None,
        rescan: bool | str = False,
        dry_run: bool | str = False,
        source_statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        max_leaver_share: float | str = DEFAULT_MAX_LEAVER_SHARE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recipients_sql = recipients_sql
        self.source_statement_timeout = source_statement_timeout
        self.batch_size = batch_size
        self.max_batches = max_batches
        # Read at parse time, never in execute: a worker plans for what its parse of the DAG gave.
        self.parallel_batches = (
            load_settings("api_concurrency").api_concurrency if parallel_batches is None else parallel_batches
        )
        self.rescan = rescan
        self.dry_run = dry_run
        self.max_leaver_share = max_leaver_share

    def execute(self, context: Context) -> list[PlannedBatch]:
        brand_code = self.iys_hook.brand_code
        source = configured_user_source(
            self.recipients_sql, iys_conn_id=self.iys_conn_id, statement_timeout=self.source_statement_timeout
        )
        self._lineage_source_sql = source.recipients_sql  # OpenLineage reads it after the task
        max_leaver_share = parse_max_leaver_share(self.max_leaver_share)
        with self.database() as conn:
            if as_bool(self.dry_run, "dry_run"):
                self._log_dry_run(source.count_rows(conn).users)
                self._log_dry_run_leavers(
                    len(source.read_departed(conn, brand_code)), known_users(conn, brand_code), max_leaver_share
                )
                return []
            try:
                schedule, forgotten = schedule_scan(
                    conn,
                    brand_code=brand_code,
                    source=source,
                    batch_size=as_int(self.batch_size, "batch_size"),
                    max_batches=self.max_batches,
                    parallel_batches=self._parallel_batches(),
                    rescan=as_bool(self.rescan, "rescan"),
                    max_leaver_share=max_leaver_share,
                )
            except TooManyLeaversError as exc:
                # Not retried: the source query would say the same until someone looks at it.
                raise AirflowFailException(f"Planning refused: {exc}") from None
        self._log_schedule(schedule)
        self._report_leavers(context, forgotten)
        return [
            PlannedBatch(
                scan_id=schedule.scan_id,
                batch_no=batch.batch_no,
                of=schedule.batch_count,
                first=batch.first_user_id,
                last=batch.last_user_id,
            )
            for batch in schedule.pending
        ]

    def _parallel_batches(self) -> int:
        return max(1, self.parallel_batches)

    def _log_dry_run(self, total_users: int) -> None:
        batch_size = as_int(self.batch_size, "batch_size")
        sizes = batch_sizes(total_users, batch_size, max_batches=self.max_batches, parallel=self._parallel_batches())
        self.log.info(
            "Dry run: %d users would be processed in %d batches of up to %d; nothing written",
            total_users,
            len(sizes),
            max(sizes, default=batch_size),
        )

    def _log_dry_run_leavers(self, leavers: int, known: int, max_leaver_share: float) -> None:
        if not leavers:
            return
        refused = refusal(leavers=leavers, known_users=known, max_share=max_leaver_share)
        self.log.info(
            "Dry run: %d of the %d users synced so far are no longer returned by the source query; a plan %s",
            leavers,
            known,
            f"would be refused: {refused}" if refused else "would forget them",
        )

    def _report_leavers(self, context: Context, forgotten: Forgotten) -> None:
        result: LeaversResult = leavers_result(forgotten)
        if forgotten.leavers:
            self.log.info(
                "Forgot %d users the new scan's snapshot does not hold (they left the source): %d links and %d "
                "quarantined values removed",
                forgotten.leavers,
                forgotten.links_removed,
                forgotten.quarantine_rows_removed,
            )
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="leavers", value=result)

    def _log_schedule(self, schedule: ScanSchedule) -> None:
        if schedule.step is ScanStep.DONE:
            finished = schedule.last_finished
            self.log.info(
                "Every existing user was processed (scan %s finished %s, %s users); nothing to do. "
                "New and changed users are picked up by iys_incremental_sync; trigger with rescan=true to start over.",
                finished.scan_id,
                finished.finished_at,
                finished.total_users,
            )
            return
        if schedule.step is ScanStep.RESUME:
            self.log.info(
                "Resuming scan %s: %d of %d batches still to process",
                schedule.scan_id,
                len(schedule.pending),
                schedule.batch_count,
            )
            return
        if schedule.step is ScanStep.RESCAN:
            abandoned = " (open scan abandoned)" if schedule.abandoned_open_scan else ""
            self.log.info("Rescan requested: starting over%s", abandoned)
        plan = schedule.planned
        if plan.repeated_user_ids:
            self.log.warning(
                "%d source rows repeat a user_id already seen; only the first row of each user is used",
                plan.repeated_user_ids,
            )
        if plan.null_user_ids:
            self.log.warning(
                "%d source rows have a NULL user_id and cannot be linked; fix the source query", plan.null_user_ids
            )
        self.log.info(
            "Planned scan %s: %d users in %d batches of up to %d",
            plan.scan_id,
            plan.users,
            plan.batch_count,
            plan.batch_size,
        )


class IysInitialSyncBatchOperator(IysBaseOperator):
    """Check one planned batch of users against İYS and record the result in one transaction.

    Reads the batch's users, normalises phones and e-mails (invalid ones go to
    ``iys.rejected_recipients`` with a reason), asks multi status about each unique recipient
    per channel in calls of ≤1000, then writes consents, user links, quarantine rows and the
    batch's completion together. A batch already finished (by an earlier try or run) is a no-op.

    :param batch: one element of ``IysPlanInitialSyncOperator``'s result.
    :param request_concurrency: status calls in flight at once for the scan's last batch; earlier
        batches keep up to twice as many, so they finish first
        (:func:`~iys_provider.initial_sync.scan_ledger.batch_request_concurrency`). The shared rate limiter still
        bounds the aggregate rate; this only keeps latency from capping it.
    """

    lineage = TaskLineage(
        reads=("initial_sync_queue", "initial_sync_batches"),
        writes=("consents", "user_recipients", "rejected_recipients", "user_sources", "initial_sync_batches"),
        iys_reads=True,
    )

    def __init__(self, *, batch: PlannedBatch, request_concurrency: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batch = batch
        self.request_concurrency = request_concurrency

    def execute(self, context: Context) -> InitialSyncBatchResult:
        batch = ScanBatch(int(self.batch["scan_id"]), int(self.batch["batch_no"]))
        with self.database() as conn:
            record = read_batch_record(conn, batch)
            if record is None:
                raise AirflowException(
                    f"batch {batch.batch_no} of scan {batch.scan_id} is not planned; rerun plan_batches"
                )
            label = f"{batch.batch_no + 1}/{record.batch_count}"
            if record.state is BatchState.ABANDONED:
                self.log.info("Batch %s belongs to scan %s, abandoned by a rescan; nothing to do", label, batch.scan_id)
                return InitialSyncBatchResult(batch_no=batch.batch_no, abandoned=True)
            if record.state is BatchState.FINISHED:
                self.log.info("Batch %s was already finished at %s; nothing to do", label, record.finished_at)
                return InitialSyncBatchResult(batch_no=batch.batch_no, already_done=True)
            if record.brand_code != self.iys_hook.brand_code:
                raise AirflowException(
                    f"scan {batch.scan_id} belongs to brand {record.brand_code}, "
                    f"the connection to brand {self.iys_hook.brand_code}"
                )
            outcome = check_scan_batch(
                self.iys_hook,
                conn,
                brand_code=record.brand_code,
                batch=batch,
                concurrency=batch_request_concurrency(batch.batch_no, record.batch_count, self.request_concurrency),
            )
            self._log_progress(label, outcome, scan_progress(conn, batch.scan_id))
            stats = self.iys_hook.stats
            return InitialSyncBatchResult(
                batch_no=batch.batch_no,
                users=outcome.users,
                recipients=outcome.recipients,
                quarantined=outcome.quarantined,
                status_changes=outcome.status_changes,
                requests=outcome.requests,
                retries=stats.retries,
                rate_limited=stats.rate_limited,
                api_seconds=round(outcome.api_seconds, 3),
                local_seconds=round(outcome.local_seconds, 3),
                write_seconds=round(outcome.write_seconds, 3),
                rows_written=outcome.rows_written,
                peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            )

    def _log_progress(self, label: str, outcome: CheckOutcome, scan: ScanProgress) -> None:
        eta = scan.eta_seconds
        self.log.info(
            "Batch %s done: %d users, %d unique recipients, %d quarantined, %d İYS requests in %.1f s "
            "(%.2f req/s; %d ≤%d-recipient calls), local work %.2f s (%.0f users/s). Scan: %d/%d batches, "
            "%d users, ETA %s",
            label,
            outcome.users,
            outcome.recipients,
            outcome.quarantined,
            outcome.requests,
            outcome.api_seconds,
            outcome.requests / outcome.api_seconds if outcome.api_seconds else 0.0,
            outcome.status_calls,
            MAX_RECIPIENTS_PER_STATUS_CALL,
            outcome.local_seconds,
            outcome.users / outcome.local_seconds if outcome.local_seconds else 0.0,
            scan.batches_done,
            scan.batch_count,
            scan.users_done,
            "unknown" if eta is None else f"{eta:.0f} s",
        )


class IysFinishInitialSyncOperator(IysBaseOperator):
    """Close the scan once every batch is finished, and record it in ``iys.sync_state``.

    Fails (so the run is visibly incomplete) if batches remain; the next run resumes them.
    """

    lineage = TaskLineage(reads=("initial_sync_batches",), writes=("initial_sync_scans", "sync_state"))

    def execute(self, context: Context) -> FinishInitialSyncResult:
        brand_code = self.iys_hook.brand_code
        with self.database() as conn:
            scan = open_scan(conn, brand_code)
            if scan is None:
                self.log.info("No open scan: the initial sync is complete")
                return FinishInitialSyncResult(complete=True)
            users = finish_scan(conn, brand_code, scan.scan_id)
            if users is None:
                raise AirflowException(
                    f"Scan {scan.scan_id} still has {len(pending_batches(conn, scan.scan_id))} unfinished batches; "
                    "the next run (or clearing the failed sync_batch tasks) resumes them."
                )
            totals = consent_totals(conn, brand_code)
            ratio = self.iys_hook.success_ratio_24h()
        self.log.info("Initial sync scan %s complete: %d users. Consents now:", scan.scan_id, users)
        for channel in totals:
            self.log.info("  %-6s ONAY %d, RET %d, none %d", channel.type, channel.onay, channel.ret, channel.unknown)
        self.log.info("İYS success ratio of %s: %s", self.iys_hook.settings.ip_budget_key, ratio.describe())
        return FinishInitialSyncResult(complete=True, scan_id=scan.scan_id, users=users)
