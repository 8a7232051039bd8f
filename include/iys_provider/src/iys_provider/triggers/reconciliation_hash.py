"""The reconciliation's hash wait on the triggerer: the deferrable form of the hash sensor."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from iys_provider.reconciliation.hash_wait import look_at_hash_job
from iys_provider.triggers.polling import IysPollingTrigger

log = logging.getLogger(__name__)


class IysReconciliationHashTrigger(IysPollingTrigger):
    """Looks at İYS's hash job of ``report_date`` until it is finished or waited for too long.

    Each look is :func:`~iys_provider.reconciliation.hash_wait.look_at_hash_job`, the hash sensor's
    own, so the day's row records every answer; the event carries the last look (no personal data).
    Connections, run and interval: :class:`IysPollingTrigger`.

    :param report_date: the day, ``YYYY-MM-DD``.
    :param max_wait_seconds: how long an unfinished job is waited for (measured from the day's row).
    """

    def __init__(self, *, report_date: str, max_wait_seconds: float, **common: Any) -> None:
        super().__init__(**common)
        self.report_date = report_date
        self.max_wait_seconds = float(max_wait_seconds)

    def wait_arguments(self) -> dict[str, Any]:
        return {"report_date": self.report_date, "max_wait_seconds": self.max_wait_seconds}

    def look(self) -> dict[str, Any] | None:
        with self.connections() as (hook, conn):
            seen = look_at_hash_job(
                hook,
                conn,
                date.fromisoformat(self.report_date),
                run_id=self.run_id,
                max_wait=timedelta(seconds=self.max_wait_seconds),
                now=datetime.now(UTC),
            )
        if not seen.finished:
            log.info(
                "%s: İYS's hash job is %s; looking again in %s s", seen.day, seen.process_status, self.poke_interval
            )
            return None
        return {"look": seen.to_event()}
