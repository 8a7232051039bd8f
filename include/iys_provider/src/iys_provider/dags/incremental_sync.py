"""The ``iys_incremental_sync`` DAG: follow İYS every night and push the brand's own updates."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from iys_provider.dags.common import CONNECTION_ARGS, IysConcurrency, iys_dag
from iys_provider.deadline_watch import DEFAULT_DEADLINE_MARGIN
from iys_provider.models import ChangeStream
from iys_provider.operators.changes import DEFAULT_MAX_PULL_GAP_HOURS, IysPullChangesOperator
from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator
from iys_provider.operators.new_users import IysCheckNewUsersOperator
from iys_provider.operators.report import IysAnnounceConsentChangesOperator, IysSyncReportOperator
from iys_provider.sensors.batch_results import IysBatchResultSensor

DOC = """
### İYS incremental sync

1. Pulls both change streams (`IYS`: recipients' own changes; `HS`: service-provider writes) into
   `iys.consent_events` and applies what is newer to `iys.consents` — events, state and cursor in
   one transaction per page. Fails with the remedy (a rescan) if the last pull is older than
   `max_pull_gap_hours`, since İYS keeps only 7 days of changes.
2. Checks new and changed users (multi status), quarantining invalid addresses.
3. Pushes pending rows of `iys.consent_updates` for recipients İYS already holds — never creating
   one — and waits for batch results in reschedule mode. Every opt-out is verified against İYS's
   current status (multi status) right before it is sent. The push runs even when a pull failed.
4. Writes a row to `iys.sync_runs` (with the opt-out deadline watch) and announces consent
   changes on the `iys_consents` asset. The run fails when any step failed, or when an opt-out
   not yet in İYS is within `ret_deadline_margin_hours` of its legal deadline.

Reruns and backfills are harmless: every step works from cursors and states, not from the run's
dates.
"""


def build_incremental_sync_dag(dag_id: str = "iys_incremental_sync", concurrency: IysConcurrency | None = None) -> DAG:
    concurrency = concurrency or IysConcurrency.from_env()
    iys = concurrency.task_args  # every task that calls İYS
    with iys_dag(
        dag_id=dag_id,
        description="Pull İYS changes, pick up new users, push local updates for existing recipients",
        doc_md=DOC,
        schedule_variable="IYS_INCREMENTAL_SYNC_CRON",
        default_cron="0 2 * * *",
        concurrency=concurrency,
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
        push = IysPushConsentUpdatesOperator(
            task_id="push_consent_updates", trigger_rule="all_done", retries=2, **iys, **conns
        )
        wait = IysBatchResultSensor(
            task_id="wait_for_batch_results", trigger_rule="all_done", retries=2, **iys, **conns
        )
        report = IysSyncReportOperator(
            task_id="report",
            pull_task_ids=[p.task_id for p in pulls],
            new_users_task_id=new_users.task_id,
            push_task_id=push.task_id,
            batch_results_task_id=wait.task_id,
            ret_deadline_margin_hours="{{ params.ret_deadline_margin_hours }}",
            **conns,
        )
        announce = IysAnnounceConsentChangesOperator(
            task_id="announce_consent_changes", report_task_id="report", **conns
        )
        pulls[0] >> pulls[1] >> new_users >> push >> wait >> report >> announce
        concurrency.guard(dag, first=[pulls[0]])
    return dag
