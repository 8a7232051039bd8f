"""What one incremental run's row in ``iys.sync_runs`` says, read from its steps' results.

Every step of the run returns a small result (its XCom): a mapping of figures, naming its kind in
``step`` (:class:`~iys_provider.models.StepKind`). The report hands this module the results by task id;
each column of the row adds up the figures listed for it in :data:`FIGURE_SOURCES` and
:data:`DETAIL_SOURCES`, whatever the tasks are called and however many there are. A result of a kind
not read here (a step added to the DAG, or one of another package) is kept whole in the row's details,
under ``other_steps``: adding a step needs no change here nor in the report.

No psycopg, no Airflow: the SQL is in :mod:`iys_provider.run_report.sync_runs_store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypedDict

from iys_provider.models import ChangeStream, StepKind

#: A step's result: its figures, and its kind under ``step``.
StepResult = Mapping[str, Any]


class Figure(NamedTuple):
    """One figure of the steps of one kind (of one change stream only, when ``stream`` is set)."""

    step: StepKind
    name: str
    stream: ChangeStream | None = None


_PULL, _PUSH, _SETTLE = StepKind.CHANGE_FEED_PULL, StepKind.OUTBOX_PUSH, StepKind.OUTBOX_SETTLEMENT

#: The counting columns of ``iys.sync_runs``, each the sum of these figures over the run's steps.
FIGURE_SOURCES: dict[str, tuple[Figure, ...]] = {
    "pulled_iys": (Figure(_PULL, "pulled", ChangeStream.IYS),),
    "pulled_hs": (Figure(_PULL, "pulled", ChangeStream.HS),),
    "applied": (Figure(_PULL, "applied"),),
    "ignored_stale": (Figure(_PULL, "ignored_stale"),),
    "new_users_checked": (Figure(StepKind.NEW_USERS, "users_checked"),),
    "pushed": (Figure(_PUSH, "sent"), Figure(_SETTLE, "sent")),
    "skipped": (Figure(_PUSH, "skipped"), Figure(_SETTLE, "skipped")),
    "rejected": (Figure(_PUSH, "rejected"), Figure(_SETTLE, "rejected")),
    "failed": (Figure(_PUSH, "failed"),),
    "leavers": (Figure(StepKind.LEAVERS, "leavers"),),
}
#: The counts of ``iys.sync_runs.details`` read from the steps, each the sum of these figures.
DETAIL_SOURCES: dict[str, tuple[Figure, ...]] = {
    "consent_changes": (
        Figure(_PULL, "applied"),
        Figure(StepKind.NEW_USERS, "status_changes"),
        *FIGURE_SOURCES["pushed"],
    ),
    "submitted": (Figure(_PUSH, "submitted"),),
    "left_pending": (Figure(_PUSH, "pending"), Figure(_PUSH, "deferred")),
    "batches_reopened": (Figure(_PUSH, "expired_batches"), Figure(_SETTLE, "reopened")),
    "movements_held": (Figure(_PULL, "held"),),
    "quarantined": (Figure(StepKind.NEW_USERS, "quarantined"),),
    "requests": (Figure(StepKind.NEW_USERS, "requests"),),
    "links_removed": (Figure(StepKind.LEAVERS, "links_removed"),),
    "quarantine_rows_removed": (Figure(StepKind.LEAVERS, "quarantine_rows_removed"),),
    "consent_events_deleted": (Figure(StepKind.RETENTION, "consent_events_deleted"),),
    "finished_updates_deleted": (Figure(StepKind.RETENTION, "finished_updates_deleted"),),
}
#: Kinds read into the row (their figures are columns or details); any other result is kept whole.
KNOWN_STEPS = frozenset(StepKind)


class RunFigures(TypedDict):
    """The columns of ``iys.sync_runs`` a run fills from its steps' results."""

    pulled_iys: int
    pulled_hs: int
    applied: int
    ignored_stale: int
    new_users_checked: int
    pushed: int
    skipped: int
    rejected: int
    failed: int
    feed_lag_seconds: int | None
    leavers: int


class RunDetails(TypedDict):
    """``iys.sync_runs.details``."""

    consent_changes: int
    submitted: int
    left_pending: int
    batches_reopened: int
    movements_held: int
    quarantined: int
    requests: int
    failed_steps: list[str]
    overdue_rets: int
    acknowledged_rets: int
    held_for_approval: int
    links_removed: int
    quarantine_rows_removed: int
    consent_events_deleted: int
    finished_updates_deleted: int
    other_steps: dict[str, dict[str, Any]]


class SyncReport(RunFigures, RunDetails):
    """What the report task returns (its XCom): the run's figures and details together."""


def step_results(results: Mapping[str, object]) -> dict[str, StepResult]:
    """The results that are step results (mappings), by task id; a task that returned nothing (or failed) has none."""
    return {task_id: result for task_id, result in results.items() if isinstance(result, Mapping)}


def total(results: Mapping[str, StepResult], figures: Iterable[Figure]) -> int:
    """The sum of ``figures`` over the steps' results."""
    return sum(
        int(result.get(figure.name) or 0)
        for figure in figures
        for result in results.values()
        if result.get("step") == figure.step and (figure.stream is None or result.get("stream") == figure.stream)
    )


def run_figures(results: Mapping[str, StepResult]) -> RunFigures:
    """The counting columns of the run's row, and the largest feed lag of its pulls (None without one)."""
    lags = [
        int(result["feed_lag_seconds"])
        for result in results.values()
        if result.get("step") == _PULL and result.get("feed_lag_seconds") is not None
    ]
    counts = {column: total(results, figures) for column, figures in FIGURE_SOURCES.items()}
    return RunFigures(**counts, feed_lag_seconds=max(lags) if lags else None)


def run_details(results: Mapping[str, StepResult], *, failed_steps: Iterable[str]) -> RunDetails:
    """The run's details from its steps; the opt-out watch's figures start at 0, the report fills them in."""
    counts = {name: total(results, figures) for name, figures in DETAIL_SOURCES.items()}
    other_steps = {
        task_id: dict(result) for task_id, result in sorted(results.items()) if result.get("step") not in KNOWN_STEPS
    }
    return RunDetails(
        **counts,
        failed_steps=sorted(failed_steps),
        overdue_rets=0,
        acknowledged_rets=0,
        held_for_approval=0,
        other_steps=other_steps,
    )
