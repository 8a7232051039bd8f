"""The daily reconciliation with İYS (mutabakat): plan the days, compare summaries, agree or repair, archive, report.

A run plans the days of İYS's window not yet agreed (:class:`IysPlanReconciliationOperator`),
then per day compares İYS's summary with ours (:class:`IysCompareSummaryOperator`), waits for
İYS's hash job (:class:`~iys_provider.sensors.reconciliation.IysReconciliationHashSensor`),
hashes our file and agrees or repairs (:class:`IysReconcileDayOperator`), and finally fails the
run, naming every day not agreed, once all days are done (:class:`IysReconciliationReportOperator`).
The rules are in :mod:`iys_provider.reconciliation`, the SQL in :mod:`iys_provider.reconciliation_store`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypedDict

from airflow.sdk import Context, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from iys_provider.consent_store import record_sendable_counts
from iys_provider.models import ConsentType, RecipientType
from iys_provider.operators.base import IysBaseOperator
from iys_provider.reconciliation import (
    DEFAULT_FILE_FORMAT,
    LITERAL,
    RECIPIENT_TYPES,
    SETTLED,
    WINDOW_DAYS,
    DayStatus,
    FileFormat,
    MultiHasher,
    algorithm_for,
    day_status,
    detect_file_format,
    file_format,
    hash_stream,
    last_chance,
    mismatch_detail,
    outside_window_reason,
    reconciliation_window,
    summary_differences,
    summary_from_iys,
    summary_total,
    waiting_for_iys,
)
from iys_provider.reconciliation_store import (
    RepairOutcome,
    compare_with_file,
    day_summary,
    drop_file_stage,
    last_agreed_layout,
    load_iys_file,
    read_reconciliation,
    read_reconciliations,
    repair_from_file,
    save_reconciliation,
    stream_day_file,
)
from iys_provider.templating import as_optional_str

#: Blocks copied to the archive.
COPY_CHUNK_BYTES = 1 << 20


def run_id_of(context: Context) -> str:
    return str(context.get("run_id") or f"adhoc-{uuid.uuid4()}")


def parse_report_date(value: str | date) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise AirflowFailException(f"report_date must be a date like 2026-11-27, not {value!r}") from None


def ensure_in_window(day: date) -> None:
    """Fail, without calling İYS, when ``day`` has left İYS's window since it was planned (a run delayed for hours)."""
    reason = outside_window_reason(day, datetime.now(UTC))
    if reason:
        raise AirflowFailException(f"Not asking İYS about {day}: {reason}")


#: ``archive_location`` meaning "the default archive": :func:`default_archive_location` on the worker.
DEFAULT_ARCHIVE = "default"
#: Where a default install keeps the evidence, under the Airflow home of the worker.
DEFAULT_ARCHIVE_FOLDER = "iys-evidence"


def default_archive_location() -> str:
    """``file://<AIRFLOW_HOME>/iys-evidence`` (Airflow's own default home is ``~/airflow``)."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
    return (Path(home).resolve() / DEFAULT_ARCHIVE_FOLDER).as_uri()


def archive_location_of(value: str | None) -> str | None:
    """The archive to use: ``default`` (or nothing set) is :func:`default_archive_location`; an empty value,
    ``none`` or a null Param (rendered ``None``) turns the archive off; anything else is an ObjectStoragePath URL.
    """
    text = DEFAULT_ARCHIVE if value is None else str(value).strip()
    if text.lower() == DEFAULT_ARCHIVE:
        return default_archive_location()
    if text.lower() in ("", "none", "null", "false", "off"):
        return None
    return text


def archive_wanted(archive_location: str | None) -> bool:
    return archive_location_of(archive_location) is not None


def is_done(row: dict[str, Any] | None, archive: bool) -> bool:
    """An agreed day needs no more work, unless an archive is wanted and the day's evidence is not in it yet.

    A day without movements has no file to archive.
    """
    if not row or row.get("status") not in SETTLED:
        return False
    if not archive or row.get("movements_ours") == 0:
        return True
    return bool(row.get("archived_file") and row.get("archived_timestamp"))


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
                # Each run waits for İYS's hash job afresh (at most its own hash_wait_minutes).
                save_reconciliation(conn, brand_code, day, run_id=run_id, hash_waiting_since=None)
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

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "report_date")

    def __init__(self, *, report_date: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_date = report_date

    def execute(self, context: Context) -> SummaryResult:
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


class DayResult(TypedDict):
    report_date: str
    status: str
    movements_ours: int
    repaired: int
    archived: bool


class IysReconcileDayOperator(IysBaseOperator):
    """Hash our file of the day and agree with İYS, repairing from İYS's file when the hashes differ.

    1. Streams the day's movements out of ``iys.consent_events`` in İYS's file format and hashes
       them: in the reading the brand's last agreed day showed (``literal`` at first), or the
       ``file_format`` override (see :data:`~iys_provider.reconciliation.FILE_FORMATS`).
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

    :param report_date: the day, ``YYYY-MM-DD``. (templated)
    :param archive_location: base of the archive (:func:`archive_location_of`). (templated)
    :param file_format: ``auto`` (read İYS's file by its content), or a reading to write our file in. (templated)
    """

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
        day = parse_report_date(self.report_date)
        try:
            override = file_format(str(self.file_format))
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        brand_code = self.iys_hook.brand_code
        run_id = run_id_of(context)
        archive = archive_wanted(self.archive_location)
        with self.database() as conn, tempfile.TemporaryDirectory(prefix="iys-reconciliation-") as workdir:
            row = read_reconciliation(conn, brand_code, day) or {}
            status = row.get("status")
            if is_done(row, archive):
                self.log.info("%s is already %s", day, status)
                return self._result(day, row, archived=bool(row.get("archived_file")))
            ensure_in_window(day)
            ours_path = Path(workdir) / "ours.csv"
            iys_path = Path(workdir) / "iys.csv"
            hash_iys = row.get("hash_iys")
            if not hash_iys:
                return self._without_hash(conn, day, row, run_id)
            algorithm = algorithm_for(row.get("hash_method"), hash_iys)
            fmt = override or self._reading_to_try(conn, row)
            rows, digests = self._hash_ours(conn, day, fmt, ours_path if archive else None)
            matched_first = digests[algorithm] == hash_iys
            values: dict[str, Any] = {
                "hash_ours": digests[algorithm],
                "movements_ours": rows,
                "run_id": run_id,
                "file_layout": fmt.name,
            }
            downloaded = False
            matched_after: bool | None = None
            stored = 0
            if status in SETTLED:
                # Agreed before; only the archive is missing. Our file is archived only while it
                # still hashes to İYS's value (retention may have removed movements since).
                if not matched_first and archive:
                    with iys_path.open("w+b") as out:
                        downloaded = self.iys_hook.download_daily_file(day, out) is not None
                values = {"run_id": run_id}
                matched_after = matched_first = True
            elif not matched_first:
                self.log.warning("%s: our hash (%s) differs from İYS's; downloading İYS's file", day, fmt.name)
                downloaded, matched_after, stored = self._repair(
                    conn, day, fmt, override, iys_path, ours_path if archive else None, algorithm, hash_iys, values
                )
                rows = values["movements_ours"]
            new_status = (
                DayStatus(status)
                if status in SETTLED
                else day_status(matched_first=matched_first, matched_after_repair=matched_after, stored=stored)
            )
            if new_status in SETTLED and status not in SETTLED:
                new_status = self._agree(day, new_status, values)
            values["status"] = new_status.value
            if new_status is DayStatus.MISMATCH:
                values["detail"] = self._mismatch_detail(values, hash_iys, algorithm)
            save_reconciliation(conn, brand_code, day, **values)
            archived = False
            if archive:
                archived = self._archive(conn, day, downloaded, iys_path, ours_path, new_status)
            else:
                self.log.warning(
                    "%s: no archive location: İYS's file and timestamp of the day are not kept (İYS deletes them "
                    "after 7 days)",
                    day,
                )
            result = DayResult(
                report_date=day.isoformat(),
                status=new_status.value,
                movements_ours=rows,
                repaired=int(values.get("repaired", row.get("repaired") or 0)),
                archived=archived,
            )
        self.log.info("%s: %s", day, result)
        if new_status not in SETTLED:
            raise AirflowFailException(f"{day} not agreed with İYS ({new_status.value}): {values.get('detail')}")
        return result

    # ------------------------------------------------------------------ steps

    def _reading_to_try(self, conn, row: dict[str, Any]) -> FileFormat:
        """The reading our first hash is written in: the day's own last one, else the brand's last agreed one."""
        for name in (row.get("file_layout"), last_agreed_layout(conn, self.iys_hook.brand_code)):
            if name:
                try:
                    return file_format(name) or LITERAL
                except ValueError:
                    self.log.warning("Ignoring the unknown file reading %r recorded before", name)
        return LITERAL

    def _hash_ours(self, conn, day: date, fmt: FileFormat, copy_to: Path | None) -> tuple[int, dict[str, str]]:
        hasher = MultiHasher()
        if copy_to is None:
            rows = stream_day_file(conn, self.iys_hook.brand_code, day, fmt, hasher.update)
        else:
            with copy_to.open("wb") as out:

                def sink(block: bytes) -> None:
                    hasher.update(block)
                    out.write(block)

                rows = stream_day_file(conn, self.iys_hook.brand_code, day, fmt, sink)
        return rows, hasher.hexdigests()

    def _repair(
        self,
        conn,
        day: date,
        fmt: FileFormat,
        override: FileFormat | None,
        iys_path: Path,
        ours_path: Path | None,
        algorithm: str,
        hash_iys: str,
        values: dict[str, Any],
    ) -> tuple[bool, bool, int]:
        """Download İYS's file, write ours in its reading, list and store what we lack, hash again.

        Returns (downloaded, hashes equal now, movements stored); ``values`` gets what to record.
        """
        brand_code = self.iys_hook.brand_code
        with iys_path.open("w+b") as out:
            size = self.iys_hook.download_daily_file(day, out)
        if size is None:
            values["detail"] = "İYS has no file for the day (204) although its hash differs from ours"
            return False, False, 0
        with iys_path.open("rb") as source:
            file_hasher, head = hash_stream(source, COPY_CHUNK_BYTES)
        values["hash_file"] = file_hasher.hexdigests()[algorithm]
        detection = detect_file_format(head)
        if detection.reason:
            values["detail"] = f"the reading of İYS's file was not recognised: {detection.reason}"
        if override is None and detection.fmt is not None and detection.fmt != fmt:
            self.log.info(
                "%s: İYS's file reads as %s (tried %s); hashing ours in it", day, detection.fmt.name, fmt.name
            )
            fmt = detection.fmt
            values["file_layout"] = fmt.name
            values["movements_ours"], digests = self._hash_ours(conn, day, fmt, ours_path)
            values["hash_ours"] = digests[algorithm]
            if digests[algorithm] == hash_iys:
                return True, True, 0
        try:
            with iys_path.open("rb") as lines:
                reading = load_iys_file(conn, lines, detection.fmt if override is None and detection.fmt else fmt)
            with_status = "status" in reading.columns
            difference = compare_with_file(conn, brand_code, day, with_status=with_status)
            outcome = (
                repair_from_file(conn, brand_code, day, with_status=with_status, onay_lookup=self._onay_lookup)
                if difference.total("missing") or difference.total("changed")
                else RepairOutcome(status_from="file" if with_status else "multi_status")
            )
        finally:
            drop_file_stage(conn)
        values["difference"] = {**difference.to_json(), "file": reading.to_json()}
        values["repaired"] = outcome.stored
        values["repair"] = outcome.to_json()
        self.log.info(
            "%s: İYS's file (%s, %d bytes) has %d rows, %d unreadable lines; we lacked %d, held %d differently, "
            "held %d extra; stored %d (%s, status from %s)",
            day,
            fmt.name,
            size,
            reading.rows,
            reading.unreadable,
            difference.total("missing"),
            difference.total("changed"),
            difference.total("extra"),
            outcome.stored,
            outcome.by_status or "none",
            outcome.status_from,
        )
        values["movements_ours"], digests = self._hash_ours(conn, day, fmt, ours_path)
        values["hash_ours"] = digests[algorithm]
        return True, digests[algorithm] == hash_iys, outcome.stored

    def _onay_lookup(self, recipient_type: str, channel: str, recipients: list[str]) -> set[str]:
        """İYS's multi status for one call's worth (≤1000) of addresses: those it holds as ONAY."""
        return self.iys_hook.get_onay_recipients(recipients, ConsentType(channel), RecipientType(recipient_type))

    def _agree(self, day: date, status: DayStatus, values: dict[str, Any]) -> DayStatus:
        captured = self.iys_hook.put_agreement(day)
        if captured is None:
            values["detail"] = "İYS answered 204: no consent movements that day to agree on"
        elif not captured:
            values["detail"] = "İYS did not capture the agreement (agreementCaptured false); asked again next run"
            return DayStatus.PENDING
        else:
            values["detail"] = None
        values["agreed_at"] = datetime.now(UTC)
        return status

    def _without_hash(self, conn, day: date, row: dict[str, Any], run_id: str) -> DayResult:
        """No hash from İYS: a day without movements on either side is agreed as such; else it waits."""
        ours = row.get("summary_ours") or {}
        theirs = row.get("summary_iys") or {}
        if row.get("process_status") == "no_movements" and not summary_total(ours) and not summary_total(theirs):
            save_reconciliation(
                conn,
                self.iys_hook.brand_code,
                day,
                status=DayStatus.AGREED.value,
                agreed_at=datetime.now(UTC),
                movements_ours=0,
                run_id=run_id,
                detail="no movements on either side; İYS has nothing to agree on",
            )
            return DayResult(report_date=day.isoformat(), status="agreed", movements_ours=0, repaired=0, archived=False)
        raise AirflowFailException(f"{day}: İYS has given no hash for the day yet ({row.get('process_status')})")

    def _mismatch_detail(self, values: dict[str, Any], hash_iys: str, algorithm: str) -> str:
        repair = values.get("repair") or {}
        detail = mismatch_detail(
            algorithm=algorithm,
            difference=values.get("difference"),
            file_hash_is_iys_hash=None if values.get("hash_file") is None else values["hash_file"] == hash_iys,
            fmt_name=values.get("file_layout"),
            stored=int(values.get("repaired") or 0),
            unresolved=int(repair.get("unresolved") or 0),
        )
        return f"{detail}; {values['detail']}" if values.get("detail") else detail

    def _archive(self, conn, day: date, downloaded: bool, iys_path: Path, ours_path: Path, status: DayStatus) -> bool:
        brand_code = self.iys_hook.brand_code
        name = f"iys_{brand_code}_{day.isoformat()}"
        folder = ObjectStoragePath(archive_location_of(self.archive_location)) / str(brand_code) / day.isoformat()
        values: dict[str, Any] = {}
        source = iys_path if downloaded else (ours_path if status in SETTLED else None)
        if source is not None:
            values["archived_file"] = str(write_once(source, folder / f"{name}.csv"))
        tsr_path = iys_path.with_suffix(".tsr")
        with tsr_path.open("w+b") as out:
            size = self.iys_hook.download_timestamp(day, out)
        if size:
            values["archived_timestamp"] = str(write_once(tsr_path, folder / f"{name}.tsr"))
        if values:
            save_reconciliation(conn, brand_code, day, **values)
        self.log.info("%s archived: %s", day, values or "nothing")
        return bool(values.get("archived_file") and values.get("archived_timestamp"))

    def _result(self, day: date, row: dict[str, Any], *, archived: bool) -> DayResult:
        return DayResult(
            report_date=day.isoformat(),
            status=str(row.get("status")),
            movements_ours=int(row.get("movements_ours") or 0),
            repaired=int(row.get("repaired") or 0),
            archived=archived,
        )


def write_once(source: Path, target: ObjectStoragePath) -> ObjectStoragePath:
    """Copy ``source`` to ``target``, streamed; an existing archive is never overwritten.

    The same bytes archived before are left as they are; different bytes go beside them, named
    with the time of this copy (evidence is kept, not replaced).
    """
    if target.exists():
        if _same_bytes(source, target):
            return target
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = target.parent / f"{target.stem}.{stamp}{target.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, COPY_CHUNK_BYTES)
    return target


def _same_bytes(source: Path, target: ObjectStoragePath) -> bool:
    mine, theirs = MultiHasher(), MultiHasher()
    with source.open("rb") as src:
        while block := src.read(COPY_CHUNK_BYTES):
            mine.update(block)
    with target.open("rb") as archived:
        while block := archived.read(COPY_CHUNK_BYTES):
            theirs.update(block)
    return mine.hexdigests() == theirs.hexdigests()


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
