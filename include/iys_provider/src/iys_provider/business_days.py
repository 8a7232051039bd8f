"""Turkish business days, for İYS's rule that a consent older than three business days is refused (H467).

A consent obtained on day D may be registered until the end of the third business day after D
(Turkey local dates; weekends and the official public holidays of the ``holidays`` package are
not business days). By law an opt-out (RET) collected outside İYS must likewise reach İYS within
three business days.

The arife question
------------------
Turkey has half-day public holidays ("arife", from 13:00) on the eves of Ramazan Bayramı, Kurban
Bayramı and Republic Day (28 October). The ``holidays`` package lists them only in its
``HALF_DAY`` category (e.g. "Eid al-Fitr (from 1pm)"); the default ``PUBLIC`` category omits them.
İYS does not document whether such an eve is a business day, so there are two readings
(:class:`HalfDayReading`):

``LENIENT``
    A half-day eve is *not* a business day. Deadlines fall on or after the STRICT ones.
    :func:`is_too_old_to_register` (the pre-send check that marks an outbox row EXPIRED) and
    :func:`newest_expired_consent_date` / :func:`oldest_registrable_consent_date` use it, so we
    never give up on a consent that İYS might still accept.

``STRICT``
    A half-day eve *is* a business day (the pre-existing behaviour). Deadlines fall on or before
    the LENIENT ones. It is the default of :func:`is_business_day`, :func:`registration_deadline`
    and :func:`legal_deadline`, which the deadline watch uses, so that alerts about unsent
    opt-outs come early rather than late.

For any consent day, ``registration_deadline(day, reading=STRICT) <=
registration_deadline(day, reading=LENIENT)``; they differ only when a half-day eve on a weekday
falls inside the window.
"""

from __future__ import annotations

import enum
from datetime import date, datetime, time, timedelta
from functools import cache

import holidays

from iys_provider.models import IYS_TIMEZONE

BUSINESS_DAYS_TO_REGISTER = 3


class HalfDayReading(enum.Enum):
    """Whether a half-day public holiday (arife afternoon) counts as a business day."""

    LENIENT = "lenient"
    """A half-day eve is not a business day: later deadlines (used before giving up on a row)."""

    STRICT = "strict"
    """A half-day eve is a business day: earlier deadlines (used for deadline alerts)."""


@cache
def _turkish_holidays(year: int, reading: HalfDayReading) -> holidays.HolidayBase:
    if reading is HalfDayReading.LENIENT:
        categories: tuple[str, ...] = (holidays.PUBLIC, holidays.HALF_DAY)
    else:
        categories = (holidays.PUBLIC,)
    return holidays.country_holidays("TR", years=year, categories=categories)


def is_business_day(day: date, *, reading: HalfDayReading = HalfDayReading.STRICT) -> bool:
    """Monday–Friday and not a public holiday (nor, under LENIENT, a half-day eve)."""
    return day.weekday() < 5 and day not in _turkish_holidays(day.year, reading)


def registration_deadline(
    consent_day: date,
    business_days: int = BUSINESS_DAYS_TO_REGISTER,
    *,
    reading: HalfDayReading = HalfDayReading.STRICT,
) -> date:
    """The last local date on which a consent obtained on ``consent_day`` can still be registered.

    That is the ``business_days``-th business day strictly after ``consent_day`` (``consent_day``
    itself when ``business_days`` is 0).
    """
    if business_days < 0:
        raise ValueError(f"business_days must be >= 0, got {business_days}")
    day, remaining = consent_day, business_days
    while remaining:
        day += timedelta(days=1)
        if is_business_day(day, reading=reading):
            remaining -= 1
    return day


def is_too_old_to_register(
    consent_date: datetime,
    now: datetime,
    *,
    reading: HalfDayReading = HalfDayReading.LENIENT,
) -> bool:
    """True when İYS would refuse ``consent_date`` with H467 at ``now``.

    Uses the LENIENT reading by default: a row is only given up on when İYS refuses it even if
    half-day eves do not count as business days.
    """
    consent_day = consent_date.astimezone(IYS_TIMEZONE).date()
    return now.astimezone(IYS_TIMEZONE).date() > registration_deadline(consent_day, reading=reading)


def _local_date(value: datetime, name: str) -> date:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    return value.astimezone(IYS_TIMEZONE).date()


def _start_of_day(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=IYS_TIMEZONE)


def legal_deadline(consent_date: datetime, *, reading: HalfDayReading = HalfDayReading.STRICT) -> datetime:
    """The aware instant (Europe/Istanbul) at which the registration window of ``consent_date`` closes.

    It is 00:00 Turkey time of the day after ``registration_deadline`` of the consent's Turkey-local
    date; an opt-out (RET) must reach İYS strictly before it. ``consent_date`` must be aware.
    """
    consent_day = _local_date(consent_date, "consent_date")
    return _start_of_day(registration_deadline(consent_day, reading=reading) + timedelta(days=1))


def _newest_expired_day(today: date, reading: HalfDayReading) -> date:
    # registration_deadline is non-decreasing in the consent day and at least 3 days later, so walk
    # back from the newest candidate; a holiday cluster costs only a few extra steps.
    day = today - timedelta(days=BUSINESS_DAYS_TO_REGISTER + 1)
    while registration_deadline(day, reading=reading) >= today:
        day -= timedelta(days=1)
    return day


def newest_expired_consent_date(now: datetime, *, reading: HalfDayReading = HalfDayReading.LENIENT) -> datetime:
    """The newest aware instant whose consent İYS refuses (H467) at ``now``.

    It is 23:59:59 Turkey time (İYS dates have second precision) of the latest Turkey-local day D
    with ``registration_deadline(D) < `` the local date of ``now``, under the LENIENT reading that
    :func:`is_too_old_to_register` uses: every consent at or before it is too old, the next second
    is not. Use it to build rows that are expired on any date, instead of ``now - timedelta(days=N)``
    which is not expired around a Bayram. ``now`` must be aware.
    """
    today = _local_date(now, "now")
    return _start_of_day(_newest_expired_day(today, reading) + timedelta(days=1)) - timedelta(seconds=1)


def oldest_registrable_consent_date(now: datetime, *, reading: HalfDayReading = HalfDayReading.LENIENT) -> datetime:
    """The oldest aware instant whose consent İYS still accepts at ``now``: 00:00 Turkey time of the
    day after :func:`newest_expired_consent_date` (one second after it). ``now`` must be aware.
    """
    today = _local_date(now, "now")
    return _start_of_day(_newest_expired_day(today, reading) + timedelta(days=1))
