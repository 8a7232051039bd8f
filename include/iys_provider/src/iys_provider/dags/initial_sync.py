"""The ``iys_initial_sync`` DAG: every existing user's consents, overnight, in resumable batches."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, CronTriggerTimetable, Param

from iys_provider.dags.common import CONSENTS_ASSET, TIMEZONE, connection_params, schedule_from_env
from iys_provider.operators.base import IYS_POOL
from iys_provider.operators.initial_sync import (
    DEFAULT_BATCH_SIZE,
    IysFinishInitialSyncOperator,
    IysInitialSyncBatchOperator,
    IysPlanInitialSyncOperator,
)

DOC = """
### İYS initial sync

Checks every user returned by the source query (Variable `iys_recipients_sql`) against İYS with
multi status, in batches mapped over parallel tasks in the `iys_api` pool, and writes
`iys.consents`, `iys.user_recipients` and `iys.rejected_recipients`.

*Resumable*: a failed or killed run is simply run again (or its failed `sync_batch` tasks
cleared); only unfinished batches are processed. Once every user is processed, scheduled runs
finish in seconds — new and changed users are handled by `iys_incremental_sync`.
Trigger with **rescan** to start over.
"""


def build_initial_sync_dag(dag_id: str = "iys_initial_sync") -> DAG:
    cron = schedule_from_env("IYS_INITIAL_SYNC_CRON", "0 1 * * *")
    with DAG(
        dag_id=dag_id,
        description="Overnight, batched, resumable import of every existing user's İYS consents",
        doc_md=DOC,
        schedule=CronTriggerTimetable(cron, timezone=TIMEZONE) if cron else None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=["iys", "consent"],
        params={
            "rescan": Param(False, type="boolean", title="Rescan", description="Start over from the first user."),
            "batch_size": Param(
                DEFAULT_BATCH_SIZE,
                type="integer",
                minimum=100,
                maximum=100_000,
                title="Batch size",
                description="Users per batch; grown automatically so a scan has at most 500 batches.",
            ),
            **connection_params(),
            "dry_run": Param(False, type="boolean", title="Dry run", description="Plan and report; write nothing."),
        },
    ) as dag:
        conns = {"iys_conn_id": "{{ params.iys_conn_id }}", "postgres_conn_id": "{{ params.postgres_conn_id }}"}
        plan = IysPlanInitialSyncOperator(
            task_id="plan_batches",
            batch_size="{{ params.batch_size }}",
            rescan="{{ params.rescan }}",
            dry_run="{{ params.dry_run }}",
            **conns,
        )
        batches = IysInitialSyncBatchOperator.partial(
            task_id="sync_batch",
            pool=IYS_POOL,
            retries=2,
            map_index_template="{{ task.batch['batch_no'] + 1 }}/{{ task.batch['of'] }} "
            "({{ task.batch['lower'] or 'start' }}, {{ task.batch['upper'] }}]",
            **conns,
        ).expand(batch=plan.output)
        finish = IysFinishInitialSyncOperator(
            task_id="finish_scan", trigger_rule="none_failed", outlets=[CONSENTS_ASSET], **conns
        )
        plan >> batches >> finish
    return dag
