"""Turkish business days and İYS's three-business-day rule (H467), under both arife readings."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import holidays
import pytest

from iys_provider.business_days import (
    BUSINESS_DAYS_TO_REGISTER,
    HalfDayReading,
    _turkish_holidays,
    is_business_day,
    is_too_old_to_register,
    legal_deadline,
    newest_expired_consent_date,
    oldest_registrable_consent_date,
    registration_deadline,
)
from iys_provider.models import IYS_TIMEZONE

LENIENT = HalfDayReading.LENIENT
STRICT = HalfDayReading.STRICT
ONE_SECOND = timedelta(seconds=1)


def _tr(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=IYS_TIMEZONE)


def _start_of_day_after(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time.min, IYS_TIMEZONE)


def _days(first: date, last: date):
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


ALL_DAYS_2026_2027 = list(_days(date(2026, 1, 1), date(2027, 12, 31)))


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 11, 23), True),  # Monday
        (date(2026, 11, 28), False),  # Saturday
        (date(2026, 10, 29), False),  # Republic Day
        (date(2026, 1, 1), False),  # New Year
        (date(2026, 5, 19), False),  # Youth and Sports Day
        (date(2026, 10, 28), True),  # Republic Day eve (half day): a business day by default (STRICT)
    ],
)
def test_business_days(day, expected):
    assert is_business_day(day) is expected
    assert is_business_day(day, reading=STRICT) is expected


# The weekday half-day eves of 2026 and 2027 as listed by holidays' HALF_DAY category
# (2027-05-15, the Kurban eve, is a Saturday and so is no business day under either reading).
WEEKDAY_HALF_DAYS = [
    date(2026, 3, 19),  # Thu, Ramazan Bayramı eve
    date(2026, 5, 26),  # Tue, Kurban Bayramı eve
    date(2026, 10, 28),  # Wed, Republic Day eve
    date(2027, 3, 8),  # Mon, Ramazan Bayramı eve
    date(2027, 10, 28),  # Thu, Republic Day eve
]


def _readings_differ(day: date) -> bool:
    return is_business_day(day, reading=STRICT) != is_business_day(day, reading=LENIENT)


def test_the_two_readings_differ_exactly_on_weekday_half_day_eves():
    differing = [day for day in ALL_DAYS_2026_2027 if _readings_differ(day)]
    assert differing == WEEKDAY_HALF_DAYS
    for day in differing:
        assert is_business_day(day, reading=STRICT)
        assert not is_business_day(day, reading=LENIENT)


def test_holiday_data_matches_the_calendar_the_literals_were_counted_from():
    """Pins the holidays package data behind the hand-counted deadlines below."""
    half_days = {}
    for year in (2026, 2027):
        full = holidays.country_holidays("TR", years=year, categories=(holidays.PUBLIC, holidays.HALF_DAY))
        public = holidays.country_holidays("TR", years=year)
        half_days.update({day: name for day, name in full.items() if day not in public})
    assert sorted(half_days) == [
        date(2026, 3, 19),
        date(2026, 5, 26),
        date(2026, 10, 28),
        date(2027, 3, 8),
        date(2027, 5, 15),
        date(2027, 10, 28),
    ]
    assert all("(from 1pm)" in name for name in half_days.values())
    bayram_days = [
        date(2026, 3, 20), date(2026, 3, 21), date(2026, 3, 22),
        date(2026, 5, 27), date(2026, 5, 28), date(2026, 5, 29), date(2026, 5, 30),
        date(2027, 3, 9), date(2027, 3, 10), date(2027, 3, 11),
        date(2027, 5, 16), date(2027, 5, 17), date(2027, 5, 18), date(2027, 5, 19),
    ]  # fmt: skip
    for day in bayram_days:
        assert not is_business_day(day, reading=STRICT), day
        assert not is_business_day(day, reading=LENIENT), day


def test_holiday_lookups_are_cached_per_year_and_reading():
    assert _turkish_holidays(2026, LENIENT) is _turkish_holidays(2026, LENIENT)
    assert _turkish_holidays(2026, STRICT) is _turkish_holidays(2026, STRICT)
    assert _turkish_holidays(2026, LENIENT) is not _turkish_holidays(2026, STRICT)
    assert date(2026, 3, 19) in _turkish_holidays(2026, LENIENT)
    assert date(2026, 3, 19) not in _turkish_holidays(2026, STRICT)


def test_deadline_skips_weekends_and_public_holidays():
    assert registration_deadline(date(2026, 11, 23)) == date(2026, 11, 26)  # Mon -> Thu
    assert registration_deadline(date(2026, 11, 26)) == date(2026, 12, 1)  # Thu -> Tue over a weekend
    # 2026-10-28 (Wed, half day eve counts) -> 29 Republic Day is off -> 30 Fri, 2 Mon, 3 Tue
    assert registration_deadline(date(2026, 10, 28)) == date(2026, 11, 3)
    assert registration_deadline(date(2026, 10, 28), reading=STRICT) == date(2026, 11, 3)
    # The eve is the consent day itself, so it is never counted: same deadline under LENIENT.
    assert registration_deadline(date(2026, 10, 28), reading=LENIENT) == date(2026, 11, 3)


def test_deadline_rejects_negative_business_days():
    assert registration_deadline(date(2026, 3, 19), 0) == date(2026, 3, 19)
    with pytest.raises(ValueError):
        registration_deadline(date(2026, 3, 19), -1)


# Hand-counted from the calendar pinned above. "n" = the n-th business day after the consent day;
# "hol" = full public holiday, "eve" = half-day eve, "we" = weekend.
BAYRAM_DEADLINES = [
    # Wed consent. STRICT: Thu 19 eve (1), Fri 20 hol, Sat/Sun we+hol, Mon 23 (2), Tue 24 (3).
    # LENIENT: Thu 19 eve skipped, Mon 23 (1), Tue 24 (2), Wed 25 (3).
    pytest.param(date(2026, 3, 18), date(2026, 3, 24), date(2026, 3, 25), id="ramazan-2026-day-before-eve"),
    # Tue consent. STRICT: Wed 18 (1), Thu 19 eve (2), Mon 23 (3). LENIENT: Wed 18, Mon 23, Tue 24.
    pytest.param(date(2026, 3, 17), date(2026, 3, 23), date(2026, 3, 24), id="ramazan-2026-two-days-before-eve"),
    # Consent on the eve itself: the eve is never counted. Fri 20 hol, we, Mon 23, Tue 24, Wed 25.
    pytest.param(date(2026, 3, 19), date(2026, 3, 25), date(2026, 3, 25), id="ramazan-2026-on-the-eve"),
    # Friday before Kurban 2026. STRICT: Mon 25 (1), Tue 26 eve (2), Wed 27-Sat 30 hol, Sun we,
    # Mon 1 Jun (3). LENIENT: Mon 25 (1), Tue 26 eve skipped, Mon 1 Jun (2), Tue 2 Jun (3).
    pytest.param(date(2026, 5, 22), date(2026, 6, 1), date(2026, 6, 2), id="kurban-2026-friday-before"),
    # Mon consent. STRICT: Tue 26 eve (1), Mon 1 Jun (2), Tue 2 Jun (3). LENIENT: 1, 2, 3 Jun.
    pytest.param(date(2026, 5, 25), date(2026, 6, 2), date(2026, 6, 3), id="kurban-2026-day-before-eve"),
    # Friday before Ramazan 2027. STRICT: Mon 8 eve (1), Tue 9-Thu 11 hol, Fri 12 (2), Mon 15 (3).
    # LENIENT: Mon 8 eve skipped, Fri 12 (1), Mon 15 (2), Tue 16 (3).
    pytest.param(date(2027, 3, 5), date(2027, 3, 15), date(2027, 3, 16), id="ramazan-2027-friday-before"),
    # Friday before Kurban 2027: the eve is Sat 15, so both readings agree. Sat/Sun we, Mon 17-
    # Wed 19 hol (19 is also Youth and Sports Day), Thu 20 (1), Fri 21 (2), Mon 24 (3).
    pytest.param(date(2027, 5, 14), date(2027, 5, 24), date(2027, 5, 24), id="kurban-2027-friday-before"),
    # Tue before Republic Day 2026. STRICT: Wed 28 eve (1), Thu 29 hol, Fri 30 (2), Mon 2 Nov (3).
    # LENIENT: Fri 30 (1), Mon 2 Nov (2), Tue 3 Nov (3).
    pytest.param(date(2026, 10, 27), date(2026, 11, 2), date(2026, 11, 3), id="republic-day-2026"),
    # Wed before Republic Day 2027. STRICT: Thu 28 eve (1), Fri 29 hol, Mon 1 Nov (2), Tue 2 Nov (3).
    # LENIENT: Mon 1 Nov (1), Tue 2 Nov (2), Wed 3 Nov (3).
    pytest.param(date(2027, 10, 27), date(2027, 11, 2), date(2027, 11, 3), id="republic-day-2027"),
]


@pytest.mark.parametrize(("consent_day", "strict", "lenient"), BAYRAM_DEADLINES)
def test_hand_counted_deadlines_around_half_day_eves(consent_day, strict, lenient):
    assert registration_deadline(consent_day, reading=STRICT) == strict
    assert registration_deadline(consent_day, reading=LENIENT) == lenient
    assert registration_deadline(consent_day) == strict  # default reading is STRICT

    consent = _tr(consent_day.year, consent_day.month, consent_day.day, 10, 30)
    assert legal_deadline(consent) == _tr(strict.year, strict.month, strict.day) + timedelta(days=1)
    assert legal_deadline(consent, reading=STRICT) == _start_of_day_after(strict)
    assert legal_deadline(consent, reading=LENIENT) == _start_of_day_after(lenient)

    # is_too_old_to_register follows LENIENT: accepted through the whole LENIENT deadline day.
    last_second = datetime.combine(lenient, time(23, 59, 59), IYS_TIMEZONE)
    assert not is_too_old_to_register(consent, last_second)
    assert is_too_old_to_register(consent, last_second + ONE_SECOND)


def test_legal_deadline_instant_is_turkey_midnight():
    # Friday 2026-05-22 14:00 Istanbul, given in UTC.
    consent = datetime(2026, 5, 22, 11, 0, tzinfo=UTC)
    strict = legal_deadline(consent)
    assert strict == datetime(2026, 6, 2, 0, 0, tzinfo=IYS_TIMEZONE)
    assert strict.tzinfo is IYS_TIMEZONE
    assert strict == datetime(2026, 6, 1, 21, 0, tzinfo=UTC)
    assert legal_deadline(consent, reading=LENIENT) == datetime(2026, 6, 3, 0, 0, tzinfo=IYS_TIMEZONE)
    # 21:30 UTC on Thursday 2026-05-21 is already Friday in Istanbul.
    assert legal_deadline(datetime(2026, 5, 21, 21, 30, tzinfo=UTC)) == strict


def test_is_too_old_to_register_uses_the_lenient_reading():
    # Consent Thu 2026-05-21. STRICT: Fri 22 (1), Mon 25 (2), Tue 26 eve (3) -> 26 May.
    # LENIENT: Fri 22 (1), Mon 25 (2), Tue 26 eve skipped, 27-30 hol, Mon 1 Jun (3) -> 1 Jun.
    consent = _tr(2026, 5, 21, 9)
    now = _tr(2026, 6, 1, 12)
    assert registration_deadline(consent.date(), reading=STRICT) == date(2026, 5, 26)
    assert registration_deadline(consent.date(), reading=LENIENT) == date(2026, 6, 1)
    assert not is_too_old_to_register(consent, now)
    assert is_too_old_to_register(consent, now, reading=STRICT)
    assert is_too_old_to_register(consent, _tr(2026, 6, 2))


def test_age_is_judged_in_turkey_local_time():
    # 21:30 UTC on Monday is already Tuesday 00:30 in Istanbul: the deadline moves a day.
    consent = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)
    assert consent.astimezone(IYS_TIMEZONE).date() == date(2026, 11, 24)
    assert not is_too_old_to_register(consent, datetime(2026, 11, 27, 20, 0, tzinfo=IYS_TIMEZONE))
    assert is_too_old_to_register(consent, datetime(2026, 11, 28, 0, 1, tzinfo=IYS_TIMEZONE))


@pytest.mark.parametrize(
    ("now", "newest_expired"),
    [
        # now - 10 days = Fri 2026-05-22, LENIENT deadline Tue 2 Jun: still registrable.
        # Thu 21 May: Fri 22, Mon 25, (eve 26, hol 27-30) Mon 1 Jun -> deadline 1 Jun, not < 1 Jun.
        # Wed 20 May: Thu 21, Fri 22, Mon 25 -> deadline 25 May < 1 Jun: expired.
        pytest.param(_tr(2026, 6, 1, 12), _tr(2026, 5, 20, 23, 59, 59), id="2026-06-01"),
        # now - 10 days = Fri 2027-03-05, LENIENT deadline Tue 16 Mar: still registrable.
        # Thu 4 Mar: Fri 5, (eve 8, hol 9-11) Fri 12, Mon 15 -> 15 Mar, not < 15 Mar.
        # Wed 3 Mar: Thu 4, Fri 5, Fri 12 -> 12 Mar < 15 Mar: expired.
        pytest.param(_tr(2027, 3, 15, 12), _tr(2027, 3, 3, 23, 59, 59), id="2027-03-15"),
        # now - 10 days = Fri 2027-05-14, deadline Mon 24 May (both readings): still registrable.
        # Thu 13 May: Fri 14, (we+eve, hol 16-19) Thu 20, Fri 21 -> 21 May < 24 May: expired.
        pytest.param(_tr(2027, 5, 24, 12), _tr(2027, 5, 13, 23, 59, 59), id="2027-05-24"),
    ],
)
def test_ten_days_ago_is_not_expired_around_bayram(now, newest_expired):
    ten_days_ago = now - timedelta(days=10)
    assert not is_too_old_to_register(ten_days_ago, now)

    assert newest_expired_consent_date(now) == newest_expired
    assert is_too_old_to_register(newest_expired, now)
    assert not is_too_old_to_register(newest_expired + ONE_SECOND, now)
    assert oldest_registrable_consent_date(now) == newest_expired + ONE_SECOND
    assert newest_expired < ten_days_ago


def test_new_functions_require_aware_datetimes():
    naive = datetime(2026, 6, 1, 12)
    with pytest.raises(ValueError):
        legal_deadline(naive)
    with pytest.raises(ValueError):
        newest_expired_consent_date(naive)
    with pytest.raises(ValueError):
        oldest_registrable_consent_date(naive)


def _business_days_between(after: date, through: date, reading: HalfDayReading) -> int:
    return sum(is_business_day(day, reading=reading) for day in _days(after + timedelta(days=1), through))


def test_deadline_properties_for_every_consent_day_of_2026_and_2027():
    failures = []
    for day in ALL_DAYS_2026_2027:
        consent = datetime.combine(day, time(12), IYS_TIMEZONE)
        strict, lenient = legal_deadline(consent, reading=STRICT), legal_deadline(consent, reading=LENIENT)
        if not strict <= lenient:
            failures.append((day, "STRICT after LENIENT", strict, lenient))
        for reading in HalfDayReading:
            deadline = registration_deadline(day, reading=reading)
            if legal_deadline(consent, reading=reading) != _start_of_day_after(deadline):
                failures.append((day, reading, "legal_deadline is not the day after the deadline"))
            if _business_days_between(day, deadline, reading) != BUSINESS_DAYS_TO_REGISTER:
                failures.append((day, reading, "not 3 business days", deadline))
            if not is_business_day(deadline, reading=reading):
                failures.append((day, reading, "deadline is not a business day", deadline))
            if (deadline - day).days < BUSINESS_DAYS_TO_REGISTER:
                failures.append((day, reading, "fewer than 3 calendar days", deadline))
    assert failures == []


def test_newest_expired_consent_date_for_every_day_of_2026_and_2027():
    failures = []
    for day in ALL_DAYS_2026_2027:
        expected_by_day = None
        for clock in (time(0, 0, 1), time(12), time(23, 59, 59)):
            now = datetime.combine(day, clock, IYS_TIMEZONE)
            newest = newest_expired_consent_date(now.astimezone(UTC))  # any aware zone works
            if expected_by_day is None:
                expected_by_day = newest
            if newest != expected_by_day:
                failures.append((now, "depends on the time of day", newest, expected_by_day))
            if newest.tzinfo is not IYS_TIMEZONE or newest.time() != time(23, 59, 59):
                failures.append((now, "not the last second of a Turkey-local day", newest))
            if not is_too_old_to_register(newest, now):
                failures.append((now, "newest expired is not too old", newest))
            if is_too_old_to_register(newest + ONE_SECOND, now):
                failures.append((now, "one second later is still too old", newest))
            if oldest_registrable_consent_date(now) != newest + ONE_SECOND:
                failures.append((now, "oldest registrable is not one second later", newest))
            # The LENIENT window of the oldest registrable consent is still open at now.
            if not legal_deadline(newest + ONE_SECOND, reading=LENIENT) > now:
                failures.append((now, "oldest registrable's window is closed", newest))
            if not legal_deadline(newest, reading=LENIENT) <= now:
                failures.append((now, "newest expired's window is open", newest))
    assert failures == []
