"""The legal clock of unsent opt-outs: deadlines by the strict reading, the alarm margin, overdue RETs."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from iys_provider.business_days import HalfDayReading, legal_deadline
from iys_provider.models import IYS_TIMEZONE
from iys_provider.outbox.deadline_watch import overdue_days, watch_ret_deadlines


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=IYS_TIMEZONE)


def test_counts_due_within_24h_and_the_earliest_deadline():
    # Consent on Mon 2026-11-23: deadline end of Thu 2026-11-26, i.e. 2026-11-27 00:00 Turkey time.
    now = at("2026-11-26 09:00:00")
    watch = watch_ret_deadlines({date(2026, 11, 23): 3, date(2026, 11, 25): 2}, now)
    assert watch.earliest_deadline == at("2026-11-27 00:00:00")
    assert (watch.unsent, watch.due_within_24h, watch.within_margin, watch.overdue) == (5, 3, 3, 0)
    assert watch.alarm
    message = watch.alarm_message()
    assert "3 opt-out(s)" in message and "2026-11-27 00:00" in message and "+05" not in message


def test_no_alarm_while_every_deadline_is_beyond_the_margin():
    now = at("2026-11-23 12:00:00")
    watch = watch_ret_deadlines({date(2026, 11, 23): 4}, now)
    assert (watch.unsent, watch.due_within_24h, watch.alarm) == (4, 0, False)
    narrow = watch_ret_deadlines({date(2026, 11, 23): 4}, at("2026-11-26 12:00:00"), timedelta(hours=6))
    assert (narrow.due_within_24h, narrow.within_margin, narrow.alarm) == (4, 0, False)


def test_overdue_rets_are_counted_apart_and_raise_the_alarm_until_acknowledged():
    # Consent on Mon 2026-11-02: deadline end of Thu 2026-11-05, i.e. 2026-11-06 00:00 Turkey time.
    watch = watch_ret_deadlines({date(2026, 11, 2): 7}, at("2026-11-26 12:00:00"))
    assert (watch.unsent, watch.overdue, watch.earliest_deadline) == (0, 7, None)
    assert watch.alarm and watch.oldest_overdue == at("2026-11-06 00:00:00")
    message = watch.alarm_message()
    assert "7 opt-out(s)" in message and "2026-11-06 00:00" in message and "acknowledge" in message
    assert "within" not in message  # nothing is near its deadline: only the overdue part is said


def test_a_ret_is_overdue_from_its_deadline_on_not_a_second_earlier():
    deadline = at("2026-11-06 00:00:00")
    before = watch_ret_deadlines({date(2026, 11, 2): 1}, deadline - timedelta(seconds=1))
    at_deadline = watch_ret_deadlines({date(2026, 11, 2): 1}, deadline)
    assert (before.overdue, before.unsent, before.within_margin) == (0, 1, 1)
    assert (at_deadline.overdue, at_deadline.unsent, at_deadline.within_margin) == (1, 0, 0)
    assert overdue_days([date(2026, 11, 2), date(2026, 11, 3)], deadline) == [date(2026, 11, 2)]


def test_deadlines_use_the_strict_reading_of_half_day_eves():
    """Tue 2026-05-26 is Kurban Bayramı's eve: the strict reading counts it, so the alarm comes a day earlier."""
    consent_day = date(2026, 5, 22)  # Friday before the Bayram
    strict = legal_deadline(at("2026-05-22 00:00:00"))
    lenient = legal_deadline(at("2026-05-22 00:00:00"), reading=HalfDayReading.LENIENT)
    assert strict < lenient
    watch = watch_ret_deadlines({consent_day: 1}, strict - timedelta(hours=1))
    assert watch.earliest_deadline == strict and watch.alarm
