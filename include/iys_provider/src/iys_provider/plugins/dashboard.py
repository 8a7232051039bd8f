"""The İYS page's panels: what each figure means and when it warns (pure; the SQL is in ``dashboard_store``).

Every figure is read from what the sync records in schema ``iys``; a figure nothing records yet is
``None``, which the page shows as "not recorded" (never as 0). No panel carries a phone number or
an e-mail address: quarantine is counted by reason, the outbox by state and code.

=====================  ============================================  ===============================
panel                  figure                                        level
=====================  ============================================  ===============================
consents               channel × ONAY / RET / unknown, sendable      –
initial sync           batches done of total, users, req/s, ETA      ``ok`` when finished
incremental runs       the last 30 runs; feed lag vs İYS's 7 days    ``warning`` from 6 days of
                                                                     lag, ``danger`` from 7
outbox                 counts by state and code; the earliest RET    ``danger`` when a RET is past
                       deadline (3 business days)                    its deadline or within 24 h of
                                                                     it, ``warning`` within 48 h
quarantine             counts by reason                              –
budget: tokens         token requests in the last hour / limit       ``warning`` at 80 %, ``danger``
                                                                     at the limit or under an H084
                                                                     block
budget: requests       requests and 429s since the previous clock    ``warning`` with any 429
                       hour began (the ledger counts per hour)
budget: success ratio  24 h successes ÷ (successes + client errors)  ``danger`` under İYS's 70 %,
                                                                     ``warning`` under 80 %
reconciliation         status per day of ``iys.reconciliations``     ``danger`` for mismatch or
                       (not recorded before the first day)           hash_error
push                   per channel: last push and test record,       ``warning`` with items
                       movements received and applied in the last    quarantined in 24 h or a
                       hour, their lag, unapplied, unannounced       movement unapplied for 15 min
=====================  ============================================  ===============================

Links: every panel names the DAG run (or task) that produced its figures, as a path of the
Airflow UI (:func:`run_path`, :func:`task_path`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from iys_provider.limits.success_ratio import IYS_NOTICE_RATIO, RatioReading

CHANNELS = ("MESAJ", "ARAMA", "EPOSTA")
STATUSES = ("ONAY", "RET", "unknown")
RUNS_SHOWN = 30
#: İYS serves the change feed for 7 days; a lag beyond that loses movements.
FEED_WINDOW = timedelta(days=7)
FEED_LAG_WARNING = timedelta(days=6)
TOKEN_WARNING_SHARE = 0.8
RATIO_WARNING = 0.80
INCREMENTAL_DAG_BASE = "iys_incremental_sync"
INITIAL_DAG_BASE = "iys_initial_sync"
RECONCILIATION_DAG_BASE = "iys_reconciliation"
RECONCILIATION_ALARMS = frozenset({"mismatch", "hash_error"})
#: The task of the reconciliation DAG's mapped "day" group that decides a day (agrees or records why not).
RECONCILIATION_DAY_TASK = "day.reconcile_day"
PUSH_DAG_BASE = "iys_push"
#: The receiver applies a movement in the transaction that stores it; one left unapplied waits for
#: the push DAG, which its trigger starts within a minute or two: longer means applying fails.
PUSH_UNAPPLIED_WARNING = timedelta(minutes=15)
PUSH_RECENT = timedelta(hours=1)
PUSH_QUARANTINE_WINDOW = timedelta(hours=24)


class Level(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    DANGER = "danger"
    NONE = "none"  # nothing recorded to judge


def worst_level(levels: Iterable[Level]) -> Level:
    """The most serious of several levels; ``none`` only when nothing was judged."""
    seen = set(levels)
    for level in (Level.DANGER, Level.WARNING, Level.OK):
        if level in seen:
            return level
    return Level.NONE


# ---------------------------------------------------------------------------- links


def run_path(dag_id: str, run_id: str) -> str:
    """The Airflow UI's page of one DAG run (relative to the UI's base URL)."""
    return f"dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def task_path(dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
    """One task of a run; with ``map_index``, that instance of a mapped task (the UI's ``/mapped/<index>``)."""
    path = f"{run_path(dag_id, run_id)}/tasks/{quote(task_id, safe='')}"
    return path if map_index is None or map_index < 0 else f"{path}/mapped/{map_index}"


def dag_path(dag_id: str) -> str:
    return f"dags/{quote(dag_id, safe='')}/runs"


def initial_sync_dag_id(incremental_dag_id: str | None) -> str:
    """The brand's initial-sync DAG id from its incremental one (``iys_incremental_sync[__conn]``)."""
    return _sibling_dag_id(incremental_dag_id, INITIAL_DAG_BASE)


def reconciliation_dag_id(incremental_dag_id: str | None) -> str:
    """The brand's reconciliation DAG id from its incremental one: the same ``__conn`` suffix, if any."""
    return _sibling_dag_id(incremental_dag_id, RECONCILIATION_DAG_BASE)


def push_dag_id(incremental_dag_id: str | None) -> str:
    return _sibling_dag_id(incremental_dag_id, PUSH_DAG_BASE)


def _sibling_dag_id(incremental_dag_id: str | None, base: str) -> str:
    if incremental_dag_id and incremental_dag_id.startswith(INCREMENTAL_DAG_BASE):
        return base + incremental_dag_id[len(INCREMENTAL_DAG_BASE) :]
    return base


# ---------------------------------------------------------------------------- consents


@dataclass(frozen=True)
class ConsentMatrix:
    """Consent rows per channel and status (``unknown``: İYS holds no ONAY/RET we know of)."""

    counts: Mapping[str, Mapping[str, int]]
    sendable: Mapping[str, int] | None  # users × channel of ``iys.sendable``; None: not counted yet
    sendable_counted_at: datetime | None = None

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str | None, int]],
        sendable: Mapping[str, int] | None,
        sendable_counted_at: datetime | None = None,
    ) -> ConsentMatrix:
        counts = {channel: dict.fromkeys(STATUSES, 0) for channel in CHANNELS}
        for channel, status, n in rows:
            counts.setdefault(channel, dict.fromkeys(STATUSES, 0))[status or "unknown"] += n
        full_sendable = None if sendable is None else {channel: sendable.get(channel, 0) for channel in CHANNELS}
        return cls(counts, full_sendable, sendable_counted_at)

    @property
    def total(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.counts.values())


# ---------------------------------------------------------------------------- initial sync


@dataclass(frozen=True)
class InitialSyncProgress:
    """The brand's latest scan (open, else the last finished one); ``None`` fields: not recorded."""

    scan_id: int
    started_at: datetime
    finished_at: datetime | None
    batches_done: int
    batch_count: int
    users_done: int
    total_users: int
    requests_done: int
    elapsed_seconds: float  # from the scan's start to its end, or to now while open
    learned_rate: float | None = None  # req/s the shared limiter runs at now

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def requests_per_second(self) -> float | None:
        """The pace of the finished batches so far (their requests over the scan's elapsed time)."""
        if not self.requests_done or self.elapsed_seconds <= 0:
            return None
        return self.requests_done / self.elapsed_seconds

    def estimated_finish(self, now: datetime) -> datetime | None:
        """Now plus the remaining batches at the pace so far; unknown before the first batch is done."""
        if self.finished:
            return self.finished_at
        if not self.batches_done:
            return None
        remaining = (self.batch_count - self.batches_done) * self.elapsed_seconds / self.batches_done
        return now + timedelta(seconds=remaining)

    @property
    def level(self) -> Level:
        return Level.OK if self.finished else Level.WARNING


# ---------------------------------------------------------------------------- incremental runs


def feed_lag_level(lag_seconds: float | None) -> Level:
    """İYS keeps 7 days of movements: warn from 6 days of lag, alarm from 7 (movements are lost)."""
    if lag_seconds is None:
        return Level.NONE
    lag = timedelta(seconds=lag_seconds)
    if lag >= FEED_WINDOW:
        return Level.DANGER
    return Level.WARNING if lag >= FEED_LAG_WARNING else Level.OK


@dataclass(frozen=True)
class RunRow:
    run_id: str
    dag_id: str
    finished_at: datetime
    pulled: int
    applied: int
    new_users: int
    pushed: int
    skipped: int
    rejected: int
    failed: int
    feed_lag_seconds: int | None

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "finished_at": self.finished_at.isoformat(),
            "pulled": self.pulled,
            "applied": self.applied,
            "new_users": self.new_users,
            "pushed": self.pushed,
            "skipped": self.skipped,
            "rejected": self.rejected,
            "failed": self.failed,
            "feed_lag_days": None if self.feed_lag_seconds is None else round(self.feed_lag_seconds / 86400, 3),
            "feed_lag_level": str(feed_lag_level(self.feed_lag_seconds)),
            "link": task_path(self.dag_id, self.run_id, "report"),
            "run_link": run_path(self.dag_id, self.run_id),
        }


# ---------------------------------------------------------------------------- outbox


def deadline_level(earliest_deadline: datetime | None, overdue: int, now: datetime) -> Level:
    if overdue:
        return Level.DANGER
    if earliest_deadline is None:
        return Level.OK
    left = earliest_deadline - now
    if left <= timedelta(hours=24):
        return Level.DANGER
    return Level.WARNING if left <= timedelta(hours=48) else Level.OK


# ---------------------------------------------------------------------------- budget


def token_level(used: int | None, limit: int, blocked_until: datetime | None, now: datetime) -> Level:
    if blocked_until is not None and blocked_until > now:
        return Level.DANGER
    if used is None:
        return Level.NONE
    if used >= limit:
        return Level.DANGER
    return Level.WARNING if used >= TOKEN_WARNING_SHARE * limit else Level.OK


def ratio_level(reading: RatioReading) -> Level:
    """Against İYS's 70 % line (successes ÷ (successes + client errors) over 24 h)."""
    ratio = reading.ratio
    if ratio is None:
        return Level.NONE
    if ratio < IYS_NOTICE_RATIO:
        return Level.DANGER
    return Level.WARNING if ratio < RATIO_WARNING else Level.OK


def requests_level(requests: int | None, rate_limited: int | None) -> Level:
    if requests is None:
        return Level.NONE
    return Level.WARNING if rate_limited else Level.OK


@dataclass(frozen=True)
class BudgetKey:
    """İYS's limits as kept for one key: İYS's API host, plus the egress label when one is set.

    İYS counts per client IP; the key names the İYS host the requests go to (and the label of the
    egress IP they leave by), never the client IP itself, which the sync does not know.
    """

    budget_key: str
    token_requests_last_hour: int | None
    token_limit: int
    blocked_until: datetime | None
    block_reason: str | None
    requests_window_start: datetime | None
    requests: int | None
    rate_limited: int | None
    ratio_24h: RatioReading = field(default_factory=RatioReading)
    learned_rate: float | None = None

    def as_json(self, now: datetime) -> dict[str, Any]:
        blocked = self.blocked_until is not None and self.blocked_until > now
        iys_host, _, egress_label = self.budget_key.partition("|")
        return {
            "budget_key": self.budget_key,
            "iys_host": iys_host,
            "egress_label": egress_label or None,
            "token_requests_last_hour": self.token_requests_last_hour,
            "token_limit": self.token_limit,
            "token_level": str(token_level(self.token_requests_last_hour, self.token_limit, self.blocked_until, now)),
            "blocked_until": self.blocked_until.isoformat() if blocked else None,
            "block_reason": self.block_reason if blocked else None,
            "requests_since": self.requests_window_start.isoformat() if self.requests_window_start else None,
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "requests_level": str(requests_level(self.requests, self.rate_limited)),
            "success_ratio_24h": self.ratio_24h.ratio,
            "successes_24h": self.ratio_24h.successes if self.ratio_24h.judged else None,
            "client_errors_24h": self.ratio_24h.client_errors if self.ratio_24h.judged else None,
            "ratio_line": IYS_NOTICE_RATIO,
            "ratio_level": str(ratio_level(self.ratio_24h)),
            "learned_rate": self.learned_rate,
        }


# ---------------------------------------------------------------------------- reconciliation


def reconciliation_level(statuses: Iterable[str]) -> Level:
    seen = set(statuses)
    if not seen:
        return Level.NONE
    if seen & RECONCILIATION_ALARMS:
        return Level.DANGER
    return Level.WARNING if "pending" in seen else Level.OK


# ---------------------------------------------------------------------------- push


def push_level(
    heard_from: bool, quarantined: int, oldest_unapplied_received_at: datetime | None, now: datetime
) -> Level:
    """Silence is not judged: citizens may change nothing for hours, and Push may not be set up."""
    if not heard_from:
        return Level.NONE
    if quarantined:
        return Level.WARNING
    stuck = oldest_unapplied_received_at is not None and now - oldest_unapplied_received_at >= PUSH_UNAPPLIED_WARNING
    return Level.WARNING if stuck else Level.OK


@dataclass(frozen=True)
class PushChannelHealth:
    """One channel's push receiver as the inbox tables record it.

    ``heard_from`` is false when the receiver never stored anything for the channel (no test record,
    no movement, no quarantined item): Push is not set up, or İYS has not reached the receiver. Its
    figures are then unknown, not zero. The lag is ``applied_at - creationDate``: the receiver's
    clock minus İYS's, so a clock difference of a few seconds shows in it (even below zero).
    """

    channel: str
    heard_from: bool
    last_push_at: datetime | None
    last_test_at: datetime | None
    received_last_hour: int
    applied_last_hour: int
    lag_p50_seconds: float | None  # None: nothing applied in the last hour
    lag_p95_seconds: float | None
    lag_max_seconds: float | None
    unapplied: int
    oldest_unapplied_received_at: datetime | None
    not_announced: int  # applied, not yet told to the consents asset's consumers
    quarantined_24h: int

    def as_json(self, now: datetime) -> dict[str, Any]:
        level = str(push_level(self.heard_from, self.quarantined_24h, self.oldest_unapplied_received_at, now))
        if not self.heard_from:
            return {"channel": self.channel, "heard_from": False, "level": level}
        return {
            "channel": self.channel,
            "heard_from": True,
            "last_push_at": _iso(self.last_push_at),
            "last_test_at": _iso(self.last_test_at),
            "received_last_hour": self.received_last_hour,
            "applied_last_hour": self.applied_last_hour,
            "lag_p50_seconds": self.lag_p50_seconds,
            "lag_p95_seconds": self.lag_p95_seconds,
            "lag_max_seconds": self.lag_max_seconds,
            "unapplied": self.unapplied,
            "oldest_unapplied_received_at": _iso(self.oldest_unapplied_received_at),
            "not_announced": self.not_announced,
            "quarantined_24h": self.quarantined_24h,
            "level": level,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
