"""How fast the hook may send to İYS: the request rate every process on one client IP learns together.

İYS accepts 10 requests per second per client IP and answers 429 H124 to the next one its strict
window sees. The hook spaces its requests on a schedule shared by every process on the IP (one
slot every 1/rate seconds on the database clock, never two at once), but İYS counts *arrivals*,
and the network moves each request by a delay that varies. With a window of ``W`` seconds that
admits ``L`` arrivals, slots 1/r apart and a one-way delay that varies by ``J`` seconds, arrivals
*i* and *i + L* may be as close as ``L/r − J``, so the schedule never meets a 429 only while

    r < L / (W + J)          (L = 10, W = 1 s, J = 40 ms: r < 9.62)

``J`` includes our own side too: a process that gets its CPU late sends late (slots are put on
each process's clock without the database round trip, see
:class:`~iys_provider.limits.rate_control_store.DatabaseClock`, but a late wake-up stays late).
``J`` is unknown and changes, so the rate is learned from İYS's answers rather than set with a
margin guessed in advance: it starts at the configured ``rate_limit_per_second`` (the ceiling
``C``, never exceeded), a 429 lowers it a little and remembers where it came (the knee ``K``),
and traffic without 429s lets it climb: quickly back to just under the knee, where İYS's limit
was a moment ago, then slowly above it, probing whether the limit moved. It is kept per budget
key (client IP) in the shared state, so every process and worker sends at the same learned rate,
and a 429 seen by several of them lowers it once.

===========================================  =============================================  =================
event                                        learned rate ``r`` and knee ``K``              next free slot
===========================================  =============================================  =================
first request of the key                     ``r = C``, no knee                             now
a request reserves its slot, ``Δt`` (≤ 1 s)  below ``0.99·K``: ``K − (K − r)·e^(−Δt/τₖ)``,  1/min(r, C) after
after the rate last moved, ``r < C``         up to ``0.99·K``; from there (or with no       the previous one
(``K`` stands for ``min(K, C)``)             knee): ``C − (C − r)·e^(−Δt/τ)``
a request reserves its slot, ``r ≥ C``       unchanged                                      as above
429 H124 (or any 429 but an hourly quota),   ``r = max(C/8, r × 0.95)``, ``K`` = the        not before now +
no decrease in the last second               ``r`` it came at                               the pause
429 H124 within a second of the last         unchanged: the same overfull window, seen      not before now +
decrease, or for a request scheduled at a    again, or the rate a decrease already          the pause
rate above ``min(r, C)``                     answered (its slot was reserved before it)
429 H084, H086, H089 (hourly quotas)         unchanged                                      unchanged
===========================================  =============================================  =================

The pause after a 429 is İYS's ``Retry-After`` when it sends one; otherwise one slot at the
lowered rate. A strict sliding window refuses a request while it already holds ``L`` arrivals
of the last second and does not count the refused one; the oldest of those leaves within about
one spacing, and the lowered rate keeps the window from filling again, so one empty slot is all
the window needs, not a blanket second for everybody. (The request that met the 429 is retried
after Retry-After, or the usual backoff, on a new slot.)

Callers on one IP are meant to configure the same ceiling. If they do not, each sends at most at
its own; a caller's climb stops at its ceiling but leaves a higher rate (another caller's) alone,
and a 429 lowers the shared rate whoever meets it.

The numbers:

* the decrease, 5 %: a step must take the schedule below ``L/(W + J)`` from wherever it met the
  limit. From the ceiling (10) at the simulator's 20–60 ms latency (limit 9.62) 5 % lands at 9.5,
  below it after one 429; 3 % needs two.
* the quick climb, ``τₖ`` = 10 s of traffic, stops at 99 % of the knee: a 429 at the limit
  (9.62 above) lands at 9.14 and is back at 9.52 within about 16 s. Without the knee (before
  this rule) the rate climbed back over minutes and averaged about 9.4; now it spends a run just
  under the limit, about 9.5.
* the probe, ``τ`` = 1200 s of traffic above 99 % of the knee: from 9.52 to 9.62 takes about
  five minutes, so at most about one 429 per 3,000 requests once settled. Every 429 costs the
  whole IP İYS's ``Retry-After`` (1 s, 10 requests) and counts against İYS's success ratio, so
  probing faster loses more than it finds. Without a knee (a new key) the climb towards the
  ceiling has ``τ`` = 240 s: far below the ceiling it closes half the gap in ``τ·ln 2`` ≈ 170 s.
  A knee far below the ceiling (İYS refused us while something else used the IP's budget)
  is left slowly, on purpose: the budget is shared, and 429s count against the IP.
  Only time *between requests* counts, at most one second per request, so an idle key keeps
  what it learned (rate and knee) for the next run.
* one decrease per second: İYS's window is one second long, so every 429 of one overfull window
  is one event; a second decrease only comes when 429s go on a full window after the first.
* the floor, C/8: whatever İYS says, the hook keeps making progress.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from iys_provider.exceptions import HOURLY_QUOTA_H_CODES

#: Less traffic time than this teaches nothing (iys.climbed_rate agrees: PostgreSQL's float8
#: arithmetic raises on the underflow a denormal would cause).
NEGLIGIBLE_SECONDS = 1e-9


@dataclass(frozen=True)
class LimitStep:
    """What one 429 does to a key's learned rate and knee; ``decreased``: it lowered them."""

    rate: float
    knee: float | None
    decreased: bool


@dataclass(frozen=True)
class RateRule:
    """The learned-rate rule; every method is pure (the shared state applies it, in SQL or in memory)."""

    #: A 429 multiplies the learned rate by this.
    decrease_factor: float = 0.95
    #: At most one decrease per this many seconds: İYS's window.
    decrease_hold_seconds: float = 1.0
    #: Each second of traffic closes 1/τ of the gap to the ceiling (exponentially).
    climb_time_constant_seconds: float = 240.0
    #: A gap between two requests counts for at most this long: idle time teaches nothing.
    climb_max_gap_seconds: float = 1.0
    #: Never below this share of the ceiling.
    floor_share: float = 0.125
    #: After a decrease, the rate climbs quickly back to this share of the rate the 429 came at
    #: (the knee): İYS's limit was just above it a moment ago.
    knee_share: float = 0.99
    #: The quick climb towards the knee closes 1/τ of the gap per second of traffic.
    knee_time_constant_seconds: float = 10.0
    #: From the knee's share up, the climb probes for a higher limit this slowly: each 429 costs
    #: every process İYS's Retry-After (1 s of the whole budget), more than a faster probe gains.
    probe_time_constant_seconds: float = 1200.0

    def initial(self, ceiling: float) -> float:
        return ceiling

    def floor(self, ceiling: float) -> float:
        return ceiling * self.floor_share

    def effective(self, rate: float, ceiling: float) -> float:
        """The rate a caller with this ceiling sends at: the learned one, never above its own ceiling."""
        return min(rate, ceiling)

    def climbed(self, rate: float, ceiling: float, elapsed_seconds: float, knee: float | None = None) -> float:
        """The learned rate after ``elapsed_seconds`` without a 429 since it last moved.

        ``knee`` is the rate the last decrease came at (``None``: no 429 learned yet). Below its
        share the rate climbs quickly towards it; from there (or with no knee) it climbs towards
        the ceiling. The phases compose exactly, so climbing in steps is climbing at once.

        A rate at or above the caller's ceiling stays as it is: another caller on the IP may have a
        higher ceiling, and a caller never drags the shared rate down by reserving a slot.
        """
        counted = min(max(elapsed_seconds, 0.0), self.climb_max_gap_seconds)
        if rate >= ceiling or counted < NEGLIGIBLE_SECONDS:
            return rate
        time_constant = self.climb_time_constant_seconds
        if knee is not None:
            time_constant = self.probe_time_constant_seconds
            target = min(knee, ceiling)
            cap = target * self.knee_share
            if rate < cap:
                quick = self.knee_time_constant_seconds
                to_cap = quick * math.log((target - rate) / (target - cap))
                if counted <= to_cap:
                    return max(rate, target - (target - rate) * math.exp(-counted / quick))
                rate, counted = cap, counted - to_cap
        # max(): C − (C − r) rounds to a hair under r, and a climb must never lower the rate.
        return max(rate, ceiling - (ceiling - rate) * math.exp(-counted / time_constant))

    def decreases(
        self, since_last_decrease_seconds: float | None, sent_at_rate: float | None = None, rate: float | None = None
    ) -> bool:
        """Whether a 429 now lowers the rate: not when a decrease came within the same window, nor
        when the refused request was scheduled at a rate above today's ``rate`` (the effective one):
        it was reserved before a decrease, which already answered the rate it was sent at."""
        if sent_at_rate is not None and rate is not None and sent_at_rate > rate * (1 + 1e-9):
            return False
        return since_last_decrease_seconds is None or since_last_decrease_seconds >= self.decrease_hold_seconds

    def decreased(self, rate: float, ceiling: float) -> float:
        """The learned rate after a 429 that :meth:`decreases` it."""
        return max(self.floor(ceiling), rate * self.decrease_factor)

    def on_limit(
        self,
        rate: float,
        knee: float | None,
        ceiling: float,
        since_last_decrease_seconds: float | None,
        sent_at_rate: float | None = None,
    ) -> LimitStep:
        """The learned rate and knee after a 429 of the per-second limit (the verdict table's 429 rows)."""
        if not self.decreases(since_last_decrease_seconds, sent_at_rate, self.effective(rate, ceiling)):
            return LimitStep(rate, knee, decreased=False)
        return LimitStep(self.decreased(rate, ceiling), knee=rate, decreased=True)

    def after_limit(
        self,
        rate: float,
        ceiling: float,
        since_last_decrease_seconds: float | None,
        sent_at_rate: float | None = None,
    ) -> float:
        """The learned rate after a 429 of the per-second limit."""
        return self.on_limit(rate, None, ceiling, since_last_decrease_seconds, sent_at_rate).rate

    def pause_seconds(self, retry_after: float | None, rate: float, ceiling: float) -> float:
        """How long every process holds back after a 429, given the learned ``rate`` after it:
        İYS's Retry-After, else one slot."""
        if retry_after is not None:
            return retry_after
        return 1.0 / self.effective(rate, ceiling)


#: The rule the hook uses.
RATE_RULE = RateRule()


def is_per_second_limit(h_code: str | None) -> bool:
    """Whether a 429 with this H-code is İYS's per-second limit: any but the hourly quotas.

    A 429 without a readable code (a proxy in front of İYS, say) counts as the per-second limit:
    slowing down a little is the safe reading.
    """
    return h_code not in HOURLY_QUOTA_H_CODES
