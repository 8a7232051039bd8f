"""Reconciling one day with İYS: hash our file of the day, agree, or repair from İYS's file, and archive.

The rules (statuses, readings of İYS's file, hashes) are in :mod:`iys_provider.reconciliation.rules`, their SQL
in :mod:`iys_provider.reconciliation.store`; this module works one day with them.
:class:`~iys_provider.operators.reconciliation.IysReconcileDayOperator` is its Airflow face.

1. Streams the day's movements out of ``iys.consent_events`` in İYS's file format and hashes
   them: in the reading the brand's last agreed day showed (``literal`` at first), or the
   ``file_format`` override (see :data:`~iys_provider.reconciliation.rules.FILE_FORMATS`).
2. Equal to İYS's hash (recorded by the hash sensor): ``PUT`` the agreement; status ``agreed``.
3. Different: downloads İYS's file (streamed to a temporary file), hashes the bytes served,
   recognises its reading by its content and, when that is not the one tried, hashes our file
   again in it. Still different: lists what we lack, hold differently or hold extra, stores the
   movements we lack through the change feed's rules, hashes again, and agrees only when the
   hashes are equal now (``repaired_and_agreed``); otherwise the day is a ``mismatch``
   (:class:`DayNotAgreedError`).
4. Archives the day's file and İYS's timestamp (``.tsr``) under ``<archive>/<brand>/<date>/``,
   never overwriting an archived file.

It also holds what the reconciliation's tasks share about a day: its date, İYS's window, the archive.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import psycopg

from iys_provider.exceptions import IysStepFailure
from iys_provider.hooks.iys import IysHook
from iys_provider.models import ConsentType, RecipientType
from iys_provider.reconciliation.rules import (
    LITERAL,
    SETTLED,
    DayStatus,
    FileFormat,
    MultiHasher,
    algorithm_for,
    day_status,
    detect_file_format,
    file_format,
    hash_stream,
    mismatch_detail,
    outside_window_reason,
    summary_total,
)
from iys_provider.reconciliation.store import (
    RepairOutcome,
    compare_with_file,
    drop_file_stage,
    last_agreed_layout,
    load_iys_file,
    read_reconciliation,
    repair_from_file,
    save_reconciliation,
    stream_day_file,
)

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath


class DayNotAgreedError(IysStepFailure):
    """The day is not agreed with İYS (a mismatch, no hash yet, a date outside İYS's window): asking again now
    would change nothing."""


COPY_CHUNK_BYTES = 1 << 20


def parse_report_date(value: str | date) -> date:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise DayNotAgreedError(f"report_date must be a date like 2026-11-27, not {value!r}") from None


def ensure_in_window(day: date, now: datetime | None = None) -> None:
    """Fail, without calling İYS, when ``day`` has left İYS's window since it was planned (a run delayed for hours)."""
    reason = outside_window_reason(day, now or datetime.now(UTC))
    if reason:
        raise DayNotAgreedError(f"Not asking İYS about {day}: {reason}")


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


class DayResult(TypedDict):
    report_date: str
    status: str
    movements_ours: int
    repaired: int
    archived: bool


@dataclass
class ReconciliationDay:
    """Reconcile ``day`` over ``conn`` (autocommit) through ``hook``, recording ``run_id`` on the day's row.

    ``archive``: the base folder of the evidence (``None``: nothing is archived); ``file_format_override``:
    the reading to write our file in instead of the one learned; ``clock``: the current time (aware).
    """

    hook: IysHook
    conn: psycopg.Connection
    day: date
    run_id: str
    archive: ObjectStoragePath | None = None
    file_format_override: FileFormat | None = None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))

    def run(self) -> DayResult:
        conn, day, run_id = self.conn, self.day, self.run_id
        override = self.file_format_override
        brand_code = self.hook.brand_code
        archive = self.archive is not None
        with tempfile.TemporaryDirectory(prefix="iys-reconciliation-") as workdir:
            row = read_reconciliation(conn, brand_code, day) or {}
            status = row.get("status")
            if is_done(row, archive):
                self.log.info("%s is already %s", day, status)
                return _result(day, row, archived=bool(row.get("archived_file")))
            ensure_in_window(day, self.clock())
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
                        downloaded = self.hook.download_daily_file(day, out) is not None
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
            raise DayNotAgreedError(f"{day} not agreed with İYS ({new_status.value}): {values.get('detail')}")
        return result

    # ------------------------------------------------------------------ steps

    def _reading_to_try(self, conn, row: dict[str, Any]) -> FileFormat:
        """The reading our first hash is written in: the day's own last one, else the brand's last agreed one."""
        for name in (row.get("file_layout"), last_agreed_layout(conn, self.hook.brand_code)):
            if name:
                try:
                    return file_format(name) or LITERAL
                except ValueError:
                    self.log.warning("Ignoring the unknown file reading %r recorded before", name)
        return LITERAL

    def _hash_ours(self, conn, day: date, fmt: FileFormat, copy_to: Path | None) -> tuple[int, dict[str, str]]:
        hasher = MultiHasher()
        if copy_to is None:
            rows = stream_day_file(conn, self.hook.brand_code, day, fmt, hasher.update)
        else:
            with copy_to.open("wb") as out:

                def sink(block: bytes) -> None:
                    hasher.update(block)
                    out.write(block)

                rows = stream_day_file(conn, self.hook.brand_code, day, fmt, sink)
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
        brand_code = self.hook.brand_code
        with iys_path.open("w+b") as out:
            size = self.hook.download_daily_file(day, out)
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
        return self.hook.get_onay_recipients(recipients, ConsentType(channel), RecipientType(recipient_type))

    def _agree(self, day: date, status: DayStatus, values: dict[str, Any]) -> DayStatus:
        captured = self.hook.put_agreement(day)
        if captured is None:
            values["detail"] = "İYS answered 204: no consent movements that day to agree on"
        elif not captured:
            values["detail"] = "İYS did not capture the agreement (agreementCaptured false); asked again next run"
            return DayStatus.PENDING
        else:
            values["detail"] = None
        values["agreed_at"] = self.clock()
        return status

    def _without_hash(self, conn, day: date, row: dict[str, Any], run_id: str) -> DayResult:
        """No hash from İYS: a day without movements on either side is agreed as such; else it waits."""
        ours = row.get("summary_ours") or {}
        theirs = row.get("summary_iys") or {}
        if row.get("process_status") == "no_movements" and not summary_total(ours) and not summary_total(theirs):
            save_reconciliation(
                conn,
                self.hook.brand_code,
                day,
                status=DayStatus.AGREED.value,
                agreed_at=self.clock(),
                movements_ours=0,
                run_id=run_id,
                detail="no movements on either side; İYS has nothing to agree on",
            )
            return DayResult(report_date=day.isoformat(), status="agreed", movements_ours=0, repaired=0, archived=False)
        raise DayNotAgreedError(f"{day}: İYS has given no hash for the day yet ({row.get('process_status')})")

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
        brand_code = self.hook.brand_code
        name = f"iys_{brand_code}_{day.isoformat()}"
        assert self.archive is not None
        folder = self.archive / str(brand_code) / day.isoformat()
        values: dict[str, Any] = {}
        source = iys_path if downloaded else (ours_path if status in SETTLED else None)
        if source is not None:
            values["archived_file"] = str(write_once(source, folder / f"{name}.csv"))
        tsr_path = iys_path.with_suffix(".tsr")
        with tsr_path.open("w+b") as out:
            size = self.hook.download_timestamp(day, out)
        if size:
            values["archived_timestamp"] = str(write_once(tsr_path, folder / f"{name}.tsr"))
        if values:
            save_reconciliation(conn, brand_code, day, **values)
        self.log.info("%s archived: %s", day, values or "nothing")
        return bool(values.get("archived_file") and values.get("archived_timestamp"))


def _result(day: date, row: dict[str, Any], *, archived: bool) -> DayResult:
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
