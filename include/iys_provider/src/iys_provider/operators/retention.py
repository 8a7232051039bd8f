"""Delete the brand's change-feed events and settled outbox rows older than their configured retention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from airflow.sdk import Context

from iys_provider.lineage import TaskLineage
from iys_provider.models import StepKind
from iys_provider.operators.base import IysBaseOperator
from iys_provider.people.retention import DEFAULT_RETENTION_CHUNK_SIZE, RetentionPolicy
from iys_provider.people.retention_store import apply_retention

__all__ = ["IysApplyRetentionOperator", "RetentionResult"]


class RetentionResult(TypedDict):
    """Rows deleted: change-feed events, outbox rows in a final state, pushed movements."""

    step: str
    consent_events_deleted: int
    finished_updates_deleted: int
    pushed_movements_deleted: int


class IysApplyRetentionOperator(IysBaseOperator):
    """Delete what the retention keeps no longer, for the brand of the ``iys`` connection.

    Both default to None: keep forever, and the task deletes nothing. The rules (what is never
    deleted, and why the minimums) are in :mod:`iys_provider.people.retention`.

    :param consent_events_retention_days: days to keep ``iys.consent_events`` rows, counted from
        when they were stored; at least 8 (İYS's change feed replays 7 days, and a replayed
        movement is recognised by its stored event). (templated)
    :param finished_updates_retention_days: days to keep ``iys.consent_updates`` rows in a final
        state (sent, skipped, rejected, failed), counted from when they were settled; at least 1.
        A failed opt-out (RET) stays until its legal deadline has passed. (templated)
    :param chunk_size: rows deleted per transaction.
    """

    lineage = TaskLineage(writes=("consent_events", "consent_updates", "push_inbox", "push_quarantine"))

    template_fields: Sequence[str] = (
        *IysBaseOperator.template_fields,
        "consent_events_retention_days",
        "finished_updates_retention_days",
    )

    def __init__(
        self,
        *,
        consent_events_retention_days: int | str | None = None,
        finished_updates_retention_days: int | str | None = None,
        chunk_size: int = DEFAULT_RETENTION_CHUNK_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.consent_events_retention_days = consent_events_retention_days
        self.finished_updates_retention_days = finished_updates_retention_days
        self.chunk_size = chunk_size

    def execute(self, context: Context) -> RetentionResult:
        policy = RetentionPolicy.from_arguments(
            self.consent_events_retention_days, self.finished_updates_retention_days
        )
        if policy.keeps_everything:
            self.log.info("Retention: everything is kept (no retention days set); nothing deleted")
            return RetentionResult(
                step=StepKind.RETENTION.value,
                consent_events_deleted=0,
                finished_updates_deleted=0,
                pushed_movements_deleted=0,
            )
        brand_code = self.iys_hook.brand_code
        with self.database() as conn:
            outcome = apply_retention(conn, brand_code=brand_code, policy=policy, chunk_size=self.chunk_size)
        self.log.info(
            "Retention: %s; %s",
            _described("change-feed events", outcome.consent_events_deleted, policy.consent_events_days),
            _described("settled outbox rows", outcome.finished_updates_deleted, policy.finished_updates_days),
        )
        if outcome.pushed_movements_deleted:
            self.log.info("Retention: %d pushed movements deleted with them", outcome.pushed_movements_deleted)
        return RetentionResult(
            step=StepKind.RETENTION.value,
            consent_events_deleted=outcome.consent_events_deleted,
            finished_updates_deleted=outcome.finished_updates_deleted,
            pushed_movements_deleted=outcome.pushed_movements_deleted,
        )


def _described(rows: str, deleted: int, days: int | None) -> str:
    return f"{rows} kept forever" if days is None else f"{deleted} {rows} older than {days} days deleted"
