"""The legal clock of unsent opt-outs: every RET must reach İYS within 3 Turkish business days.

A RET's deadline is :func:`~iys_provider.business_days.legal_deadline` of its consent date, in the
STRICT reading of half-day eves (the earlier of the two), so a warning never comes late. The
watch looks at every RET that has not reached İYS yet (``pending``, ``submitted`` or ``failed``)
and whose deadline has not passed: those can still be delivered, and a data engineer must hear
about them before it is too late. Its SQL is ``UNSENT_RET_DAYS_SQL`` in :mod:`~iys_provider.outbox_store`.

==================  ================================================================================
figure              meaning
==================  ================================================================================
unsent              RETs not in İYS yet whose deadline is still ahead
due_within_24h      of those, how many reach their deadline within 24 hours
overdue             RETs not in İYS whose deadline has passed (İYS refuses them now: H467)
earliest_deadline   the nearest deadline among the unsent ones
alarm               some unsent RET is within ``margin`` of its deadline: the run must fail
==================  ================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from iys_provider.business_days import legal_deadline
from iys_provider.models import IYS_TIMEZONE

DEFAULT_DEADLINE_MARGIN = timedelta(hours=24)


@dataclass(frozen=True)
class RetDeadlineWatch:
    unsent: int
    due_within_24h: int
    within_margin: int
    overdue: int
    earliest_deadline: datetime | None
    margin: timedelta

    @property
    def alarm(self) -> bool:
        return self.within_margin > 0

    def alarm_message(self) -> str:
        hours = self.margin.total_seconds() / 3600
        return (
            f"{self.within_margin} opt-out(s) (RET) not yet in İYS reach their legal deadline within {hours:g} h; "
            f"the earliest deadline is {self.earliest_deadline:%Y-%m-%d %H:%M %Z}. See iys.consent_updates rows "
            "with status 'RET' in state pending/submitted/failed and their error_code."
        )


def watch_ret_deadlines(
    unsent_by_consent_day: Mapping[date, int], now: datetime, margin: timedelta = DEFAULT_DEADLINE_MARGIN
) -> RetDeadlineWatch:
    """Summarise unsent RETs, counted per Turkey-local consent day, as of ``now``."""
    unsent = due_24h = within_margin = overdue = 0
    earliest: datetime | None = None
    for day, count in unsent_by_consent_day.items():
        deadline = legal_deadline(datetime.combine(day, time(0), IYS_TIMEZONE))
        if deadline <= now:
            overdue += count
            continue
        unsent += count
        due_24h += count if deadline - now <= timedelta(hours=24) else 0
        within_margin += count if deadline - now <= margin else 0
        earliest = deadline if earliest is None else min(earliest, deadline)
    return RetDeadlineWatch(unsent, due_24h, within_margin, overdue, earliest, margin)
