"""Push the brand's pending consent updates (the outbox) to İYS, for recipients İYS already holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException

from iys_provider.lineage import TaskLineage
from iys_provider.operators.base import IysBaseOperator
from iys_provider.outbox.push import DEFAULT_MAX_ATTEMPTS, OutboxPush, PushResult, PushSettings
from iys_provider.outbox.rules import (
    DEFAULT_CLOCK_SKEW,
    DEFAULT_FUTURE_TOLERANCE,
    DEFAULT_MAX_BATCH_AGE,
    DEFAULT_MAX_REQUEUES,
    WRITE_POLICIES,
)

__all__ = ["IysPushConsentUpdatesOperator", "PushResult"]


class IysPushConsentUpdatesOperator(IysBaseOperator):
    """Send pending rows of ``iys.consent_updates`` to İYS — never creating a recipient.

    Each row is validated (recipient, enums, source, dates with a clock tolerance), superseded rows
    are skipped, and every remaining address is verified with İYS's multi status (≤1000 per
    call) right before sending: a RET goes out exactly when İYS holds ONAY now, whatever our copy
    says. The rules and every verdict are in :mod:`iys_provider.outbox.rules`.

    What remains is sent: one by one through the idempotent single add when there are at most
    ``single_add_threshold`` rows, otherwise as async batches of ≤1000 whose results
    :class:`~iys_provider.sensors.batch_results.IysBatchResultSensor` collects. When İYS refuses
    items of a batch by index, only those are settled and the rest is resubmitted at once.

    One row's trouble never stops the others: a failed check or send leaves that row pending
    (after ``max_attempts`` tries it ends ``failed`` with the H-code or reason; a passing failure is
    requeued by a later run while İYS would accept it). Only errors that
    would hit every row alike (credentials, İYS's token block) stop the task. Rows whose consent
    date is up to ``future_tolerance_seconds`` ahead of our clock wait, within this run, until
    they are ``clock_skew_seconds`` in the past. Rows are never deleted.

    :param mode: write policy; only ``"sync"`` (İYS Sync Mode) exists. (templated)
    :param max_rows: pending rows read per run.
    :param single_add_threshold: up to this many sends go one by one, more as async batches.
    :param max_status_checks: single-status calls per run (İYS allows 1000 per hour per IP).
    :param max_attempts: unsettled tries before a row ends ``failed``.
    :param future_tolerance_seconds: a consent date this far ahead waits instead of FUTURE_DATE.
    :param clock_skew_seconds: how far İYS's clock may lag ours (see :mod:`iys_provider.outbox.rules`).
    :param max_batch_age_seconds: submitted rows older than this go back to pending first.
    :param max_requeues: how often a row that ended ``failed`` for a passing reason (5xx, network,
        an unreadable answer) goes back to the queue while İYS would still accept it.
    """

    lineage = TaskLineage(
        reads=("consent_updates", "consents"), writes=("consent_updates", "consents"), iys_reads=True, iys_writes=True
    )

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "mode")

    def __init__(
        self,
        *,
        mode: str = "sync",
        max_rows: int = 50_000,
        single_add_threshold: int = 20,
        max_status_checks: int = 500,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        future_tolerance_seconds: float = DEFAULT_FUTURE_TOLERANCE.total_seconds(),
        clock_skew_seconds: float = DEFAULT_CLOCK_SKEW.total_seconds(),
        max_batch_age_seconds: float = DEFAULT_MAX_BATCH_AGE.total_seconds(),
        max_requeues: int = DEFAULT_MAX_REQUEUES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.max_rows = max_rows
        self.single_add_threshold = single_add_threshold
        self.max_status_checks = max_status_checks
        self.max_attempts = max_attempts
        self.future_tolerance = timedelta(seconds=future_tolerance_seconds)
        self.clock_skew = timedelta(seconds=clock_skew_seconds)
        self.max_batch_age = timedelta(seconds=max_batch_age_seconds)
        self.max_requeues = max_requeues

    def execute(self, context: Context) -> PushResult:
        if self.mode not in WRITE_POLICIES:
            raise AirflowException(f"unknown mode {self.mode!r}; this release ships only {sorted(WRITE_POLICIES)}")
        settings = PushSettings(
            policy=WRITE_POLICIES[self.mode],
            max_rows=self.max_rows,
            single_add_threshold=self.single_add_threshold,
            max_status_checks=self.max_status_checks,
            max_attempts=self.max_attempts,
            future_tolerance=self.future_tolerance,
            clock_skew=self.clock_skew,
            max_batch_age=self.max_batch_age,
            max_requeues=self.max_requeues,
        )
        with self.database() as conn:
            return OutboxPush(self.iys_hook, conn, settings, self.log).run()
