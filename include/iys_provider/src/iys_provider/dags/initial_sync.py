"""The ``iys_initial_sync`` DAG: every existing user's consents, overnight, in resumable batches."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from iys_provider.config import IysSettings, load_settings
from iys_provider.dags.common import CONNECTION_ARGS, IysBrand, IysConcurrency, iys_brands, iys_dag
from iys_provider.operators.initial_sync import (
    DEFAULT_BATCH_SIZE,
    IysFinishInitialSyncOperator,
    IysInitialSyncBatchOperator,
    IysPlanInitialSyncOperator,
)
from iys_provider.people.leavers import DEFAULT_MAX_LEAVER_SHARE

DOC = """
### İYS initial sync

Checks every user returned by the source query (Variable `iys_recipients_sql`) against İYS with
multi status, in batches mapped over parallel tasks (at most `[iys] api_concurrency` at once, in
`default_pool` unless `[iys] pool` names a pool), and writes
`iys.consents`, `iys.user_recipients` and `iys.rejected_recipients`.

*Resumable*: a failed or killed run is simply run again (or its failed `sync_batch` tasks
cleared); only unfinished batches are processed. Once every user is processed, scheduled runs
finish in seconds — new and changed users are handled by `iys_incremental_sync`.
Trigger with **rescan** to start over.
"""


DAG_ID = "iys_initial_sync"


def build_initial_sync_dags(
    concurrency: IysConcurrency | None = None, *, settings: IysSettings | None = None
) -> list[DAG]:
    """One initial-sync DAG per connection in ``[iys] connections`` (:func:`~iys_provider.dags.common.iys_brands`)."""
    settings = settings or load_settings()
    concurrency = concurrency or IysConcurrency.from_settings(settings)
    return [
        build_initial_sync_dag(concurrency=concurrency, brand=brand, settings=settings)
        for brand in iys_brands(settings=settings)
    ]


def build_initial_sync_dag(
    dag_id: str | None = None,
    concurrency: IysConcurrency | None = None,
    brand: IysBrand | None = None,
    *,
    settings: IysSettings | None = None,
) -> DAG:
    """The initial sync of ``brand`` (default: the single brand of ``iys_default``), as ``dag_id`` or the brand's id.

    ``settings``: the deployment settings, read once by the caller; by default read now.
    """
    settings = settings or load_settings()
    concurrency = concurrency or IysConcurrency.from_settings(settings)
    brand = brand or IysBrand()
    with iys_dag(
        dag_id=dag_id or brand.dag_id(DAG_ID),
        description="Overnight, batched, resumable import of every existing user's İYS consents",
        doc_md=DOC,
        cron=settings.initial_sync_cron,
        concurrency=concurrency,
        brand=brand,
        params={
            "rescan": Param(False, type="boolean", title="Rescan", description="Start over from the first user."),
            "batch_size": Param(
                DEFAULT_BATCH_SIZE,
                type="integer",
                minimum=100,
                maximum=100_000,
                title="Batch size",
                description="Most users per batch (the first and last batches are smaller, and a small user base is split "
                "so every parallel task gets work); grown automatically so a scan has at most 500 batches.",
            ),
            "dry_run": Param(False, type="boolean", title="Dry run", description="Plan and report; write nothing."),
            "max_leaver_share": Param(
                DEFAULT_MAX_LEAVER_SHARE,
                type="number",
                exclusiveMinimum=0,
                maximum=1,
                title="Max share of users leaving",
                description="A new plan forgets the synced users its snapshot no longer holds; it plans nothing, and "
                "fails, when more than this share would go (a broken query looks like everybody leaving).",
            ),
        },
    ) as dag:
        conns = CONNECTION_ARGS
        plan = IysPlanInitialSyncOperator(
            task_id="plan_batches",
            batch_size="{{ params.batch_size }}",
            rescan="{{ params.rescan }}",
            dry_run="{{ params.dry_run }}",
            max_leaver_share="{{ params.max_leaver_share }}",
            # The batch sizes are shaped for the tasks the DAG lets run at once: the parse-time value.
            parallel_batches=concurrency.max_active,
            **conns,
        )
        batches = IysInitialSyncBatchOperator.partial(
            task_id="sync_batch",
            retries=2,
            map_index_template="{{ task.batch['batch_no'] + 1 }}/{{ task.batch['of'] }} "
            "[{{ task.batch['first'] }} … {{ task.batch['last'] }}]",
            **concurrency.task_args,
            **conns,
        ).expand(batch=plan.output)
        finish = IysFinishInitialSyncOperator(
            task_id="finish_scan", trigger_rule="none_failed", outlets=[brand.asset], **conns
        )
        plan >> batches >> finish
        concurrency.guard(dag, first=[plan])
    return dag
