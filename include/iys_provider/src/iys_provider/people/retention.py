"""Retention: how long the change-feed history and the settled outbox rows are kept.

Both are kept forever by default. A data engineer may set a number of days for either; the
incremental run then deletes, per brand and in bounded chunks (the SQL is in
:mod:`iys_provider.people.retention_store`), what is older:

==========================  ==================================  ==================================
what                        older than N days by                never deleted
==========================  ==================================  ==================================
``iys.consent_events``      ``received_at``: when we stored     —
                            (or last rewrote) the movement
``iys.push_inbox``,         ``received_at``: when the receiver  a pushed movement not applied
``iys.push_quarantine``     first stored it (consent events'    yet
                            days)
``iys.consent_updates``     ``processed_at``: when the row      ``pending``, ``held`` and
in a final state (sent,     was settled                         ``submitted`` rows; a RET that
skipped, rejected, failed)                                      never reached İYS (``failed``, or
                                                                ``rejected`` as ``EXPIRED``)
==========================  ==================================  ==================================

Why these clocks and limits:

* ``received_at`` is our own clock and never earlier than İYS's ``creationDate`` of the movement,
  so "received N days ago" implies "created N days ago": İYS replays at most 7 days of movements,
  and the primary key on ``transaction_id`` recognises a replayed movement only while its row is
  stored. Hence :data:`MIN_CONSENT_EVENTS_RETENTION_DAYS` (8): a replay never brings back (and
  re-applies) a movement we deleted.
* A settled row is history, and its recipient is personal data. A RET that never reached İYS,
  though, is the record of a citizen's "no" that İYS does not hold: it keeps the user out of
  ``iys.sendable``, the deadline watch counts it until a person acknowledges it, and a failed one
  may still be delivered. Deleting it would make the user sendable again, so it stays.
* At least one day for the outbox: the run's report counts the rows this run settled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from iys_provider.models import OutboxState

#: İYS replays 7 days of movements; one day more, so a replayed movement is always recognised.
MIN_CONSENT_EVENTS_RETENTION_DAYS = 8
MIN_FINISHED_UPDATES_RETENTION_DAYS = 1
#: Rows deleted per statement (and transaction): short locks, a bounded WAL burst.
DEFAULT_RETENTION_CHUNK_SIZE = 10_000
#: Settled states: ``pending``, ``held`` and ``submitted`` are still moving (a ``failed`` row that
#: may pass is requeued, but stays a row retention would delete only when it is not an opt-out).
FINAL_OUTBOX_STATES = (OutboxState.SENT, OutboxState.SKIPPED, OutboxState.REJECTED, OutboxState.FAILED)

_KEEP_FOREVER = ("", "none", "null")


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep each kind of row; None keeps it forever."""

    consent_events_days: int | None = None
    finished_updates_days: int | None = None

    def __post_init__(self) -> None:
        _check_days(
            "consent_events_retention_days",
            self.consent_events_days,
            MIN_CONSENT_EVENTS_RETENTION_DAYS,
            "İYS's change feed replays up to 7 days of movements, and a replayed movement is recognised by its "
            "transaction_id only while the event is stored",
        )
        _check_days(
            "finished_updates_retention_days",
            self.finished_updates_days,
            MIN_FINISHED_UPDATES_RETENTION_DAYS,
            "the run's report counts the outbox rows the run settled",
        )

    @classmethod
    def from_arguments(cls, consent_events_days: object, finished_updates_days: object) -> RetentionPolicy:
        """The policy from operator arguments (templated ones arrive as text: "None" or "" keep forever)."""
        return cls(
            _days("consent_events_retention_days", consent_events_days),
            _days("finished_updates_retention_days", finished_updates_days),
        )

    @property
    def keeps_everything(self) -> bool:
        return self.consent_events_days is None and self.finished_updates_days is None


def cutoff(now: datetime, days: int | None) -> datetime | None:
    """Rows stamped before this instant are deleted; None: nothing is."""
    return None if days is None else now - timedelta(days=days)


def _days(name: str, value: object) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in _KEEP_FOREVER):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number of days or None (keep forever), not {value!r}")
    try:
        days = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number of days or None (keep forever), not {value!r}") from None
    if not isinstance(value, str) and days != value:
        raise ValueError(f"{name} must be a whole number of days or None (keep forever), not {value!r}")
    return days


def _check_days(name: str, days: int | None, minimum: int, why: str) -> None:
    if days is not None and days < minimum:
        raise ValueError(f"{name} must be at least {minimum} days (or None: keep forever), not {days}: {why}")
