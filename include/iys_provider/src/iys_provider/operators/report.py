"""One row per incremental run in ``iys.sync_runs``, the same summary in the log, and the asset event."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Context
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from iys_provider.assets import CONSENTS_ASSET
from iys_provider.consent_store import record_sendable_counts
from iys_provider.lineage import TaskLineage, convert_asset_to_openlineage
from iys_provider.operators.base import IysBaseOperator
from iys_provider.outbox.deadline_watch import DEFAULT_DEADLINE_MARGIN, overdue_days, watch_ret_deadlines
from iys_provider.outbox.store import acknowledge_rets, acknowledged_rets, held_updates, unsent_rets_by_day
from iys_provider.run_report.sync_runs import RunDetails, RunFigures, SyncReport, run_details, run_figures, step_results
from iys_provider.run_report.sync_runs_store import record_sync_run
from iys_provider.templating import as_bool, as_float

__all__ = ["IysAnnounceConsentChangesOperator", "IysSyncReportOperator", "RunDetails", "RunFigures", "SyncReport"]

FAILED_STATES = {"failed", "upstream_failed"}


class IysSyncReportOperator(IysBaseOperator):
    """Summarise the run from the steps' results, write ``iys.sync_runs``, then fail if a step failed.

    Runs with ``trigger_rule="all_done"`` so failed runs get their row too; it then fails itself,
    so the run is not mistaken for a success.

    It also watches the legal clock of opt-outs (:mod:`iys_provider.outbox.deadline_watch`): the row
    records how many RETs are not in İYS yet, how many reach their deadline within 24 h and the
    earliest deadline; when one is within ``ret_deadline_margin_hours`` of it, the run fails
    (after every step has done its work), so alerting on failed runs catches it.

    Undelivered RETs past their deadline fail every run too, until a person acknowledges them:
    ``acknowledge_overdue_rets`` (a DAG Param) does it in this run, recording the user who
    triggered it; the rows and their state stay.

    :param ret_deadline_margin_hours: alarm margin before a RET's legal deadline (templated).
    :param acknowledge_overdue_rets: acknowledge the RETs past their deadline before the watch
        looks (templated; a string "true" counts).
    :param step_task_ids: the steps whose results the row records and whose failure fails the run;
        default: every task upstream of this one, so a step added to the DAG before the report is
        recorded without any change here. Each step returns a small result naming its kind
        (:mod:`iys_provider.run_report.sync_runs` reads the figures it knows; it keeps any other result whole
        in ``details.other_steps``).
    :param pull_task_ids: step tasks named one by one, as are ``new_users_task_id``, ``push_task_id``,
        ``batch_results_task_id``, ``leavers_task_id``, ``retention_task_id`` and ``approval_task_id``;
        when any is given, the steps are these and ``step_task_ids`` (not every upstream task).
    """

    lineage = TaskLineage(reads=("consent_updates", "consents"), writes=("sync_runs", "sendable_counts"))

    template_fields: Sequence[str] = (
        *IysBaseOperator.template_fields,
        "ret_deadline_margin_hours",
        "acknowledge_overdue_rets",
    )

    def __init__(
        self,
        *,
        step_task_ids: Sequence[str] | None = None,
        pull_task_ids: Sequence[str] = (),
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
        named = (
            new_users_task_id,
            leavers_task_id,
            approval_task_id,
            push_task_id,
            batch_results_task_id,
            retention_task_id,
        )
        self.step_task_ids = [*(step_task_ids or ()), *pull_task_ids, *(t for t in named if t)] or None
        self.acknowledge_overdue_rets = acknowledge_overdue_rets

    def execute(self, context: Context) -> SyncReport:
        ti = context["ti"]
        step_ids = self._step_task_ids()
        results = step_results({task_id: ti.xcom_pull(task_ids=task_id) for task_id in step_ids})
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=step_ids, run_ids=[ti.run_id])
        failed_steps = [task for task, state in states.get(ti.run_id, {}).items() if str(state) in FAILED_STATES]
        summary = run_figures(results)
        details = run_details(results, failed_steps=failed_steps)
        failed_steps = details["failed_steps"]
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
            record_sync_run(
                conn,
                run_id=dag_run.run_id,
                brand_code=brand_code,
                dag_id=dag_run.dag_id,
                started_at=getattr(dag_run, "start_date", None) or datetime.now(UTC),
                figures=summary,
                details=details,
                unsent_rets=watch.unsent,
                rets_due_within_24h=watch.due_within_24h,
                oldest_unsent_ret_deadline=watch.earliest_deadline,
                success_ratio_24h=ratio.ratio,
                calls_24h=ratio.calls,
                client_errors_24h=ratio.client_errors,
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

    def _step_task_ids(self) -> list[str]:
        if self.step_task_ids is not None:
            return list(self.step_task_ids)
        return sorted(self.get_flat_relative_ids(upstream=True))


class IysAnnounceConsentChangesOperator(IysBaseOperator):
    """Emit an event on an asset (default ``iys_consents``) when this run changed consents; skip otherwise.

    Downstream campaign DAGs can use ``schedule=[CONSENTS_ASSET]`` to run after fresh consents, or
    ``schedule=[consents_asset(conn_id)]`` for one brand of several (``IYS_CONNECTIONS``).

    :param report_task_id: the :class:`IysSyncReportOperator` task whose result is announced.
    :param asset: the asset to update, e.g. the brand's
        :func:`~iys_provider.assets.consents_asset`; it becomes one of this task's outlets.
    """

    lineage = TaskLineage(reads=("sync_runs",))

    def __init__(self, *, report_task_id: str, asset: Asset = CONSENTS_ASSET, **kwargs: Any) -> None:
        outlets = list(kwargs.pop("outlets", None) or [])
        # Airflow records an event only for an asset among the task's outlets.
        kwargs["outlets"] = outlets if asset in outlets else [*outlets, asset]
        super().__init__(**kwargs)
        self.report_task_id = report_task_id
        self.asset = asset

    def _openlineage_facets(self) -> Any:
        lineage = super()._openlineage_facets()
        # The announced asset is what this task produces: campaign DAGs scheduled on it follow from here.
        lineage.outputs.append(convert_asset_to_openlineage(self.asset))
        return lineage

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
