"""One look at İYS's hash job of a day: the service behind the hash sensor and its deferrable trigger.

``GET …/agreements/{reportDate}`` starts İYS's job (``queued`` → ``inprogress`` → ``completed``).
Each look records what İYS said in ``iys.reconciliations`` and returns the verdict of
:func:`~iys_provider.reconciliation.rules.hash_job_verdict`. The times the wait is measured from are
kept in the row, so a look from a worker (reschedule mode) and one from the triggerer (deferrable)
measure the same wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg

from iys_provider.exceptions import IysApiError, IysStepFailure
from iys_provider.hooks.iys import IysHook
from iys_provider.reconciliation.rules import (
    SETTLED,
    DayStatus,
    HashJobVerdict,
    describe_hash_method,
    hash_job_verdict,
    summary_total,
    waiting_reason,
)
from iys_provider.reconciliation.store import read_reconciliation, save_reconciliation

#: İYS's refusals of the hash query: asking again gets the same answer (and costs success ratio).
REFUSED_STATUSES = (400, 403, 404, 422)


@dataclass(frozen=True)
class HashLook:
    """What one look found: the verdict, İYS's job status as recorded, and the reason when it ends the wait."""

    day: date
    verdict: HashJobVerdict
    process_status: str | None = None
    detail: str | None = None
    #: The day was agreed on before this look: İYS was not asked.
    already_agreed: bool = False

    @property
    def finished(self) -> bool:
        return self.verdict is not HashJobVerdict.WAIT

    @property
    def outcome(self) -> str:
        """The wait's result for the next task: ``agreed`` for a day settled earlier, else the verdict."""
        return "agreed" if self.already_agreed else self.verdict.value

    def to_event(self) -> dict[str, Any]:
        """A small, JSON-able form (a trigger event's payload; no personal data)."""
        return {
            "report_date": self.day.isoformat(),
            "verdict": self.verdict.value,
            "process_status": self.process_status,
            "detail": self.detail,
            "already_agreed": self.already_agreed,
        }

    @classmethod
    def from_event(cls, payload: dict[str, Any]) -> HashLook:
        return cls(
            day=date.fromisoformat(payload["report_date"]),
            verdict=HashJobVerdict(payload["verdict"]),
            process_status=payload.get("process_status"),
            detail=payload.get("detail"),
            already_agreed=bool(payload.get("already_agreed")),
        )


def look_at_hash_job(
    hook: IysHook,
    conn: psycopg.Connection,
    day: date,
    *,
    run_id: str,
    max_wait: timedelta,
    now: datetime,
) -> HashLook:
    """Ask İYS once for the day's hash job and record the answer; raises :class:`IysStepFailure` on a refusal."""
    brand_code = hook.brand_code
    row = read_reconciliation(conn, brand_code, day) or {}
    if row.get("status") in SETTLED and row.get("hash_iys"):
        return HashLook(day, HashJobVerdict.COMPLETED, already_agreed=True)
    try:
        info = hook.get_agreement(day)
    except IysApiError as exc:
        if exc.status_code in REFUSED_STATUSES:
            save_reconciliation(conn, brand_code, day, run_id=run_id, detail=f"İYS refused: {exc}"[:500])
            raise IysStepFailure(f"{day}: İYS refused the hash query: {exc}") from None
        raise
    values: dict[str, Any] = {"run_id": run_id}
    status = None if info is None else info.process_status.strip().lower()
    queued_since = row.get("hash_queued_since")
    if status == "queued":
        if queued_since is None:
            values["hash_queued_since"] = now
    elif queued_since is not None:
        values["hash_queued_since"] = None
    day_is_empty = (
        row.get("summary_ours") is not None
        and row.get("summary_iys") is not None
        and not summary_total(row["summary_ours"])
        and not summary_total(row["summary_iys"])
    )
    finished = status in ("completed", "error") and (status == "error" or bool(info and info.hash_value))
    waiting_since = row.get("hash_waiting_since")
    if finished or (info is None and day_is_empty):
        if waiting_since is not None:
            values["hash_waiting_since"] = None
    elif waiting_since is None:
        waiting_since = values["hash_waiting_since"] = now
    verdict = hash_job_verdict(
        info,
        waited_for=None if waiting_since is None else now - waiting_since,
        max_wait=max_wait,
        day_is_empty=day_is_empty,
    )
    values["process_status"] = ("no_movements" if day_is_empty else "no_value") if info is None else status
    if verdict is HashJobVerdict.COMPLETED:
        assert info is not None and info.hash_value
        values["hash_iys"] = info.hash_value.strip().lower()
        values["hash_method"] = describe_hash_method(info.hash_method, info.hash_value)
    elif verdict is HashJobVerdict.ERROR:
        values["status"] = DayStatus.HASH_ERROR.value
        values["detail"] = "İYS's hash job ended in error"
    elif verdict is HashJobVerdict.TOO_LONG:
        assert waiting_since is not None
        if row.get("status") not in SETTLED:
            values["status"] = DayStatus.PENDING.value
        values["hash_iys"] = None
        since = (queued_since or now) if status == "queued" else waiting_since
        values["detail"] = waiting_reason(values["process_status"], since, max_wait)
    save_reconciliation(conn, brand_code, day, **values)
    return HashLook(day, verdict, process_status=values["process_status"], detail=values.get("detail"))
