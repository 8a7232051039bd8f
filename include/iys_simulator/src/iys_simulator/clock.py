"""Simulated clock, Turkey-local time formatting and the Turkish business-day rule."""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta, timezone

import holidays

try:
    from zoneinfo import ZoneInfo

    TURKEY_TZ = ZoneInfo("Europe/Istanbul")
except Exception:  # pragma: no cover - tzdata missing; Turkey has used a fixed UTC+3 since 2016
    TURKEY_TZ = timezone(timedelta(hours=3), "TRT")

IYS_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
BUSINESS_DAY_ALLOWANCE = 3


class SimClock:
    """Wall clock plus an adjustable offset; all hour/day-based rules read time from here."""

    def __init__(self) -> None:
        self._offset_seconds = 0.0
        self._lock = threading.Lock()

    @property
    def offset_seconds(self) -> float:
        return self._offset_seconds

    def set_offset(self, seconds: float) -> None:
        with self._lock:
            self._offset_seconds = float(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset_seconds += float(seconds)

    def epoch(self) -> float:
        """Simulated POSIX time in seconds."""
        return time.time() + self._offset_seconds

    def epoch_ms(self) -> int:
        return int(self.epoch() * 1000)

    def now(self) -> datetime:
        """Simulated current time as an aware datetime in Europe/Istanbul."""
        return datetime.fromtimestamp(self.epoch(), TURKEY_TZ)


def format_turkey_time(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, TURKEY_TZ).strftime(IYS_DATE_FORMAT)


def parse_turkey_time(text: str) -> datetime:
    """Parse ``YYYY-MM-DD HH:mm:ss`` as Turkey local time; raises ValueError when invalid."""
    return datetime.strptime(text, IYS_DATE_FORMAT).replace(tzinfo=TURKEY_TZ)


class TurkishBusinessCalendar:
    """Turkish business days: Monday–Friday that are not public holidays.

    Holidays come from ``holidays.country_holidays("TR")`` with its default (public) category, so
    half-day eves (arife afternoons) count as full business days.
    """

    def __init__(self) -> None:
        self._holidays = holidays.country_holidays("TR")

    def is_business_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self._holidays

    def business_days_after(self, start: date, end: date) -> int:
        """Count business days ``d`` with ``start < d <= end`` (0 when ``end <= start``)."""
        count = 0
        day = start + timedelta(days=1)
        while day <= end:
            if self.is_business_day(day):
                count += 1
            day += timedelta(days=1)
        return count

    def is_too_old(self, consent_day: date, today: date) -> bool:
        """The H467 rule ("üç iş günü öncesinde alınan izinler kaydedilemez").

        A consent given on calendar day D may be registered up to and including the third business
        day after D, i.e. it is too old when more than ``BUSINESS_DAY_ALLOWANCE`` business days lie in
        ``(D, today]``. The time of day is ignored. Examples: a Monday consent is accepted until
        Thursday; a Friday or Saturday consent until the following Wednesday; a holiday in between
        extends the deadline by one day.
        """
        business_days = 0
        day = consent_day + timedelta(days=1)
        while day <= today:  # stops early, so very old dates cost only a few iterations
            if self.is_business_day(day):
                business_days += 1
                if business_days > BUSINESS_DAY_ALLOWANCE:
                    return True
            day += timedelta(days=1)
        return False
