"""İYS's success-ratio rule: which answers count, the 24-hour reading, and the guard.

İYS watches every client IP: when an IP makes **20,000 or more** calls in the last 24 hours
and its success ratio is **under 70 %**, İYS sends a notice, and if the ratio is not back
above 70 % within 96 hours it removes the IP from its whitelist. Only client errors count as
failures: HTTP 400, 401, 403, 404 and 422.

Our reading of the rule (İYS publishes no formula):

* ratio = successes ÷ (successes + client errors); 429s, 5xx and transport errors are neither
  successes nor failures, so they leave the ratio unchanged;
* calls = every answer İYS gave (all classes but transport errors, which may never have
  reached İYS); the 20,000 threshold is on calls;
* "the last 24 hours" is read on hourly buckets: every bucket overlapping the last 24 hours
  counts, i.e. up to 25 hours of answers (erring on the side of more failures).

Every answer the hook receives is classified by HTTP status:

=====================  ============================  =========================  ==============
class                  statuses                      counts toward calls        in the ratio
=====================  ============================  =========================  ==============
``success``            1xx, 2xx, 3xx                 yes                        numerator and
                                                                                denominator
``client_error``       400, 401, 403, 404, 422,      yes                        denominator
                       any other 4xx but 429 [#]_
``rate_limited``       429                           yes                        no
``server_error``       5xx                           yes                        no
``transport_error``    no answer (status 0):         no                         no
                       timeout, dropped connection
=====================  ============================  =========================  ==============

.. [#] İYS documents only 400/401/403/404/422 as client errors and uses no other 4xx but
   429; an undocumented 4xx is counted as a failure, to be safe.

The guard (:func:`guard_verdict`) runs before every call that can fail avoidably (single
status, which answers 404 for an address İYS does not hold, and the writes, which answer
400/422 for a refused consent), never before the reads that cannot (multi status, the change
feed, batch results): those keep the sync going and only raise the ratio.

=======================================  ====================================================
reading (last 24 h)                      verdict
=======================================  ====================================================
judged calls < ``min_calls``             go on: too few calls for a ratio to mean anything,
                                         and far below İYS's 20,000
projected ratio ≥ ``floor``              go on
projected ratio < ``floor``              stop: the call is not made, the task fails naming
                                         the cause; the reads go on
=======================================  ====================================================

"judged calls" are successes plus client errors; the *projected* ratio is the ratio if the
call about to be made failed too, successes ÷ (successes + client errors + 1). The floor
(default 90 %, the ``success_ratio_floor`` extra) sits well above İYS's 70 %, so the guard
trips long before İYS would notice; it lifts by itself once successes accumulate or the
failures leave the 24-hour window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

#: İYS's thresholds (tag GİRİŞ of its API documentation).
IYS_NOTICE_CALLS_24H = 20_000
IYS_NOTICE_RATIO = 0.70
#: The status recorded for a request that got no answer at all.
TRANSPORT_ERROR_STATUS = 0
#: Calls that can fail avoidably (their endpoint names in the hook); the guard runs before them.
GUARDED_ENDPOINTS = frozenset(
    {"consent_status", "add_consent", "submit_batch", "push_registration", "push_unregistration"}
)


class ResponseClass(StrEnum):
    SUCCESS = "success"
    CLIENT_ERROR = "client_error"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    TRANSPORT_ERROR = "transport_error"


def classify(status: int) -> ResponseClass:
    """The class of an answer by its HTTP status (``TRANSPORT_ERROR_STATUS`` for no answer)."""
    if status == TRANSPORT_ERROR_STATUS:
        return ResponseClass.TRANSPORT_ERROR
    if status < 400:
        return ResponseClass.SUCCESS
    if status == 429:
        return ResponseClass.RATE_LIMITED
    if status < 500:
        return ResponseClass.CLIENT_ERROR
    return ResponseClass.SERVER_ERROR


@dataclass(frozen=True)
class RatioReading:
    """Answers of one API host (egress budget key) over the last 24 hours, by HTTP status."""

    by_status: Mapping[int, int] = field(default_factory=dict)

    def count(self, response_class: ResponseClass) -> int:
        return sum(n for status, n in self.by_status.items() if classify(status) is response_class)

    @property
    def successes(self) -> int:
        return self.count(ResponseClass.SUCCESS)

    @property
    def client_errors(self) -> int:
        return self.count(ResponseClass.CLIENT_ERROR)

    @property
    def calls(self) -> int:
        """Every answer İYS gave: the figure its 20,000-call threshold is on."""
        return sum(self.by_status.values()) - self.count(ResponseClass.TRANSPORT_ERROR)

    @property
    def judged(self) -> int:
        return self.successes + self.client_errors

    @property
    def ratio(self) -> float | None:
        """successes ÷ (successes + client errors); ``None`` without a judged call."""
        return self.successes / self.judged if self.judged else None

    @property
    def projected_ratio(self) -> float:
        """The ratio if the next call failed too."""
        return self.successes / (self.judged + 1)

    @property
    def iys_would_warn(self) -> bool:
        """İYS's own rule: ≥ 20,000 calls in 24 h with a ratio under 70 %."""
        return self.calls >= IYS_NOTICE_CALLS_24H and (self.ratio or 0.0) < IYS_NOTICE_RATIO

    def client_errors_text(self) -> str:
        """``"404×120, 422×31"``: the client errors by status, for messages."""
        errors = sorted((s, n) for s, n in self.by_status.items() if classify(s) is ResponseClass.CLIENT_ERROR and n)
        return ", ".join(f"{status}×{n}" for status, n in errors) or "none"

    def describe(self) -> str:
        ratio = "-" if self.ratio is None else f"{self.ratio:.1%}"
        return (
            f"{ratio} success ratio over the last 24 h ({self.successes} successes, {self.client_errors} client "
            f"errors [{self.client_errors_text()}], {self.calls} calls; 429: {self.count(ResponseClass.RATE_LIMITED)}"
            f", 5xx: {self.count(ResponseClass.SERVER_ERROR)}, no answer: {self.count(ResponseClass.TRANSPORT_ERROR)})"
        )

    def __add__(self, other: RatioReading) -> RatioReading:
        merged = dict(self.by_status)
        for status, n in other.by_status.items():
            merged[status] = merged.get(status, 0) + n
        return RatioReading(merged)


def guard_verdict(reading: RatioReading, *, floor: float, min_calls: int, endpoint: str, budget_key: str) -> str | None:
    """Why the call to ``endpoint`` must not be made, or ``None`` to go on (see the module's table)."""
    if endpoint not in GUARDED_ENDPOINTS or reading.judged < min_calls or reading.projected_ratio >= floor:
        return None
    return (
        f"Not calling İYS {endpoint}: the İYS success ratio of {budget_key} is too low — {reading.describe()}; "
        f"one more failure would leave it under the floor of {floor:.0%} (success_ratio_floor). İYS warns an IP "
        f"whose ratio is under {IYS_NOTICE_RATIO:.0%} with {IYS_NOTICE_CALLS_24H:,} calls or more in 24 h and "
        "removes it from its whitelist if it stays there 96 h, so calls that can fail (single status, writes) "
        "are stopped; reads go on. Find what causes the client errors above (e.g. single status for addresses "
        "İYS does not hold, refused writes) before re-running; the guard lifts once the ratio is back over the "
        "floor (the failures leave the 24-h window or successes accumulate)."
    )


def hour_of(epoch_seconds: float) -> datetime:
    """The start of the UTC hour bucket holding ``epoch_seconds``."""
    return datetime.fromtimestamp(epoch_seconds - epoch_seconds % 3600, UTC)


class ResponseTally:
    """Answers counted in memory, by hour bucket and status, until they are flushed.

    A flush is due every ``flush_every`` answers or ``flush_seconds`` after the last one, so
    the ledger costs one database round trip per batch of answers, not one per request.
    """

    def __init__(self, *, flush_every: int = 200, flush_seconds: float = 5.0) -> None:
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._counts: dict[tuple[datetime, int], int] = {}
        self._pending = 0
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()

    def add(self, status: int) -> bool:
        """Count one answer; returns whether a flush is due."""
        key = (hour_of(time.time()), status)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._pending += 1
            return self._pending >= self.flush_every or self.flush_due_by_time()

    @property
    def pending(self) -> int:
        """Answers counted and not flushed yet."""
        return self._pending

    def flush_due_by_time(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_seconds

    def take(self) -> dict[tuple[datetime, int], int]:
        """The counts not flushed yet, handed over (and forgotten here)."""
        with self._lock:
            counts, self._counts, self._pending = self._counts, {}, 0
            self._last_flush = time.monotonic()
        return counts

    def give_back(self, counts: Mapping[tuple[datetime, int], int]) -> None:
        """Counts whose flush failed: keep them for the next one."""
        with self._lock:
            for key, n in counts.items():
                self._counts[key] = self._counts.get(key, 0) + n
                self._pending += n

    def reading(self) -> RatioReading:
        """The answers not flushed yet, as a reading."""
        by_status: dict[int, int] = {}
        with self._lock:
            for (_, status), n in self._counts.items():
                by_status[status] = by_status.get(status, 0) + n
        return RatioReading(by_status)
