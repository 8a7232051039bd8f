"""Turkish business days, for İYS's rule that a consent older than three business days is refused (H467).

A consent obtained on day D may be registered until the end of the third business day after D
(Turkey local dates; weekends and the official public holidays of the ``holidays`` package are
not business days).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cache

import holidays

from iys_provider.models import IYS_TIMEZONE

BUSINESS_DAYS_TO_REGISTER = 3


@cache
def _turkish_holidays(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("TR", years=year)


def is_business_day(day: date) -> bool:
    return day.weekday() < 5 and day not in _turkish_holidays(day.year)


def registration_deadline(consent_day: date, business_days: int = BUSINESS_DAYS_TO_REGISTER) -> date:
    """The last local date on which a consent obtained on ``consent_day`` can still be registered."""
    day, remaining = consent_day, business_days
    while remaining:
        day += timedelta(days=1)
        if is_business_day(day):
            remaining -= 1
    return day


def is_too_old_to_register(consent_date: datetime, now: datetime) -> bool:
    """True when İYS would refuse ``consent_date`` with H467 at ``now``."""
    consent_day = consent_date.astimezone(IYS_TIMEZONE).date()
    return now.astimezone(IYS_TIMEZONE).date() > registration_deadline(consent_day)
