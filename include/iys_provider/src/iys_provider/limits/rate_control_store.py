"""SQL of the shared request schedule and learned rate, ``iys.rate_limiter``: one row per budget key.

The rule (how the rate climbs, how a 429 lowers it, the pause) is in
:mod:`iys_provider.limits.rate_control`; :class:`~iys_provider.limits.shared_state.PostgresSharedState` calls
these functions. Every instant is read on the database clock, the one all workers share. A slot
reservation is one statement (it runs before every request); a 429 is rare, so its decision is
made in Python on the locked row, by the pure rule itself.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import psycopg

from iys_provider.limits.rate_control import RateRule

# The learned rate climbed for the time since it last moved; ``r`` is the row before the update.
# iys.climbed_rate (V016) mirrors RateRule.climbed; a NULL rate (before V011) starts at the ceiling.
_CLIMBED = """
iys.climbed_rate(r.rate, r.rate_knee, %(ceiling)s,
                 extract(epoch FROM clock_timestamp() - coalesce(r.rate_updated_at, clock_timestamp())),
                 %(max_gap)s, %(tau)s, %(knee_tau)s, %(probe_tau)s, %(knee_share)s)
"""
RESERVE_SLOT_SQL = f"""
INSERT INTO iys.rate_limiter AS r (limiter_key, next_slot, rate, rate_updated_at)
VALUES (%(key)s, clock_timestamp() + make_interval(secs => 1.0 / %(ceiling)s), %(initial)s, clock_timestamp())
ON CONFLICT (limiter_key) DO UPDATE
   SET rate = {_CLIMBED},
       rate_updated_at = clock_timestamp(),
       next_slot = greatest(r.next_slot, clock_timestamp())
                   + make_interval(secs => 1.0 / least({_CLIMBED}, %(ceiling)s))
RETURNING extract(epoch FROM r.next_slot)::float8 - 1.0 / least(r.rate, %(ceiling)s),
          extract(epoch FROM clock_timestamp())::float8,
          least(r.rate, %(ceiling)s)
"""
LOCK_RATE_SQL = """
SELECT coalesce(rate, %(ceiling)s), rate_knee, extract(epoch FROM clock_timestamp() - rate_decreased_at)::float8
  FROM iys.rate_limiter WHERE limiter_key = %(key)s FOR UPDATE
"""
RECORD_LIMIT_SQL = """
UPDATE iys.rate_limiter
   SET rate = %(rate)s,
       rate_updated_at = CASE WHEN %(decreased)s THEN clock_timestamp() ELSE rate_updated_at END,
       rate_decreased_at = CASE WHEN %(decreased)s THEN clock_timestamp() ELSE rate_decreased_at END,
       rate_decreases = rate_decreases + CASE WHEN %(decreased)s THEN 1 ELSE 0 END,
       rate_knee = %(knee)s,
       next_slot = greatest(next_slot, clock_timestamp() + make_interval(secs => %(pause)s))
 WHERE limiter_key = %(key)s
"""
READ_RATE_SQL = """
SELECT rate, rate_decreases, rate_decreased_at, rate_updated_at, rate_knee FROM iys.rate_limiter WHERE limiter_key = %s
"""


@dataclass(frozen=True)
class RequestSlot:
    """A reserved request slot: send at ``send_at`` (this process's ``time.monotonic``); the schedule
    runs at ``rate`` requests per second."""

    send_at: float
    rate: float

    def wait(self) -> float:
        """Seconds from now until the slot (0 when it has come)."""
        return max(0.0, self.send_at - time.monotonic())


class DatabaseClock:
    """Maps instants of the database clock onto this process's monotonic clock.

    A slot is an instant on the database clock. Turning it into "wait N seconds" on the database
    and sleeping N seconds once the answer is back would send late by however long the answer
    took to reach this process, which on a busy machine varies by tens of milliseconds: requests
    reserved 1/rate apart would leave bunched, and İYS's window counts arrivals. So each
    reservation also reads the database clock; the offset between the two clocks is taken from
    the recent exchange that was quickest (its error is at most half its round trip), and the
    slot is converted with it.
    """

    #: Exchanges older than this are forgotten, so a stepped system clock is followed.
    MAX_AGE_SECONDS = 30.0
    SAMPLES = 64

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=self.SAMPLES)  # (received, trip, offset)

    def observe(self, database_epoch: float, sent: float, received: float) -> None:
        """One exchange: the database read its clock (``database_epoch``) between ``sent`` and ``received``."""
        self._samples.append((received, received - sent, database_epoch - (sent + received) / 2))

    def to_local(self, database_epoch: float) -> float:
        """The instant ``database_epoch`` on this process's monotonic clock (after at least one :meth:`observe`)."""
        newest = self._samples[-1][0]
        recent = [sample for sample in self._samples if newest - sample[0] <= self.MAX_AGE_SECONDS]
        _, _, offset = min(recent, key=lambda sample: sample[1])
        return database_epoch - offset


@dataclass(frozen=True)
class LimitVerdict:
    """What one 429 did to the key's learned rate (``decreased``: this 429 lowered it; else an earlier one had)."""

    rate: float
    decreased: bool


@dataclass(frozen=True)
class LearnedRate:
    """The learned rate of one budget key as stored (``None``: nothing learned yet) and its history."""

    rate: float | None
    decreases: int = 0
    decreased_at: datetime | None = None
    updated_at: datetime | None = None
    #: The rate the last decrease came at (``None``: no 429 learned yet).
    knee: float | None = None


def reserve_slot(
    conn: psycopg.Connection, limiter_key: str, ceiling: float, rule: RateRule, clock: DatabaseClock
) -> RequestSlot:
    """Climb the learned rate for the time since it last moved, and reserve the next slot at it."""
    sent = time.monotonic()
    row = conn.execute(
        RESERVE_SLOT_SQL,
        {
            "key": limiter_key,
            "ceiling": float(ceiling),
            "initial": float(rule.initial(ceiling)),
            "max_gap": rule.climb_max_gap_seconds,
            "tau": rule.climb_time_constant_seconds,
            "knee_tau": rule.knee_time_constant_seconds,
            "probe_tau": rule.probe_time_constant_seconds,
            "knee_share": rule.knee_share,
        },
    ).fetchone()
    received = time.monotonic()
    if row is None:  # pragma: no cover - an upsert always returns its row
        return RequestSlot(received, ceiling)
    slot_epoch, database_epoch, rate = row
    clock.observe(database_epoch, sent, received)
    # Never later than the naive reading (the answer left the database before it arrived here), so
    # a wrong offset, after a clock step say, cannot hold a request back longer than that.
    return RequestSlot(min(clock.to_local(slot_epoch), received + slot_epoch - database_epoch), rate)


def record_limit(
    conn: psycopg.Connection,
    limiter_key: str,
    ceiling: float,
    retry_after: float | None,
    rule: RateRule,
    sent_at_rate: float | None = None,
) -> LimitVerdict:
    """Apply one 429 of the per-second limit: lower the rate unless a decrease came within the window, and
    hold every process back for the pause. One transaction on the locked row, so concurrent 429s are
    decided one after the other and only the first of a window lowers the rate."""
    with conn.transaction():
        row = conn.execute(LOCK_RATE_SQL, {"key": limiter_key, "ceiling": float(ceiling)}).fetchone()
        if row is None:  # a 429 before any reservation (the key was reset meanwhile): nothing to lower
            return LimitVerdict(rule.initial(ceiling), False)
        rate, knee, since_decrease = row
        step = rule.on_limit(rate, knee, ceiling, since_decrease, sent_at_rate)
        conn.execute(
            RECORD_LIMIT_SQL,
            {
                "key": limiter_key,
                "rate": step.rate,
                "decreased": step.decreased,
                "knee": step.knee,
                "pause": rule.pause_seconds(retry_after, step.rate, ceiling),
            },
        )
    return LimitVerdict(step.rate, step.decreased)


def read_learned_rate(conn: psycopg.Connection, limiter_key: str) -> LearnedRate:
    row = conn.execute(READ_RATE_SQL, (limiter_key,)).fetchone()
    return LearnedRate(*row) if row else LearnedRate(None)
