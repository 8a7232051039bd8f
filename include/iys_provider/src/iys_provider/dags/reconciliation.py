"""The ``iys_reconciliation`` DAG: agree with İYS on each of the last 7 days, keep the evidence, repair what the feed missed."""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param, task_group

from iys_provider.dags.common import CONNECTION_ARGS, IysBrand, IysConcurrency, iys_brands, iys_dag
from iys_provider.operators.reconciliation import (
    DEFAULT_ARCHIVE,
    IysCompareSummaryOperator,
    IysPlanReconciliationOperator,
    IysReconcileDayOperator,
    IysReconciliationReportOperator,
)
from iys_provider.operators.report import IysAnnounceConsentChangesOperator
from iys_provider.reconciliation import DEFAULT_FILE_FORMAT, DEFAULT_MAX_WAIT, file_format
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
#: Default archive (an ObjectStoragePath URL such as ``file:///var/lib/iys-archive`` or
#: ``s3://aws_default@bucket/iys``), read where the DAG files are parsed; unset: ``default``, the
#: folder ``iys-evidence`` under the worker's Airflow home; ``none``: no archive.
ARCHIVE_VARIABLE = "IYS_RECONCILIATION_ARCHIVE"
FILE_FORMAT_VARIABLE = "IYS_RECONCILIATION_FILE_FORMAT"
HASH_WAIT_VARIABLE = "IYS_RECONCILIATION_HASH_WAIT_MINUTES"


def build_reconciliation_dags(concurrency: IysConcurrency | None = None) -> list[DAG]:
    """One reconciliation DAG per connection in ``IYS_CONNECTIONS`` (:func:`~iys_provider.dags.common.iys_brands`)."""
    concurrency = concurrency or IysConcurrency.from_env()
    return [build_reconciliation_dag(concurrency=concurrency, brand=brand) for brand in iys_brands()]


def build_reconciliation_dag(
    dag_id: str | None = None, concurrency: IysConcurrency | None = None, brand: IysBrand | None = None
) -> DAG:
    """The reconciliation of ``brand`` (default: the single brand of ``iys_default``), as ``dag_id`` or the brand's id."""
    concurrency = concurrency or IysConcurrency.from_env()
    brand = brand or IysBrand()
    default_format = os.environ.get(FILE_FORMAT_VARIABLE, "").strip() or DEFAULT_FILE_FORMAT
    try:
        file_format(default_format)
    except ValueError as exc:
        raise ValueError(f"{FILE_FORMAT_VARIABLE}={default_format!r}: {exc}") from None
    wait_text = os.environ.get(HASH_WAIT_VARIABLE, "").strip()
    try:
        default_wait = float(wait_text) if wait_text else DEFAULT_MAX_WAIT.total_seconds() / 60
    except ValueError:
        raise ValueError(f"{HASH_WAIT_VARIABLE}={wait_text!r} is not a number of minutes") from None
    iys = concurrency.task_args
    with iys_dag(
        dag_id=dag_id or brand.dag_id(DAG_ID),
        description="Agree with İYS on each of the last 7 days, archive the evidence, repair what the feed missed",
        doc_md=DOC,
        schedule_variable="IYS_RECONCILIATION_CRON",
        # After the incremental sync (02:00): its pull of yesterday's movements is stored by then.
        default_cron="0 5 * * *",
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
                os.environ.get(ARCHIVE_VARIABLE, "").strip() or DEFAULT_ARCHIVE,
                type=["null", "string"],
                title="Archive location",
                description="Where the day's file and timestamp (.tsr) are kept: an Airflow ObjectStoragePath URL "
                "(file:///…, s3://<conn_id>@bucket/…); 'default': the folder iys-evidence under the Airflow home; "
                "'none' or empty: no evidence kept. Default from IYS_RECONCILIATION_ARCHIVE.",
            ),
            "file_format": Param(
                default_format,
                type="string",
                minLength=1,
                title="Daily file format",
                description="'auto': read İYS's file by its content. Otherwise an override of the reading our file is "
                "written in: 'literal', 'no_header', 'crlf', 'utf8_bom', 'faq_seven_columns', 'seven_columns', "
                "'trailing_delimiter', or several joined by '+' (see docs/reconciliation.md).",
            ),
            "hash_wait_minutes": Param(
                default_wait,
                type="number",
                minimum=0,
                title="Wait for İYS's hash (minutes)",
                description="How long a day's unfinished hash job (queued, inprogress) is waited for; after it the "
                "day is left pending for the next run and the others go on. Default from "
                "IYS_RECONCILIATION_HASH_WAIT_MINUTES.",
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
