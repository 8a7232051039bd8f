"""The daily reconciliation with İYS (mutabakat): plan the days, compare summaries, agree or repair, archive, report.

A run plans the days of İYS's window not yet agreed (:class:`IysPlanReconciliationOperator`),
then per day compares İYS's summary with ours (:class:`IysCompareSummaryOperator`), waits for
İYS's hash job (:class:`~iys_provider.sensors.reconciliation.IysReconciliationHashSensor`),
hashes our file and agrees or repairs (:class:`IysReconcileDayOperator`), and finally fails the
run, naming every day not agreed, once all days are done (:class:`IysReconciliationReportOperator`).
The rules are in :mod:`iys_provider.reconciliation.rules`, the SQL in :mod:`iys_provider.reconciliation.store`,
one day's hashing, agreement, repair and archive in :mod:`iys_provider.reconciliation.day`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, TypedDict

from airflow.sdk import Context, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from iys_provider.consent_store import record_sendable_counts
from iys_provider.lineage import TaskLineage
from iys_provider.operators.base import IysBaseOperator, failing_without_retries
from iys_provider.reconciliation.day import (
    DEFAULT_ARCHIVE,
    DayResult,
    ReconciliationDay,
    archive_location_of,
    archive_wanted,
    default_archive_location,
    ensure_in_window,
    is_done,
    parse_report_date,
)
from iys_provider.reconciliation.rules import (
    DEFAULT_FILE_FORMAT,
    RECIPIENT_TYPES,
    SETTLED,
    WINDOW_DAYS,
    file_format,
    last_chance,
    outside_window_reason,
    reconciliation_window,
    summary_differences,
    summary_from_iys,
    summary_total,
    waiting_for_iys,
)
from iys_provider.reconciliation.store import (
    day_summary,
    read_reconciliations,
    save_reconciliation,
)
from iys_provider.templating import as_optional_str

__all__ = [
    "DEFAULT_ARCHIVE",
    "DayResult",
    "IysCompareSummaryOperator",
    "IysPlanReconciliationOperator",
    "IysReconcileDayOperator",
    "IysReconciliationReportOperator",
    "archive_location_of",
    "default_archive_location",
]


def run_id_of(context: Context) -> str:
    return str(context.get("run_id") or f"adhoc-{uuid.uuid4()}")


class IysPlanReconciliationOperator(IysBaseOperator):
    """The days to reconcile: İYS's window (D-1 … D-7, Turkey time) minus the days already agreed.

    A day already agreed is planned again only when an archive is configured and the day's file or
    timestamp is not archived yet (both vanish from İYS after 7 days). Returns the days as
    ``YYYY-MM-DD`` strings, newest first, for the per-day tasks to map over, and records each as
    ``pending`` in ``iys.reconciliations`` (a day already there keeps its status until decided).

    :param report_date: one day instead of the window; a day outside İYS's window fails the task
        at once, without asking İYS (İYS would answer 422, which counts against the IP's success
        ratio). (templated)
    :param archive_location: where the day's file and timestamp are archived (see
        :func:`archive_location_of`); ``default``: under the Airflow home; empty or ``none``: nowhere. (templated)
    """

    lineage = TaskLineage(reads=("reconciliations",), writes=("reconciliations",))

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "report_date", "archive_location")

    def __init__(
        self,
        *,
        report_date: str | date | None = None,
        archive_location: str | None = DEFAULT_ARCHIVE,
        window_days: int = WINDOW_DAYS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.report_date = report_date
        self.archive_location = archive_location
        self.window_days = window_days

    def execute(self, context: Context) -> list[str]:
        now = datetime.now(UTC)
        report_date = as_optional_str(self.report_date)
        if report_date is not None:
            with failing_without_retries():
                day = parse_report_date(report_date)
            reason = outside_window_reason(day, now, days=self.window_days)
            if reason:
                raise AirflowFailException(f"Not reconciling {day}: {reason}")
            days = [day]
        else:
            days = reconciliation_window(now, days=self.window_days)
        brand_code = self.iys_hook.brand_code
        archive = archive_wanted(self.archive_location)
        run_id = run_id_of(context)
        with self.database() as conn:
            known = read_reconciliations(conn, brand_code, days)
            planned = []
            for day in days:
                if is_done(known.get(day), archive):
                    continue
                # Each run waits for İYS's hash job afresh (at most its own hash_wait_minutes). The
                # day's position in the returned list is its map index in the "day" task group: the
                # İYS page links the day to that task instance.
                save_reconciliation(
                    conn, brand_code, day, run_id=run_id, hash_waiting_since=None, map_index=len(planned)
                )
                planned.append(day.isoformat())
        self.log.info(
            "Reconciling %d of %d days in İYS's window (%s … %s): %s",
            len(planned),
            len(days),
            days[-1] if days else "-",
            days[0] if days else "-",
            ", ".join(planned) or "none, all agreed",
        )
        return planned


class SummaryResult(TypedDict):
    report_date: str
    movements_ours: int
    movements_iys: int
    differences: int


class IysCompareSummaryOperator(IysBaseOperator):
    """Compare İYS's summary of the day (both recipient types) with ``iys.consent_events`` of the day.

    Records both summaries in ``iys.reconciliations``; a difference is logged, not failed: the
    hash decides, and the repair finds the movements behind it.

    :param report_date: the day, ``YYYY-MM-DD``. (templated)
    """

    lineage = TaskLineage(reads=("consent_events",), writes=("reconciliations",), iys_reads=True)

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "report_date")

    def __init__(self, *, report_date: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_date = report_date

    def execute(self, context: Context) -> SummaryResult:
        with failing_without_retries():
            day = parse_report_date(self.report_date)
            ensure_in_window(day)
        iys = summary_from_iys(self.iys_hook.get_daily_change_summary(day, kind) for kind in RECIPIENT_TYPES)
        brand_code = self.iys_hook.brand_code
        with self.database() as conn:
            ours = day_summary(conn, brand_code, day)
            save_reconciliation(conn, brand_code, day, summary_ours=ours, summary_iys=iys, run_id=run_id_of(context))
        differences = summary_differences(ours, iys)
        if differences:
            self.log.warning("%s: İYS's summary differs from ours: %s", day, "; ".join(differences))
        else:
            self.log.info("%s: İYS's summary equals ours (%d movements)", day, summary_total(ours))
        return SummaryResult(
            report_date=day.isoformat(),
            movements_ours=summary_total(ours),
            movements_iys=summary_total(iys),
            differences=len(differences),
        )


class IysReconcileDayOperator(IysBaseOperator):
    """Hash our file of the day and agree with İYS, repairing from İYS's file when the hashes differ.

    1. Streams the day's movements out of ``iys.consent_events`` in İYS's file format and hashes
       them: in the reading the brand's last agreed day showed (``literal`` at first), or the
       ``file_format`` override (see :data:`~iys_provider.reconciliation.rules.FILE_FORMATS`).
    2. Equal to İYS's hash (recorded by the hash sensor): ``PUT`` the agreement; status ``agreed``.
    3. Different: downloads İYS's file (streamed to a temporary file), hashes the bytes served,
       recognises its reading by its content (header, line ends, BOM, 7 or 8 columns) and, when
       that is not the one tried, hashes our file again in it. Still different: lists what we
       lack, hold differently or hold extra in ``iys.reconciliation_movements``, stores the
       movements we lack through the change feed's rules (a file without ``status`` takes it from
       İYS's multi status), hashes again, and agrees only when the hashes are equal now
       (``repaired_and_agreed``); otherwise the day is a ``mismatch`` and the task fails.
    4. Archives the day's file and İYS's timestamp (``.tsr``) as
       ``<location>/<brand>/<date>/iys_<brand>_<date>.csv`` and ``….tsr`` (an Airflow
       ``ObjectStoragePath``: ``file:///…``, ``s3://…``, …; by default under the Airflow home),
       never overwriting an archived file. The file archived is İYS's download when there was one,
       else ours (the hashes being equal, the bytes are the same).

    The work is :class:`~iys_provider.reconciliation.day.ReconciliationDay`.

    :param report_date: the day, ``YYYY-MM-DD``. (templated)
    :param archive_location: base of the archive (:func:`archive_location_of`). (templated)
    :param file_format: ``auto`` (read İYS's file by its content), or a reading to write our file in. (templated)
    """

    lineage = TaskLineage(
        reads=("consent_events", "reconciliations"),
        writes=("reconciliations", "reconciliation_movements", "consent_events", "consents"),
        iys_reads=True,
    )

    template_fields: Sequence[str] = (
        *IysBaseOperator.template_fields,
        "report_date",
        "archive_location",
        "file_format",
    )

    def __init__(
        self,
        *,
        report_date: str,
        archive_location: str | None = DEFAULT_ARCHIVE,
        file_format: str = DEFAULT_FILE_FORMAT,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.report_date = report_date
        self.archive_location = archive_location
        self.file_format = file_format

    def execute(self, context: Context) -> DayResult:
        with failing_without_retries():
            day = parse_report_date(self.report_date)
        try:
            override = file_format(str(self.file_format))
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        location = archive_location_of(self.archive_location)
        with self.database() as conn, failing_without_retries():
            return ReconciliationDay(
                self.iys_hook,
                conn,
                day,
                run_id_of(context),
                archive=ObjectStoragePath(location) if location else None,
                file_format_override=override,
                log=self.log,
            ).run()


class ReconciliationReport(TypedDict):
    days: int
    agreed: list[str]
    waiting: list[str]
    failed: list[str]
    consent_changes: int


class IysReconciliationReportOperator(IysBaseOperator):
    """Fail the run, after every day is done, naming each planned day that is not agreed (or not archived).

    Runs whatever happened before it (``trigger_rule="all_done"``). A day left ``pending`` because
    İYS's hash job outlasted the run's wait is listed as ``waiting`` and does not fail the run: the
    next run asks again, unless this was the day's last run in İYS's window. Its XCom carries
    ``consent_changes``: the movements the run stored from İYS's files (announced on the brand's
    consents asset when the run succeeds).

    :param report_dates: the planned days (the plan task's XCom). (templated)
    :param archive_location: as for the days; an archive is then required for every agreed day. (templated)
    """

    lineage = TaskLineage(reads=("reconciliations",))

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "report_dates", "archive_location")

    def __init__(
        self,
        *,
        report_dates: Sequence[str] | str | None,
        archive_location: str | None = DEFAULT_ARCHIVE,
        window_days: int = WINDOW_DAYS,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.report_dates = report_dates
        self.archive_location = archive_location
        self.window_days = window_days

    def execute(self, context: Context) -> ReconciliationReport:
        if self.report_dates is None or isinstance(self.report_dates, str):
            raise AirflowException("The plan of days is missing (the plan task failed); nothing was reconciled")
        with failing_without_retries():
            days = [parse_report_date(value) for value in self.report_dates]
        archive = archive_wanted(self.archive_location)
        run_id = run_id_of(context)
        now = datetime.now(UTC)
        with self.database() as conn:
            rows = read_reconciliations(conn, self.iys_hook.brand_code, days)
        agreed, waiting, failed, changes = [], [], [], 0
        for day in days:
            row = rows.get(day) or {"status": "pending", "detail": "never worked on"}
            if row.get("run_id") == run_id:
                changes += int(row.get("repaired") or 0)
            problem = None
            if waiting_for_iys(row):
                if last_chance(day, now, days=self.window_days):
                    problem = f"pending on its last day in İYS's window: {row.get('detail')}"
                else:
                    waiting.append(f"{day} {row.get('detail')}")
                    continue
            elif row["status"] not in SETTLED:
                problem = f"{row['status']}: {row.get('detail') or 'not finished (see the day tasks)'}"
            elif (
                archive and row.get("movements_ours") != 0 and not (row["archived_file"] and row["archived_timestamp"])
            ):
                problem = "agreed, but the file or the timestamp is not archived (İYS keeps them 7 days)"
            if problem:
                failed.append(f"{day} {problem}")
            else:
                agreed.append(day.isoformat())
        report = ReconciliationReport(
            days=len(days), agreed=agreed, waiting=waiting, failed=failed, consent_changes=changes
        )
        if changes:
            # Repaired movements changed consents: what the İYS page shows as sendable is recounted.
            with self.database() as conn:
                record_sendable_counts(conn, self.iys_hook.brand_code)
        if not archive:
            self.log.warning("No archive location: no evidence (file, .tsr) of any day is kept")
        for line in waiting:
            self.log.warning("Left for the next run: %s", line)
        self.log.info(
            "Reconciliation: %d days, %d agreed, %d waiting for İYS; %s",
            len(days),
            len(agreed),
            len(waiting),
            "; ".join(failed) or "none failed",
        )
        if failed:
            raise AirflowException(f"{len(failed)} of {len(days)} days not reconciled with İYS: " + " | ".join(failed))
        return report
