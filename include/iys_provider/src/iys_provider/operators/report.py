"""One row per incremental run in ``iys.sync_runs``, the same summary in the log, and the asset event."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from airflow.sdk import Asset, Context
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from iys_provider.assets import CONSENTS_ASSET
from iys_provider.consent_store import record_sendable_counts
from iys_provider.deadline_watch import DEFAULT_DEADLINE_MARGIN, overdue_days, watch_ret_deadlines
from iys_provider.operators.base import IysBaseOperator
from iys_provider.operators.changes import PullResult
from iys_provider.operators.leavers import LeaversResult
from iys_provider.operators.new_users import NewUsersResult
from iys_provider.operators.retention import RetentionResult
from iys_provider.outbox_push import PushResult
from iys_provider.outbox_store import acknowledge_rets, acknowledged_rets, held_updates, unsent_rets_by_day
from iys_provider.sensors.batch_results import BatchResultsSummary
from iys_provider.templating import as_bool, as_float

INSERT_RUN_SQL = """
INSERT INTO iys.sync_runs (run_id, brand_code, dag_id, started_at, pulled_iys, pulled_hs, applied, ignored_stale,
                           new_users_checked, pushed, skipped, rejected, failed, feed_lag_seconds, details,
                           unsent_rets, rets_due_within_24h, oldest_unsent_ret_deadline,
                           success_ratio_24h, calls_24h, client_errors_24h, leavers)
VALUES (%(run_id)s, %(brand)s, %(dag_id)s, %(started_at)s, %(pulled_iys)s, %(pulled_hs)s, %(applied)s,
        %(ignored_stale)s, %(new_users_checked)s, %(pushed)s, %(skipped)s, %(rejected)s, %(failed)s,
        %(feed_lag_seconds)s, %(details)s::jsonb, %(unsent_rets)s, %(rets_due_within_24h)s,
        %(oldest_unsent_ret_deadline)s, %(success_ratio_24h)s, %(calls_24h)s, %(client_errors_24h)s, %(leavers)s)
ON CONFLICT (run_id, brand_code, dag_id) DO UPDATE
   SET finished_at = now(), pulled_iys = EXCLUDED.pulled_iys, pulled_hs = EXCLUDED.pulled_hs,
       applied = EXCLUDED.applied, ignored_stale = EXCLUDED.ignored_stale,
       new_users_checked = EXCLUDED.new_users_checked, pushed = EXCLUDED.pushed, skipped = EXCLUDED.skipped,
       rejected = EXCLUDED.rejected, failed = EXCLUDED.failed, feed_lag_seconds = EXCLUDED.feed_lag_seconds,
       details = EXCLUDED.details, unsent_rets = EXCLUDED.unsent_rets,
       rets_due_within_24h = EXCLUDED.rets_due_within_24h,
       oldest_unsent_ret_deadline = EXCLUDED.oldest_unsent_ret_deadline,
       success_ratio_24h = EXCLUDED.success_ratio_24h, calls_24h = EXCLUDED.calls_24h,
       client_errors_24h = EXCLUDED.client_errors_24h, leavers = EXCLUDED.leavers
"""
FAILED_STATES = {"failed", "upstream_failed"}


class RunFigures(TypedDict):
    """The columns of ``iys.sync_runs`` a run fills from its steps' results."""

    pulled_iys: int
    pulled_hs: int
    applied: int
    ignored_stale: int
    new_users_checked: int
    pushed: int
    skipped: int
    rejected: int
    failed: int
    feed_lag_seconds: int | None
    leavers: int


class RunDetails(TypedDict):
    """``iys.sync_runs.details``."""

    consent_changes: int
    submitted: int
    left_pending: int
    batches_reopened: int
    movements_held: int
    quarantined: int
    requests: int
    failed_steps: list[str]
    overdue_rets: int
    acknowledged_rets: int
    held_for_approval: int
    links_removed: int
    quarantine_rows_removed: int
    consent_events_deleted: int
    finished_updates_deleted: int


class SyncReport(RunFigures, RunDetails):
    """What the report task returns (its XCom): the run's figures and details together."""


class IysSyncReportOperator(IysBaseOperator):
    """Summarise the run from the steps' results, write ``iys.sync_runs``, then fail if a step failed.

    Runs with ``trigger_rule="all_done"`` so failed runs get their row too; it then fails itself,
    so the run is not mistaken for a success.

    It also watches the legal clock of opt-outs (:mod:`iys_provider.deadline_watch`): the row
    records how many RETs are not in İYS yet, how many reach their deadline within 24 h and the
    earliest deadline; when one is within ``ret_deadline_margin_hours`` of it, the run fails
    (after every step has done its work), so alerting on failed runs catches it.

    Undelivered RETs past their deadline fail every run too, until a person acknowledges them:
    ``acknowledge_overdue_rets`` (a DAG Param) does it in this run, recording the user who
    triggered it; the rows and their state stay.

    :param ret_deadline_margin_hours: alarm margin before a RET's legal deadline (templated).
    :param acknowledge_overdue_rets: acknowledge the RETs past their deadline before the watch
        looks (templated; a string "true" counts).
    :param approval_task_id: the :class:`~iys_provider.operators.outbox_approval.IysApproveUnusualVolumeOperator`
        task: the run fails when it did (a rejection or no answer). The row records the held updates.
    :param leavers_task_id: the :class:`~iys_provider.operators.leavers.IysForgetLeaversOperator`
        task, whose counts the row records.
    :param retention_task_id: the :class:`~iys_provider.operators.retention.IysApplyRetentionOperator`
        task, whose deletions ``details`` records.
    """

    template_fields: Sequence[str] = (
        *IysBaseOperator.template_fields,
        "ret_deadline_margin_hours",
        "acknowledge_overdue_rets",
    )

    def __init__(
        self,
        *,
        pull_task_ids: Sequence[str],
        new_users_task_id: str | None = None,
        push_task_id: str | None = None,
        batch_results_task_id: str | None = None,
        leavers_task_id: str | None = None,
        retention_task_id: str | None = None,
        approval_task_id: str | None = None,
        ret_deadline_margin_hours: float | str = DEFAULT_DEADLINE_MARGIN.total_seconds() / 3600,
        acknowledge_overdue_rets: bool | str = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.ret_deadline_margin_hours = ret_deadline_margin_hours
        self.pull_task_ids = list(pull_task_ids)
        self.new_users_task_id = new_users_task_id
        self.push_task_id = push_task_id
        self.batch_results_task_id = batch_results_task_id
        self.leavers_task_id = leavers_task_id
        self.retention_task_id = retention_task_id
        self.approval_task_id = approval_task_id
        self.acknowledge_overdue_rets = acknowledge_overdue_rets

    def execute(self, context: Context) -> SyncReport:
        ti = context["ti"]

        def result(task_id: str | None) -> Any:
            return (ti.xcom_pull(task_ids=task_id) or {}) if task_id else {}

        pulls: dict[str, PullResult] = {r["stream"]: r for r in map(result, self.pull_task_ids) if r}
        new_users: NewUsersResult | dict = result(self.new_users_task_id)
        push: PushResult | dict = result(self.push_task_id)
        settled: BatchResultsSummary | dict = result(self.batch_results_task_id)
        leavers: LeaversResult | dict = result(self.leavers_task_id)
        retention: RetentionResult | dict = result(self.retention_task_id)
        lags = [r["feed_lag_seconds"] for r in pulls.values() if r.get("feed_lag_seconds") is not None]
        summary = RunFigures(
            pulled_iys=pulls.get("IYS", {}).get("pulled", 0),
            pulled_hs=pulls.get("HS", {}).get("pulled", 0),
            applied=sum(r.get("applied", 0) for r in pulls.values()),
            ignored_stale=sum(r.get("ignored_stale", 0) for r in pulls.values()),
            new_users_checked=new_users.get("users_checked", 0),
            pushed=push.get("sent", 0) + settled.get("sent", 0),
            skipped=push.get("skipped", 0) + settled.get("skipped", 0),
            rejected=push.get("rejected", 0) + settled.get("rejected", 0),
            failed=push.get("failed", 0),
            feed_lag_seconds=max(lags) if lags else None,
            leavers=leavers.get("leavers", 0),
        )
        consent_changes = summary["applied"] + new_users.get("status_changes", 0) + summary["pushed"]
        states = self._step_states(context)
        failed_steps = sorted(task for task, state in states.items() if state in FAILED_STATES)
        details = RunDetails(
            consent_changes=consent_changes,
            submitted=push.get("submitted", 0),
            left_pending=push.get("pending", 0) + push.get("deferred", 0),
            batches_reopened=push.get("expired_batches", 0) + settled.get("reopened", 0),
            movements_held=sum(r.get("held", 0) for r in pulls.values()),
            quarantined=new_users.get("quarantined", 0),
            requests=new_users.get("requests", 0),
            failed_steps=failed_steps,
            overdue_rets=0,
            acknowledged_rets=0,
            held_for_approval=0,
            links_removed=leavers.get("links_removed", 0),
            quarantine_rows_removed=leavers.get("quarantine_rows_removed", 0),
            consent_events_deleted=retention.get("consent_events_deleted", 0),
            finished_updates_deleted=retention.get("finished_updates_deleted", 0),
        )
        brand_code = self.iys_hook.brand_code
        dag_run = context["dag_run"]
        with self.database() as conn:
            # The run is done writing consents and links: what the İYS page shows as sendable.
            record_sendable_counts(conn, brand_code)
            now = datetime.now(UTC)
            if as_bool(self.acknowledge_overdue_rets, "acknowledge_overdue_rets"):
                self._acknowledge_overdue(conn, brand_code, now, dag_run)
            watch = watch_ret_deadlines(
                unsent_rets_by_day(conn, brand_code),
                now,
                timedelta(hours=as_float(self.ret_deadline_margin_hours, "ret_deadline_margin_hours")),
            )
            details["overdue_rets"] = watch.overdue
            details["acknowledged_rets"] = acknowledged_rets(conn, brand_code)
            details["held_for_approval"] = held_updates(conn, brand_code)
            ratio = self.iys_hook.success_ratio_24h()  # İYS's whitelist rule, counted in the shared state
            conn.execute(
                INSERT_RUN_SQL,
                {
                    **summary,
                    "run_id": dag_run.run_id,
                    "brand": brand_code,
                    "dag_id": dag_run.dag_id,
                    "started_at": getattr(dag_run, "start_date", None) or datetime.now(UTC),
                    "details": json.dumps(details),
                    "unsent_rets": watch.unsent,
                    "rets_due_within_24h": watch.due_within_24h,
                    "oldest_unsent_ret_deadline": watch.earliest_deadline,
                    "success_ratio_24h": ratio.ratio,
                    "calls_24h": ratio.calls,
                    "client_errors_24h": ratio.client_errors,
                },
            )
        self.log.info(
            "İYS sync summary (brand %s): pulled IYS %d / HS %d, applied %d, ignored as stale %d, new users "
            "checked %d, leavers forgotten %d, pushed %d, skipped %d, rejected %d, failed %d, left pending %d, "
            "feed lag %s s%s",
            brand_code,
            summary["pulled_iys"],
            summary["pulled_hs"],
            summary["applied"],
            summary["ignored_stale"],
            summary["new_users_checked"],
            summary["leavers"],
            summary["pushed"],
            summary["skipped"],
            summary["rejected"],
            summary["failed"],
            details["left_pending"],
            summary["feed_lag_seconds"],
            f"; FAILED steps: {', '.join(failed_steps)}" if failed_steps else "",
        )
        self.log.info(
            "Opt-outs not in İYS yet: %d (%d due within 24 h, earliest deadline %s); %d past their deadline",
            watch.unsent,
            watch.due_within_24h,
            f"{watch.earliest_deadline:%Y-%m-%d %H:%M %Z}" if watch.earliest_deadline else "-",
            watch.overdue,
        )
        if details["held_for_approval"]:
            self.log.warning("%d outbox updates are held for a person's approval", details["held_for_approval"])
        self.log.info("İYS success ratio of %s: %s", self.iys_hook.settings.ip_budget_key, ratio.describe())
        problems = []
        if failed_steps:
            problems.append(f"steps failed: {', '.join(failed_steps)} (see their logs)")
        if watch.alarm:
            problems.append(watch.alarm_message())
        if ratio.iys_would_warn:
            problems.append(
                f"İYS would warn this IP (under 70 % success with 20,000+ calls in 24 h): {ratio.describe()}"
            )
        if problems:
            raise AirflowException("; ".join(problems) + "; the report row is written")
        return SyncReport(**summary, **details)

    def _acknowledge_overdue(self, conn, brand_code: int, now: datetime, dag_run) -> None:
        by = getattr(dag_run, "triggering_user_name", None) or "unknown"
        days = overdue_days(unsent_rets_by_day(conn, brand_code), now)
        count = acknowledge_rets(
            conn, brand_code, days, by=by, note=f"acknowledged through run {dag_run.run_id} of {dag_run.dag_id}"
        )
        self.log.warning("%s acknowledged %d opt-outs (RET) past their legal deadline; the rows stay", by, count)

    def _step_states(self, context) -> dict[str, str]:
        ti = context["ti"]
        task_ids = [
            t
            for t in (
                *self.pull_task_ids,
                self.new_users_task_id,
                self.leavers_task_id,
                self.approval_task_id,
                self.push_task_id,
                self.batch_results_task_id,
                self.retention_task_id,
            )
            if t
        ]
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=task_ids, run_ids=[ti.run_id])
        return {task: str(state) for task, state in states.get(ti.run_id, {}).items()}


class IysAnnounceConsentChangesOperator(IysBaseOperator):
    """Emit an event on an asset (default ``iys_consents``) when this run changed consents; skip otherwise.

    Downstream campaign DAGs can use ``schedule=[CONSENTS_ASSET]`` to run after fresh consents, or
    ``schedule=[consents_asset(conn_id)]`` for one brand of several (``IYS_CONNECTIONS``).

    :param report_task_id: the :class:`IysSyncReportOperator` task whose result is announced.
    :param asset: the asset to update, e.g. the brand's
        :func:`~iys_provider.assets.consents_asset`; it becomes one of this task's outlets.
    """

    def __init__(self, *, report_task_id: str, asset: Asset = CONSENTS_ASSET, **kwargs: Any) -> None:
        outlets = list(kwargs.pop("outlets", None) or [])
        # Airflow records an event only for an asset among the task's outlets.
        kwargs["outlets"] = outlets if asset in outlets else [*outlets, asset]
        super().__init__(**kwargs)
        self.report_task_id = report_task_id
        self.asset = asset

    def execute(self, context: Context) -> None:
        report = context["ti"].xcom_pull(task_ids=self.report_task_id) or {}
        changes = report.get("consent_changes", 0)
        if not changes:
            raise AirflowSkipException("No consent changed in this run; no asset event")
        context["outlet_events"][self.asset].extra = {
            "brand_code": self.iys_hook.brand_code,
            "consent_changes": changes,
            "run_id": context["dag_run"].run_id,
        }
        self.log.info("Announced %d consent changes on %s", changes, self.asset.uri)
