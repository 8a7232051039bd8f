"""İYS's daily reconciliation (mutabakat) endpoints: summary, hash job, agreement, daily file, timestamp.

Written from İYS's OpenAPI v3.2.0 (tag MUTABAKAT YÖNETİMİ), independently of the provider: the
provider's own file writer and this one must agree byte for byte for a clean day to be agreed.

The daily file of a brand and day holds every movement of that day (both streams, whatever the
change feed showed), one row per transaction id (movements of one address and channel in the same
second share one; the row keeps the last), sorted by creation date, then transaction id. The
literal reading of the documentation, as the provider's default variant reads it:

* a header line with the eight column names, then one line per movement;
* columns ``creationDate,transactionId,recipient,recipientType,type,status,consentDate,source``;
* comma-separated, a value quoted only when it holds a comma, a quote or a line break (RFC 4180);
* UTF-8 without a BOM, ``\\n`` after every line (the file ends with ``\\n``);
* dates ``YYYY-MM-DD HH:mm:ss`` in Turkey time, an empty ``consentDate`` when the movement has none.

The other documented readings, alone or combined, are configuration (``reconciliation_file_*``):
no header line; ``\\r\\n`` line ends; a UTF-8 BOM; FAQ Q1's seven columns (no ``status``); a
trailing comma on every line (FAQ Q1's list ends with one). The hash is over the bytes served.

The hash job of a day starts with the first ``GET …/agreements/{reportDate}``:

==================  =========================================================================
job mode            states the job goes through (simulated clock)
==================  =========================================================================
``normal``          ``queued`` for ``reconciliation_queue_seconds``, ``inprogress`` until
                    ``reconciliation_hash_seconds``, then ``completed`` with ``hashValue``
``error``           as ``normal``, but ends in ``error`` without a hash
``stuck_queued``    stays ``queued`` forever (İYS: a job whose queueing failed)
==================  =========================================================================

Dates: ``reportDate`` must be ``YYYY-MM-DD`` (else 422 H501) and one of the last
``reconciliation_window_days`` completed days in Turkey time (older: 422 H502). Today and later
have nothing yet: 204 (İYS does not document this case).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from .clock import TURKEY_TZ
from .errors import error_item
from .messages import BadRequest, SimRequest, SimResponse, error_response, json_body, json_response
from .validation import RECIPIENT_TYPES

FILE_COLUMNS = (
    "creationDate",
    "transactionId",
    "recipient",
    "recipientType",
    "type",
    "status",
    "consentDate",
    "source",
)
JOB_MODES = ("normal", "error", "stuck_queued")
HASH_METHODS = {"sha384": hashlib.sha384, "sha256": hashlib.sha256}
_REPORT_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TSR_MAGIC = b"IYS-SIM-TSR\x00"


@dataclass
class HashJob:
    started_epoch: float
    mode: str
    agreed: bool = False


def render_daily_file(
    movements: list[dict[str, Any]],
    *,
    header: bool = True,
    line_end: str = "\n",
    bom: bool = False,
    columns: int = 8,
    trailing_comma: bool = False,
) -> bytes:
    """The daily file's bytes for ``movements`` (pull-body dicts), already collapsed and sorted."""
    names = FILE_COLUMNS if columns == 8 else tuple(name for name in FILE_COLUMNS if name != "status")
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=",", quoting=csv.QUOTE_MINIMAL, lineterminator=line_end)
    tail = [""] if trailing_comma else []
    if header:
        writer.writerow([*names, *tail])
    for movement in movements:
        writer.writerow(["" if movement.get(column) is None else str(movement[column]) for column in names] + tail)
    return ("\ufeff" if bom else "").encode("utf-8") + out.getvalue().encode("utf-8")


def timestamp_token(file_bytes: bytes, brand_code: int, report_date: str) -> bytes:
    """A stand-in for İYS's RFC 3161 ``.tsr``: binary, stamping the file's SHA-384 imprint."""
    return TSR_MAGIC + f"{brand_code}|{report_date}|".encode() + hashlib.sha384(file_bytes).digest()


class ReconciliationEndpoints:
    """Mixed into :class:`~iys_simulator.app.SimulatorApp` (which owns config, clock, store and lock)."""

    # ------------------------------------------------------------------ helpers
    def _report_date(self, params: dict[str, str]) -> date | None:
        """The requested day, or ``None`` when it is not completed yet; 422 H501/H502 as İYS documents."""
        raw = params["report_date"]
        try:
            if not _REPORT_DATE.match(raw):
                raise ValueError(raw)
            day = date.fromisoformat(raw)
        except ValueError:
            raise BadRequest(error_response(error_item("H501", location=["reportDate"], value=raw))) from None
        today = self.clock.now().date()
        if day < today - timedelta(days=int(self.config.reconciliation_window_days)):
            raise BadRequest(error_response(error_item("H502", location=["reportDate"], value=raw)))
        return day if day < today else None

    def day_movements(self, brand_code: int, day: date) -> list[dict[str, Any]]:
        """Every movement of ``brand_code`` created on ``day`` (Turkey time), one per transaction id, sorted."""
        start = int(datetime(day.year, day.month, day.day, tzinfo=TURKEY_TZ).timestamp() * 1000)
        end = start + 24 * 3600 * 1000
        latest: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        for (brand, _stream), stream in self.store.streams.items():
            if brand != brand_code:
                continue
            for event in stream.sorted_view()[0]:
                if start <= event.creation_ms < end:
                    kept = latest.get(event.transaction_id)
                    if kept is None or event.sort_key >= kept[0]:
                        latest[event.transaction_id] = (event.sort_key, event.pull_body())
        rows = [body for _, body in latest.values()]
        rows.sort(key=lambda body: (str(body.get("creationDate")), str(body.get("transactionId"))))
        return rows

    def daily_file(self, brand_code: int, day: date) -> bytes:
        return render_daily_file(
            self.day_movements(brand_code, day),
            header=bool(self.config.reconciliation_file_header),
            line_end=str(self.config.reconciliation_file_line_end),
            bom=bool(self.config.reconciliation_file_bom),
            columns=int(self.config.reconciliation_file_columns),
            trailing_comma=bool(self.config.reconciliation_file_trailing_comma),
        )

    def _hash_of(self, file_bytes: bytes) -> str:
        return HASH_METHODS[str(self.config.reconciliation_hash_algorithm)](file_bytes).hexdigest()

    def _job(self, brand_code: int, day: date) -> HashJob:
        key = (brand_code, day.isoformat())
        modes = self.config.reconciliation_job_modes
        mode = str(modes.get(day.isoformat(), modes.get("*", "normal")))
        job = self._hash_jobs.get(key)
        if job is None or job.mode != mode:
            # A new job, or the test changed the day's mode: the job starts over (an agreement stays).
            job = self._hash_jobs[key] = HashJob(self.clock.epoch(), mode, agreed=bool(job and job.agreed))
        return job

    def _job_status(self, job: HashJob) -> str:
        if job.mode == "stuck_queued":
            return "queued"
        elapsed = self.clock.epoch() - job.started_epoch
        if elapsed < float(self.config.reconciliation_queue_seconds):
            return "queued"
        if elapsed < float(self.config.reconciliation_hash_seconds):
            return "inprogress"
        return "error" if job.mode == "error" else "completed"

    # ------------------------------------------------------------------ endpoints
    def _ep_reconciliation_summary(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        recipient_type = params["recipient_type"]
        if recipient_type not in RECIPIENT_TYPES:
            return error_response(error_item("H116", location=["recipientType"], value=recipient_type))
        day = self._report_date(params)
        stats: dict[str, dict[str, dict[str, int]]] = {}
        if day is not None:
            for movement in self.day_movements(int(params["brand"]), day):
                if movement.get("recipientType", "BIREYSEL") != recipient_type:
                    continue
                source = "IYS" if str(movement.get("source") or "").startswith("IYS_") else "HS"
                counts = stats.setdefault(str(movement["type"]), {}).setdefault(
                    source, {"approval": 0, "rejection": 0, "pending": 0, "total": 0}
                )
                counts["total"] += 1
                if movement.get("status") == "ONAY":
                    counts["approval"] += 1
                elif movement.get("status") == "RET":
                    counts["rejection"] += 1
        body = {
            "changeStats": [
                {"type": type_, "consents": [{"source": source, **counts} for source, counts in by_source.items()]}
                for type_, by_source in stats.items()
            ]
        }
        return json_response(200, body)

    def _ep_agreement(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        day = self._report_date(params)
        brand_code = int(params["brand"])
        if day is None or not self.day_movements(brand_code, day):
            return SimResponse(204)
        job = self._job(brand_code, day)
        status = self._job_status(job)
        body: dict[str, Any] = {"processStatus": status, "agreementStatus": job.agreed}
        if status == "completed":
            body["hashValue"] = self._hash_of(self.daily_file(brand_code, day))
            body["hashMethod"] = str(self.config.reconciliation_hash_method)
        return json_response(200, body)

    def _ep_agreement_put(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        day = self._report_date(params)
        body = json_body(request, invalid_shape_code="H014", expect=dict)
        if body.get("agreementStatus") is not True:
            return error_response(error_item("H512", location=["agreementStatus"], value=body.get("agreementStatus")))
        brand_code = int(params["brand"])
        if day is None or not self.day_movements(brand_code, day):
            return SimResponse(204)  # no consent movements that day to reconcile
        self._job(brand_code, day).agreed = True
        self.counters["agreements_captured"] = self.counters.get("agreements_captured", 0) + 1
        return json_response(200, {str(self.config.reconciliation_captured_field): True})

    def _ep_reconciliation_file(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        day = self._report_date(params)
        brand_code = int(params["brand"])
        if day is None or not self.day_movements(brand_code, day):
            return SimResponse(204)  # file not found
        return SimResponse(200, self.daily_file(brand_code, day), {"Content-Type": "text/csv; charset=UTF-8"})

    def _ep_reconciliation_timestamp(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        day = self._report_date(params)
        if day is None:
            return SimResponse(204)
        brand_code = int(params["brand"])
        token = timestamp_token(self.daily_file(brand_code, day), brand_code, day.isoformat())
        # İYS declares text/plain although the payload is a binary .tsr.
        return SimResponse(200, token, {"Content-Type": "text/plain"})


def check_reconciliation_config(config: Any) -> None:
    """Validate the reconciliation fields of a :class:`~iys_simulator.config.SimulatorConfig`."""
    if str(config.reconciliation_hash_algorithm) not in HASH_METHODS:
        raise ValueError(f"reconciliation_hash_algorithm must be one of {sorted(HASH_METHODS)}")
    if not isinstance(config.reconciliation_job_modes, dict):
        raise ValueError('reconciliation_job_modes must map a date (or "*") to a job mode')
    for key, mode in config.reconciliation_job_modes.items():
        if mode not in JOB_MODES:
            raise ValueError(f"reconciliation_job_modes[{key!r}] must be one of {JOB_MODES}")
    if config.reconciliation_file_line_end not in ("\n", "\r\n"):
        raise ValueError('reconciliation_file_line_end must be "\\n" or "\\r\\n"')
    if int(config.reconciliation_file_columns) not in (7, 8):
        raise ValueError("reconciliation_file_columns must be 7 (FAQ Q1, no status) or 8")
    if int(config.reconciliation_window_days) < 1:
        raise ValueError("reconciliation_window_days must be at least 1")
