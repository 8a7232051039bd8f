"""The legal clock of unsent opt-outs: every RET must reach İYS within 3 Turkish business days.

A RET's deadline is :func:`~iys_provider.business_days.legal_deadline` of its consent date, in the
STRICT reading of half-day eves (the earlier of the two), so a warning never comes late. The
watch looks at every RET that has not reached İYS (``pending``, ``held``, ``submitted``,
``failed``, or ``rejected`` as ``EXPIRED``) and that no person acknowledged. One within the margin
of its deadline, or past it, fails every run until it is delivered or a person acknowledges it
(``acknowledged_at``: the record stays, the alarm ends). Its SQL is ``UNSENT_RET_DAYS_SQL`` in
:mod:`~iys_provider.outbox.store`.

==================  ================================================================================
figure              meaning
==================  ================================================================================
unsent              RETs not in İYS yet whose deadline is still ahead
due_within_24h      of those, how many reach their deadline within 24 hours
overdue             RETs not in İYS whose deadline has passed (İYS refuses them now: H467)
earliest_deadline   the nearest deadline among the unsent ones
oldest_overdue      the earliest deadline that has passed
alarm               some RET is within ``margin`` of its deadline or past it: the run must fail
==================  ================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    oldest_overdue: datetime | None = None

    @property
    def alarm(self) -> bool:
        return self.within_margin > 0 or self.overdue > 0

    def alarm_message(self) -> str:
        parts = []
        if self.within_margin:
            hours = self.margin.total_seconds() / 3600
            parts.append(
                f"{self.within_margin} opt-out(s) (RET) not yet in İYS reach their legal deadline within {hours:g} h "
                f"(the earliest at {self.earliest_deadline:%Y-%m-%d %H:%M %Z}): make the push deliver them (see "
                "error_code of their iys.consent_updates rows; a held row needs an approval)"
            )
        if self.overdue:
            parts.append(
                f"{self.overdue} opt-out(s) (RET) never reached İYS and are past their legal deadline (the oldest "
                f"since {self.oldest_overdue:%Y-%m-%d %H:%M %Z}); İYS refuses them now (H467). Deal with them (the "
                "citizen still said no: they stay out of iys.sendable), then acknowledge them: trigger this DAG with "
                "acknowledge_overdue_rets, or the SQL in the README (Opt-outs past their deadline)"
            )
        return "; ".join(parts)


def watch_ret_deadlines(
    unsent_by_consent_day: Mapping[date, int], now: datetime, margin: timedelta = DEFAULT_DEADLINE_MARGIN
) -> RetDeadlineWatch:
    """Summarise unsent RETs, counted per Turkey-local consent day, as of ``now``."""
    unsent = due_24h = within_margin = overdue = 0
    earliest: datetime | None = None
    oldest_overdue: datetime | None = None
    for day, count in unsent_by_consent_day.items():
        deadline = ret_deadline(day)
        if deadline <= now:
            overdue += count
            oldest_overdue = deadline if oldest_overdue is None else min(oldest_overdue, deadline)
            continue
        unsent += count
        due_24h += count if deadline - now <= timedelta(hours=24) else 0
        within_margin += count if deadline - now <= margin else 0
        earliest = deadline if earliest is None else min(earliest, deadline)
    return RetDeadlineWatch(unsent, due_24h, within_margin, overdue, earliest, margin, oldest_overdue)


def ret_deadline(consent_day: date) -> datetime:
    """The legal deadline of a RET given on this Turkey-local day (strict reading: never late)."""
    return legal_deadline(datetime.combine(consent_day, time(0), IYS_TIMEZONE))


def overdue_days(consent_days: Iterable[date], now: datetime) -> list[date]:
    """The consent days whose RETs are past their legal deadline at ``now``."""
    return sorted(day for day in consent_days if ret_deadline(day) <= now)
