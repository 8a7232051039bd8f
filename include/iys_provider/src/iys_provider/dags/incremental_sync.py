"""The ``iys_incremental_sync`` DAG: follow İYS every night and push the brand's own updates."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from iys_provider.config import IysSettings, load_settings
from iys_provider.dags.common import CONNECTION_ARGS, IysBrand, IysConcurrency, iys_brands, iys_dag
from iys_provider.models import ChangeStream
from iys_provider.operators.changes import DEFAULT_MAX_PULL_GAP_HOURS, IysPullChangesOperator
from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator
from iys_provider.operators.leavers import IysForgetLeaversOperator
from iys_provider.operators.new_users import IysCheckNewUsersOperator
from iys_provider.operators.outbox_approval import DEFAULT_APPROVAL_TIMEOUT_HOURS, IysApproveUnusualVolumeOperator
from iys_provider.operators.report import IysAnnounceConsentChangesOperator, IysSyncReportOperator
from iys_provider.operators.retention import IysApplyRetentionOperator
from iys_provider.outbox.approval import DEFAULT_MAX_SHARE, DEFAULT_MAX_UPDATES
from iys_provider.outbox.deadline_watch import DEFAULT_DEADLINE_MARGIN
from iys_provider.people.leavers import DEFAULT_MAX_LEAVER_SHARE
from iys_provider.people.retention import (
    MIN_CONSENT_EVENTS_RETENTION_DAYS,
    MIN_FINISHED_UPDATES_RETENTION_DAYS,
    RetentionPolicy,
)
from iys_provider.sensors.batch_results import IysBatchResultSensor

DOC = """
### İYS incremental sync

1. Pulls both change streams (`IYS`: recipients' own changes; `HS`: service-provider writes) into
   `iys.consent_events` and applies what is newer to `iys.consents` — events, state and cursor in
   one transaction per page. Fails with the remedy (a rescan) if the last pull is older than
   `max_pull_gap_hours`, since İYS keeps only 7 days of changes.
2. Checks new and changed users (multi status), quarantining invalid addresses, and forgets the
   users the source query no longer returns (their links, fingerprints and quarantined values);
   refused, forgetting nobody, when more than `max_leaver_share` of the users would leave at once.
3. Holds an unusual volume of outbox updates (more than `approval_max_updates`, or more than
   `approval_max_share` of the brand's ONAY consents) and waits for a person's approval in
   Airflow's *awaiting input* state: Approve sends them in this run; Reject or no answer keeps
   them unsent and fails the run.
4. Pushes pending rows of `iys.consent_updates` for recipients İYS already holds — never creating
   one — and waits for batch results in reschedule mode. Every opt-out is verified against İYS's
   current status (multi status) right before it is sent. The push runs even when a pull failed;
   a row that failed for a passing reason (5xx, network) is tried again while İYS would accept it.
5. Deletes change-feed events and settled outbox rows older than their retention, when one is set
   (`[iys] consent_events_retention_days`, `finished_updates_retention_days`; default: keep).
6. Writes a row to `iys.sync_runs` (with the opt-out deadline watch) and announces consent
   changes on the `iys_consents` asset. The run fails when any step failed, when an opt-out not
   yet in İYS is within `ret_deadline_margin_hours` of its legal deadline, and when one is past
   it, until a person acknowledges it (`acknowledge_overdue_rets`).

Reruns and backfills are harmless: every step works from cursors and states, not from the run's
dates.
"""


DAG_ID = "iys_incremental_sync"


def retention_of(settings: IysSettings) -> RetentionPolicy:
    """The default retention of every brand's runs, from ``[iys] consent_events_retention_days`` and
    ``finished_updates_retention_days`` (unset or empty: keep forever). Read at parse time, like the
    schedules; an invalid value fails the DAG file's import with the reason."""
    return RetentionPolicy(settings.consent_events_retention_days, settings.finished_updates_retention_days)


def build_incremental_sync_dags(
    concurrency: IysConcurrency | None = None, *, settings: IysSettings | None = None
) -> list[DAG]:
    """One incremental-sync DAG per connection in ``[iys] connections`` (:func:`~iys_provider.dags.common.iys_brands`)."""
    settings = settings or load_settings()
    concurrency = concurrency or IysConcurrency.from_settings(settings)
    return [
        build_incremental_sync_dag(concurrency=concurrency, brand=brand, settings=settings)
        for brand in iys_brands(settings=settings)
    ]


def build_incremental_sync_dag(
    dag_id: str | None = None,
    concurrency: IysConcurrency | None = None,
    brand: IysBrand | None = None,
    *,
    settings: IysSettings | None = None,
) -> DAG:
    """The incremental sync of ``brand`` (default: the single brand of ``iys_default``), as ``dag_id`` or the brand's id.

    ``settings``: the deployment settings, read once by the caller; by default read now.
    """
    settings = settings or load_settings()
    concurrency = concurrency or IysConcurrency.from_settings(settings)
    brand = brand or IysBrand()
    retention = retention_of(settings)
    iys = concurrency.task_args  # every task that calls İYS
    with iys_dag(
        dag_id=dag_id or brand.dag_id(DAG_ID),
        description="Pull İYS changes, pick up new users, push local updates for existing recipients",
        doc_md=DOC,
        cron=settings.incremental_sync_cron,
        concurrency=concurrency,
        brand=brand,
        params={
            "max_pull_gap_hours": Param(
                DEFAULT_MAX_PULL_GAP_HOURS,
                type="integer",
                minimum=1,
                maximum=167,
                title="Max pull gap (hours)",
                description="Fail instead of pulling when the last complete pull is older than this; İYS keeps "
                "7 days minus one hour (167 h) of changes.",
            ),
            "ret_deadline_margin_hours": Param(
                DEFAULT_DEADLINE_MARGIN.total_seconds() / 3600,
                type="number",
                minimum=0,
                maximum=168,
                title="Opt-out deadline alarm (hours)",
                description="Fail the run when an opt-out (RET) not yet in İYS is this close to its legal "
                "deadline (consent date + 3 Turkish business days).",
            ),
            "acknowledge_overdue_rets": Param(
                False,
                type="boolean",
                title="Acknowledge opt-outs past their deadline",
                description="Record that you have dealt with the opt-outs (RET) that never reached İYS and are past "
                "their legal deadline (your name and the time are stored on each row); they stop failing the runs. "
                "The rows stay, and their users stay out of iys.sendable.",
            ),
            "approval_max_updates": Param(
                DEFAULT_MAX_UPDATES,
                type="integer",
                minimum=0,
                title="Approve above (updates)",
                description="When the outbox holds more updates than this, nobody having approved them, they wait "
                "for a person's approval before anything is sent to İYS.",
            ),
            "approval_max_share": Param(
                DEFAULT_MAX_SHARE,
                type="number",
                exclusiveMinimum=0,
                maximum=1,
                title="Approve above (share of ONAY consents)",
                description="When the outbox's updates are more than this share of the brand's ONAY consents (from "
                "100 updates on), they wait for a person's approval before anything is sent to İYS.",
            ),
            "approval_timeout_hours": Param(
                DEFAULT_APPROVAL_TIMEOUT_HOURS,
                type="number",
                exclusiveMinimum=0,
                maximum=23,
                title="Wait for an approval (hours)",
                description="How long an unusual volume waits for a person's answer; then the run fails and the "
                "updates stay held for the next run. Under a day, so the next night's run can start.",
            ),
            "max_leaver_share": Param(
                DEFAULT_MAX_LEAVER_SHARE,
                type="number",
                exclusiveMinimum=0,
                maximum=1,
                title="Max share of users leaving",
                description="Forget nobody, and fail, when more than this share of the synced users is no longer "
                "returned by the source query (a broken query looks like everybody leaving); 1 lets any "
                "departure through.",
            ),
            "consent_events_retention_days": Param(
                retention.consent_events_days,
                type=["null", "integer"],
                minimum=MIN_CONSENT_EVENTS_RETENTION_DAYS,
                title="Keep change-feed events (days)",
                description="Delete iys.consent_events rows stored longer ago than this; empty keeps them. At least "
                "8: İYS replays 7 days of movements. Default from [iys] consent_events_retention_days "
                "(IYS_CONSENT_EVENTS_RETENTION_DAYS).",
            ),
            "finished_updates_retention_days": Param(
                retention.finished_updates_days,
                type=["null", "integer"],
                minimum=MIN_FINISHED_UPDATES_RETENTION_DAYS,
                title="Keep settled outbox rows (days)",
                description="Delete iys.consent_updates rows settled (sent, skipped, rejected, failed) longer ago "
                "than this; empty keeps them. A failed opt-out stays until its legal deadline has passed. Default "
                "from [iys] finished_updates_retention_days (IYS_FINISHED_UPDATES_RETENTION_DAYS).",
            ),
        },
    ) as dag:
        conns = CONNECTION_ARGS
        # Every step runs whatever happened before it ("all_done"): a failed pull must never hold
        # back an opt-out. The report then fails the run with the failed step's name.
        pulls = [
            IysPullChangesOperator(
                task_id=f"pull_{stream.value.lower()}_changes",
                stream=stream.value,
                max_pull_gap_hours="{{ params.max_pull_gap_hours }}",
                trigger_rule="all_done",
                retries=2,
                **iys,
                **conns,
            )
            for stream in ChangeStream
        ]
        new_users = IysCheckNewUsersOperator(
            task_id="check_new_users", trigger_rule="all_done", retries=2, **iys, **conns
        )
        leavers = IysForgetLeaversOperator(
            task_id="forget_leavers",
            max_leaver_share="{{ params.max_leaver_share }}",
            trigger_rule="all_done",
            retries=2,
            **conns,
        )
        # No retries: a retry would ask the same question again, and the push must run after it.
        approval = IysApproveUnusualVolumeOperator(
            task_id="approve_unusual_volume",
            max_updates="{{ params.approval_max_updates }}",
            max_share="{{ params.approval_max_share }}",
            approval_timeout_hours="{{ params.approval_timeout_hours }}",
            trigger_rule="all_done",
            retries=0,
            **conns,
        )
        push = IysPushConsentUpdatesOperator(
            task_id="push_consent_updates", trigger_rule="all_done", retries=2, **iys, **conns
        )
        wait = IysBatchResultSensor(
            task_id="wait_for_batch_results",
            trigger_rule="all_done",
            retries=2,
            deferrable=settings.deferrable_waits,
            **iys,
            **conns,
        )
        retention_step = IysApplyRetentionOperator(
            task_id="apply_retention",
            consent_events_retention_days="{{ params.consent_events_retention_days }}",
            finished_updates_retention_days="{{ params.finished_updates_retention_days }}",
            trigger_rule="all_done",
            **conns,
        )
        # The report records every task before it: a step added to this chain is in the row as it is.
        report = IysSyncReportOperator(
            task_id="report",
            ret_deadline_margin_hours="{{ params.ret_deadline_margin_hours }}",
            acknowledge_overdue_rets="{{ params.acknowledge_overdue_rets }}",
            **conns,
        )
        announce = IysAnnounceConsentChangesOperator(
            task_id="announce_consent_changes", report_task_id="report", asset=brand.asset, **conns
        )
        pulls[0] >> pulls[1] >> new_users >> leavers >> approval >> push >> wait >> retention_step >> report >> announce
        concurrency.guard(dag, first=[pulls[0]])
    return dag
