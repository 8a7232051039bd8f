"""The ``iys_reconciliation`` DAG: agree with İYS on each of the last 7 days, keep the evidence, repair what the feed missed."""

from __future__ import annotations

from airflow.sdk import DAG, Param, task_group

from iys_provider.config import IysSettings, load_settings
from iys_provider.dags.common import CONNECTION_ARGS, IysBrand, IysConcurrency, iys_brands, iys_dag
from iys_provider.operators.reconciliation import (
    IysCompareSummaryOperator,
    IysPlanReconciliationOperator,
    IysReconcileDayOperator,
    IysReconciliationReportOperator,
)
from iys_provider.operators.report import IysAnnounceConsentChangesOperator
from iys_provider.sensors.reconciliation import IysReconciliationHashSensor

DOC = """
### İYS daily reconciliation (mutabakat)

For each day from D-1 back to D-7 (Turkey time) not yet agreed with İYS — or one `report_date`:

1. compares İYS's summary of the day with `iys.consent_events` (per channel, source, ONAY/RET);
2. waits for İYS's hash of the day in reschedule mode (no worker slot held); a hash job in
   `error` fails that day; one unfinished after `hash_wait_minutes` leaves the day `pending`
   for the next run without holding the others;
3. hashes our own file of the day, streamed from Postgres in İYS's file format;
4. equal hashes: agrees with İYS (PUT) and records it in `iys.reconciliations`;
5. different hashes: downloads İYS's file, reads it by its content (header, line ends, BOM,
   7 or 8 columns), stores the movements we lack by the change feed's rules (a file without
   status: İYS's multi status gives it), records the difference, and agrees only when the
   hashes are then equal;
6. archives the day's file and İYS's timestamp (`.tsr`), by default under the Airflow home.

Days that cannot be agreed fail the run with their reasons after the other days are done.
İYS serves a day for 7 days only: a date outside the window is never requested.
"""

DAG_ID = "iys_reconciliation"


def build_reconciliation_dags(
    concurrency: IysConcurrency | None = None, *, settings: IysSettings | None = None
) -> list[DAG]:
    """One reconciliation DAG per connection in ``[iys] connections`` (:func:`~iys_provider.dags.common.iys_brands`)."""
    settings = settings or load_settings()
    concurrency = concurrency or IysConcurrency.from_settings(settings)
    return [
        build_reconciliation_dag(concurrency=concurrency, brand=brand, settings=settings)
        for brand in iys_brands(settings=settings)
    ]


def build_reconciliation_dag(
    dag_id: str | None = None,
    concurrency: IysConcurrency | None = None,
    brand: IysBrand | None = None,
    *,
    settings: IysSettings | None = None,
) -> DAG:
    """The reconciliation of ``brand`` (default: the single brand of ``iys_default``), as ``dag_id`` or the brand's id.

    ``settings``: the deployment settings, read once by the caller; by default read now. The
    archive, file format and hash wait settings are the defaults of the run's Params.
    """
    settings = settings or load_settings()
    concurrency = concurrency or IysConcurrency.from_settings(settings)
    brand = brand or IysBrand()
    iys = concurrency.task_args
    with iys_dag(
        dag_id=dag_id or brand.dag_id(DAG_ID),
        description="Agree with İYS on each of the last 7 days, archive the evidence, repair what the feed missed",
        doc_md=DOC,
        # By default after the incremental sync (02:00): its pull of yesterday's movements is stored by then.
        cron=settings.reconciliation_cron,
        concurrency=concurrency,
        brand=brand,
        params={
            "report_date": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Report date",
                description="Reconcile only this day (YYYY-MM-DD, one of the last 7 completed days in Turkey time); "
                "empty: every day of İYS's window not agreed yet.",
            ),
            "archive_location": Param(
                settings.reconciliation_archive,
                type=["null", "string"],
                title="Archive location",
                description="Where the day's file and timestamp (.tsr) are kept: an Airflow ObjectStoragePath URL "
                "(file:///…, s3://<conn_id>@bucket/…); 'default': the folder iys-evidence under the Airflow home; "
                "'none' or empty: no evidence kept. Default from [iys] reconciliation_archive "
                "(IYS_RECONCILIATION_ARCHIVE).",
            ),
            "file_format": Param(
                settings.reconciliation_file_format,
                type="string",
                minLength=1,
                title="Daily file format",
                description="'auto': read İYS's file by its content. Otherwise an override of the reading our file is "
                "written in: 'literal', 'no_header', 'crlf', 'utf8_bom', 'faq_seven_columns', 'seven_columns', "
                "'trailing_delimiter', or several joined by '+' (see docs/reconciliation.md).",
            ),
            "hash_wait_minutes": Param(
                settings.reconciliation_hash_wait_minutes,
                type="number",
                minimum=0,
                title="Wait for İYS's hash (minutes)",
                description="How long a day's unfinished hash job (queued, inprogress) is waited for; after it the "
                "day is left pending for the next run and the others go on. Default from "
                "[iys] reconciliation_hash_wait_minutes (IYS_RECONCILIATION_HASH_WAIT_MINUTES).",
            ),
        },
    ) as dag:
        conns = CONNECTION_ARGS
        plan = IysPlanReconciliationOperator(
            task_id="plan_days",
            report_date="{{ params.report_date }}",
            archive_location="{{ params.archive_location }}",
            **conns,
        )

        @task_group(group_id="day")
        def reconcile(report_date: str) -> None:
            summary = IysCompareSummaryOperator(
                task_id="compare_summary",
                map_index_template="{{ task.report_date }}",
                report_date=report_date,
                retries=2,
                **iys,
                **conns,
            )
            wait = IysReconciliationHashSensor(
                task_id="wait_for_hash",
                map_index_template="{{ task.report_date }}",
                report_date=report_date,
                max_wait_minutes="{{ params.hash_wait_minutes }}",
                trigger_rule="all_done",  # the summary is informative; the hash decides
                retries=2,
                deferrable=settings.deferrable_waits,
                **iys,
                **conns,
            )
            agree = IysReconcileDayOperator(
                task_id="reconcile_day",
                map_index_template="{{ task.report_date }}",
                report_date=report_date,
                archive_location="{{ params.archive_location }}",
                file_format="{{ params.file_format }}",
                retries=2,
                **iys,
                **conns,
            )
            summary >> wait >> agree

        days = reconcile.expand(report_date=plan.output)
        report = IysReconciliationReportOperator(
            task_id="report",
            report_dates="{{ ti.xcom_pull(task_ids='plan_days') }}",
            archive_location="{{ params.archive_location }}",
            **conns,
        )
        announce = IysAnnounceConsentChangesOperator(
            task_id="announce_consent_changes",
            report_task_id="report",
            asset=brand.asset,
            **conns,
        )
        plan >> days >> report >> announce
        concurrency.guard(dag, first=[plan])
    return dag
