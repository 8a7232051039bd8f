"""The learned request rate (rate_control.py), its in-memory store and the database-clock mapping, without I/O."""

from __future__ import annotations

import math
import os
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iys_provider.limits.rate_control import RATE_RULE, is_per_second_limit
from iys_provider.limits.rate_control_store import DatabaseClock, RequestSlot
from iys_provider.limits.shared_state import InProcessSharedState

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("IYS_HYPOTHESIS_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
RULE = RATE_RULE
C = 10.0  # İYS's limit, configured as the ceiling


def limit_with_jitter(jitter_seconds: float, limit: int = 10, window: float = 1.0) -> float:
    """The highest rate at which slots 1/r apart never put ``limit`` + 1 arrivals into one window."""
    return limit / (window + jitter_seconds)


# ----------------------------------------------------------------------------- the verdict table


def test_a_key_starts_at_its_ceiling():
    assert RULE.initial(C) == C


@pytest.mark.parametrize(("rate", "ceiling", "effective"), [(9.5, 10, 9.5), (10, 8, 8), (12, 10, 10)])
def test_a_caller_never_sends_above_its_own_ceiling(rate, ceiling, effective):
    assert RULE.effective(rate, ceiling) == effective


def test_a_429_lowers_the_rate_by_five_percent():
    assert RULE.after_limit(9.6, C, since_last_decrease_seconds=None) == pytest.approx(9.12)
    assert RULE.after_limit(9.6, C, since_last_decrease_seconds=1.0) == pytest.approx(9.12)


def test_a_429_of_the_same_window_leaves_the_rate_alone():
    assert RULE.after_limit(9.5, C, since_last_decrease_seconds=0.3) == 9.5
    assert not RULE.decreases(0.999)


def test_a_429_for_a_request_scheduled_before_the_last_decrease_leaves_the_rate_alone():
    """Slots are reserved ahead: requests already scheduled at the old rate meet 429s after the
    decrease that answered that rate, and must not lower it again (or teach a knee too low)."""
    assert not RULE.decreases(5.0, sent_at_rate=10.0, rate=9.5)
    assert RULE.after_limit(9.5, C, 5.0, sent_at_rate=10.0) == 9.5
    assert RULE.decreases(5.0, sent_at_rate=9.5, rate=9.5)  # sent at today's rate: a new overfull window
    assert RULE.decreases(5.0, sent_at_rate=9.4, rate=9.5)  # sent during the climb since
    assert RULE.after_limit(12.0, C, 5.0, sent_at_rate=10.0) == pytest.approx(11.4)  # compared at the ceiling


def test_a_decrease_sets_the_knee_where_the_429_came_and_any_other_429_keeps_it():
    lowered = RULE.on_limit(9.6, 9.7, C, since_last_decrease_seconds=None)
    assert (lowered.rate, lowered.knee, lowered.decreased) == (pytest.approx(9.12), 9.6, True)
    same_window = RULE.on_limit(9.12, 9.6, C, since_last_decrease_seconds=0.3)
    assert (same_window.rate, same_window.knee, same_window.decreased) == (9.12, 9.6, False)
    late = RULE.on_limit(9.12, 9.6, C, since_last_decrease_seconds=5.0, sent_at_rate=9.6)
    assert (late.rate, late.knee, late.decreased) == (9.12, 9.6, False)


def test_the_rate_never_falls_below_an_eighth_of_the_ceiling():
    assert RULE.decreased(1.26, C) == 1.25
    assert RULE.decreased(1.0, C) == 1.25


def test_one_decrease_from_the_ceiling_clears_the_simulators_jitter():
    """The cold start: 20–60 ms latency (40 ms spread) allows 9.62/s; one 429 from 10 lands below it."""
    assert RULE.decreased(C, C) < limit_with_jitter(0.040) < C


def test_the_climb_closes_one_time_constant_of_the_gap_per_240_seconds_of_traffic():
    rate = 9.0
    for _ in range(240):  # one request a second
        rate = RULE.climbed(rate, C, 1.0)
    assert C - rate == pytest.approx((C - 9.0) / math.e)


def test_idle_time_counts_as_one_second():
    assert RULE.climbed(9.0, C, 3600.0) == RULE.climbed(9.0, C, 1.0) < C
    assert RULE.climbed(9.0, C, -5.0) == 9.0  # a clock that went back teaches nothing either


def test_a_rate_at_or_above_the_callers_ceiling_is_left_to_the_callers_with_higher_ceilings():
    assert RULE.climbed(10.0, 8.0, 1.0) == 10.0
    assert RULE.climbed(8.0, 8.0, 1.0) == 8.0


def test_after_settling_a_decrease_takes_minutes_of_traffic_to_reach_the_limit_again():
    """At most about one 429 per 200 s of traffic once settled: ~1 in 2,000 requests at ~9.4/s."""
    limit = limit_with_jitter(0.040)
    rate, seconds = RULE.decreased(limit, C), 0.0
    while rate < limit:
        rate = RULE.climbed(rate, C, 0.1)  # ten requests a second
        seconds += 0.1
    assert 150 <= seconds <= 250


def test_after_a_429_the_rate_is_back_just_under_the_knee_within_seconds():
    """Where İYS's limit was a moment ago: a 429 at the limit costs seconds of slower traffic, not minutes."""
    knee = limit_with_jitter(0.040)
    rate, seconds = RULE.decreased(knee, C), 0.0
    while rate < RULE.knee_share * knee - 1e-9:
        rate = RULE.climbed(rate, C, 0.1, knee)  # ten requests a second
        seconds += 0.1
    assert 10 <= seconds <= 20
    assert rate == pytest.approx(RULE.knee_share * knee)


def test_above_the_knees_share_the_rate_probes_for_minutes_before_meeting_the_limit_again():
    """At most about one 429 per 3,000 requests once settled: each costs the IP İYS's Retry-After."""
    knee = limit_with_jitter(0.040)
    rate, seconds = RULE.knee_share * knee, 0.0
    while rate < knee:
        rate = RULE.climbed(rate, C, 0.1, knee)
        seconds += 0.1
    assert 240 <= seconds <= 400


def test_the_quick_climb_aims_at_the_callers_ceiling_when_the_knee_is_above_it():
    assert RULE.climbed(7.0, 8.0, 1.0, knee=10.0) == pytest.approx(8.0 - 1.0 * math.exp(-1 / 10))
    assert RULE.climbed(7.0, 8.0, 1.0, knee=10.0) < 8.0 * RULE.knee_share


def test_far_below_the_ceiling_the_rate_climbs_back_within_minutes():
    rate = RULE.floor(C)
    for _ in range(600):
        rate = RULE.climbed(rate, C, 1.0)
    assert rate > 0.9 * C


@pytest.mark.parametrize(("retry_after", "pause"), [(1.0, 1.0), (0.2, 0.2), (30.0, 30.0), (None, 1 / 9.5)])
def test_the_pause_is_retry_after_else_one_slot(retry_after, pause):
    assert RULE.pause_seconds(retry_after, 9.5, C) == pytest.approx(pause)


@pytest.mark.parametrize(
    ("code", "per_second"),
    [("H124", True), ("H083", True), (None, True), ("H084", False), ("H086", False), ("H089", False)],
)
def test_hourly_quotas_are_not_the_per_second_limit(code, per_second):
    assert is_per_second_limit(code) is per_second


# ----------------------------------------------------------------------------- properties

events = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.floats(min_value=-1.0, max_value=7200.0)),
        st.tuples(st.just("429"), st.one_of(st.none(), st.floats(min_value=0.0, max_value=10.0))),
    ),
    max_size=60,
)


@PROPERTY_SETTINGS
@given(ceiling=st.floats(min_value=0.1, max_value=1000.0), history=events)
def test_the_rate_stays_between_the_floor_and_the_ceiling(ceiling, history):
    rate, knee = RULE.initial(ceiling), None
    for kind, value in history:
        before = rate
        if kind == "request":
            rate = RULE.climbed(rate, ceiling, value, knee)
            assert before <= rate
        else:
            if RULE.decreases(value):
                knee = rate
            rate = RULE.after_limit(rate, ceiling, value)
            assert rate <= before
            pause = RULE.pause_seconds(None, rate, ceiling)
            assert 0 < pause <= 1 / RULE.floor(ceiling) + 1e-9
        assert RULE.floor(ceiling) - 1e-9 <= rate <= ceiling + 1e-9


@PROPERTY_SETTINGS
@given(
    rate=st.floats(min_value=0.0, max_value=20.0),
    first=st.floats(min_value=0.0, max_value=0.5),
    second=st.floats(min_value=0.0, max_value=0.5),
)
def test_climbing_in_steps_is_climbing_at_once(rate, first, second):
    """So the climb depends on the traffic time, not on how many processes reserved slots in it."""
    stepwise = RULE.climbed(RULE.climbed(rate, C, first), C, second)
    assert stepwise == pytest.approx(RULE.climbed(rate, C, first + second), abs=1e-9)


@PROPERTY_SETTINGS
@given(
    rate=st.floats(min_value=0.5, max_value=20.0),
    knee=st.floats(min_value=1.25, max_value=20.0),
    first=st.floats(min_value=0.0, max_value=0.5),
    second=st.floats(min_value=0.0, max_value=0.5),
)
def test_climbing_in_steps_is_climbing_at_once_with_a_knee(rate, knee, first, second):
    """Also across the switch from the quick climb to the probe."""
    stepwise = RULE.climbed(RULE.climbed(rate, C, first, knee), C, second, knee)
    assert stepwise == pytest.approx(RULE.climbed(rate, C, first + second, knee), abs=1e-9)


@PROPERTY_SETTINGS
@given(
    ceiling=st.floats(min_value=0.1, max_value=1000.0),
    share=st.floats(min_value=RULE.floor_share / RULE.decrease_factor, max_value=1.0),
)
def test_a_second_of_traffic_never_undoes_a_decrease(ceiling, share):
    """Else a 429 every second would not bring the rate down: wherever a decrease does not stop at
    the floor, it is larger than a second's climb."""
    rate = ceiling * share
    assert RULE.climbed(RULE.decreased(rate, ceiling), ceiling, 1.0) < rate
    assert RULE.climbed(RULE.decreased(rate, ceiling), ceiling, 1.0, knee=rate) < rate


# ----------------------------------------------------------------------------- in-memory store


def fresh_key() -> str:
    return f"unit-{uuid.uuid4().hex}"


def test_in_process_state_lowers_once_per_window_and_pauses_every_caller():
    state, key = InProcessSharedState(), fresh_key()
    first = state.reserve_request_slot(key, C)
    assert first.rate == C and first.wait() == 0.0
    verdicts = [state.record_rate_limited(key, C, retry_after=0.5) for _ in range(3)]
    assert [v.decreased for v in verdicts] == [True, False, False]
    assert {v.rate for v in verdicts} == {C * RULE.decrease_factor}
    slot = state.reserve_request_slot(key, C)
    assert slot.wait() > 0.4  # Retry-After: 0.5 s for everybody
    assert slot.rate == pytest.approx(C * RULE.decrease_factor, rel=1e-3)
    learned = state.learned_rate(key)
    assert learned.decreases == 1 and learned.rate == pytest.approx(slot.rate)
    assert learned.knee == C  # where the 429 came: the quick climb aims just under it


def test_in_process_state_ignores_429s_of_requests_scheduled_at_a_rate_already_lowered():
    state, key = InProcessSharedState(), fresh_key()
    state.reserve_request_slot(key, C)
    assert state.record_rate_limited(key, C, retry_after=0.0).decreased
    state._rates[key].decreased_at -= 5  # a window later, as if waited for
    late = state.record_rate_limited(key, C, retry_after=0.0, sent_at_rate=C)
    assert not late.decreased and late.rate == pytest.approx(C * RULE.decrease_factor)
    assert state.learned_rate(key).knee == C


def test_in_process_state_without_retry_after_skips_one_slot():
    state, key = InProcessSharedState(), fresh_key()
    state.reserve_request_slot(key, C)
    before = time.monotonic()
    state.record_rate_limited(key, C, retry_after=None)
    slot = state.reserve_request_slot(key, C)
    assert slot.send_at - before >= 1 / (C * RULE.decrease_factor) - 1e-6
    assert slot.send_at - before < 0.5  # not a blanket second


def test_in_process_state_spaces_slots_at_the_learned_rate():
    state, key = InProcessSharedState(), fresh_key()
    slots = [state.reserve_request_slot(key, 4.0).send_at for _ in range(5)]
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert all(gap >= 0.25 - 1e-6 for gap in gaps)


# ----------------------------------------------------------------------------- the database clock


def test_the_database_clock_trusts_the_quickest_exchange():
    clock = DatabaseClock()
    offset = 1_700_000_000.0
    # The database read its clock at local time 10.0 (true offset) in each exchange; slow answers
    # (an answer that waited for a busy process) say little about when.
    clock.observe(10.0 + offset, sent=9.9, received=10.3)
    clock.observe(20.0 + offset, sent=19.999, received=20.001)
    clock.observe(30.0 + offset, sent=29.95, received=30.2)
    assert clock.to_local(offset + 31.0) == pytest.approx(31.0, abs=0.002)


def test_the_database_clock_forgets_old_exchanges():
    clock = DatabaseClock()
    clock.observe(1000.0 + 5.0, sent=4.9999, received=5.0001)  # quick, but a minute old at the end
    clock.observe(2000.0 + 65.0, sent=64.99, received=65.01)  # the system clock stepped meanwhile
    assert clock.to_local(2000.0 + 66.0) == pytest.approx(66.0, abs=0.02)


def test_a_slot_tells_how_long_to_wait():
    assert RequestSlot(time.monotonic() - 1.0, C).wait() == 0.0
    assert 0.5 < RequestSlot(time.monotonic() + 1.0, C).wait() <= 1.0
