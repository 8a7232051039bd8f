"""Turkish business days and İYS's three-business-day rule (H467)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from iys_provider.business_days import is_business_day, is_too_old_to_register, registration_deadline
from iys_provider.models import IYS_TIMEZONE


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 11, 23), True),  # Monday
        (date(2026, 11, 28), False),  # Saturday
        (date(2026, 10, 29), False),  # Republic Day
        (date(2026, 1, 1), False),  # New Year
        (date(2026, 5, 19), False),  # Youth and Sports Day
    ],
)
def test_business_days(day, expected):
    assert is_business_day(day) is expected


def test_deadline_skips_weekends_and_public_holidays():
    assert registration_deadline(date(2026, 11, 23)) == date(2026, 11, 26)  # Mon -> Thu
    assert registration_deadline(date(2026, 11, 26)) == date(2026, 12, 1)  # Thu -> Tue over a weekend
    # 2026-10-28 (Wed, half day eve counts) -> 29 Republic Day is off -> 30 Fri, 2 Mon, 3 Tue
    assert registration_deadline(date(2026, 10, 28)) == date(2026, 11, 3)


def test_age_is_judged_in_turkey_local_time():
    # 21:30 UTC on Monday is already Tuesday 00:30 in Istanbul: the deadline moves a day.
    consent = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)
    assert consent.astimezone(IYS_TIMEZONE).date() == date(2026, 11, 24)
    assert not is_too_old_to_register(consent, datetime(2026, 11, 27, 20, 0, tzinfo=IYS_TIMEZONE))
    assert is_too_old_to_register(consent, datetime(2026, 11, 28, 0, 1, tzinfo=IYS_TIMEZONE))
