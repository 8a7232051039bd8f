"""The reconciliation's hash wait on the triggerer: the deferrable form of the hash sensor."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from iys_provider.database import iys_database
from iys_provider.hooks.iys import IysHook
from iys_provider.reconciliation.hash_wait import look_at_hash_job
from iys_provider.triggers.polling import IysPollingTrigger

log = logging.getLogger(__name__)


class IysReconciliationHashTrigger(IysPollingTrigger):
    """Looks at İYS's hash job of ``report_date`` until it is finished or waited for too long.

    Each look is :func:`~iys_provider.reconciliation.hash_wait.look_at_hash_job`, the hash sensor's
    own, so the day's row records every answer; the event carries the last look (no personal data).

    :param iys_conn_id: the brand's ``iys`` connection.
    :param postgres_conn_id: the database holding schema ``iys``.
    :param hook_params: keyword arguments of :class:`~iys_provider.hooks.iys.IysHook`.
    :param report_date: the day, ``YYYY-MM-DD``.
    :param max_wait_seconds: how long an unfinished job is waited for (measured from the day's row).
    :param run_id: the DAG run the looks are recorded for.
    :param poke_interval: seconds between looks.
    """

    def __init__(
        self,
        *,
        iys_conn_id: str,
        postgres_conn_id: str,
        report_date: str,
        max_wait_seconds: float,
        run_id: str,
        poke_interval: float,
        hook_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(poke_interval=poke_interval)
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.hook_params = dict(hook_params or {})
        self.report_date = report_date
        self.max_wait_seconds = float(max_wait_seconds)
        self.run_id = run_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "iys_conn_id": self.iys_conn_id,
                "postgres_conn_id": self.postgres_conn_id,
                "hook_params": self.hook_params,
                "report_date": self.report_date,
                "max_wait_seconds": self.max_wait_seconds,
                "run_id": self.run_id,
                "poke_interval": self.poke_interval,
            },
        )

    def look(self) -> dict[str, Any] | None:
        hook = IysHook(iys_conn_id=self.iys_conn_id, **self.hook_params)
        with iys_database(self.postgres_conn_id, log=log, also_close=hook.close) as conn:
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
