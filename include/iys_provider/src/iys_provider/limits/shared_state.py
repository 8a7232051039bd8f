"""State the İYS hook shares across task processes and workers.

İYS limits requests per client IP, not per process nor per account: 10 requests per second,
and a small number of token requests per hour, with a one-hour block (H084) that restarts on
every token call made during it, whichever account makes it. So the request-rate schedule, the
token-request budget and the block are kept per *budget key* (the API host, plus an egress label
when workers leave through several IPs: ``IysConnectionSettings.ip_budget_key``) and shared by
every account and every task on that IP; only the token itself is kept per İYS account. The
schedule runs at a rate learned from İYS's 429s and shared the same way (:mod:`iys_provider.limits.rate_control`).
:class:`PostgresSharedState` keeps them in the ``iys`` schema of a Postgres database all workers
reach; :class:`InProcessSharedState` keeps them in memory for single-process use (scripts,
``test_connection`` without a Postgres connection).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, replace
from datetime import UTC, datetime, timedelta

import psycopg

from iys_provider.limits.rate_control import RATE_RULE, RateRule
from iys_provider.limits.rate_control_store import (
    DatabaseClock,
    LearnedRate,
    LimitVerdict,
    RequestSlot,
    read_learned_rate,
    record_limit,
    reserve_slot,
)
from iys_provider.limits.success_ratio import RatioReading, ResponseTally, hour_of
from iys_provider.limits.success_ratio_store import add_response_counts, success_ratio_24h
from iys_provider.schema import migrate

log = logging.getLogger(__name__)

#: First key of the advisory lock serialising the token-request reservations of one budget key
#: (the second is the key's hash); the two-key form never meets the migrations' one-key lock.
TOKEN_BUDGET_LOCK_CLASS = 0x1A5B


@dataclass(frozen=True)
class StoredToken:
    access_token: str | None = None
    access_expires_at: datetime | None = None
    refresh_token: str | None = None
    refresh_expires_at: datetime | None = None
    blocked_until: datetime | None = None
    block_reason: str | None = None
    #: How long İYS said the access token lives (``expires_in``).
    access_lifetime: timedelta | None = None

    def access_margin(self, longest: timedelta, share: float) -> timedelta:
        """How long before expiry the access token is refreshed: ``longest``, or ``share`` of its
        lifetime when that is shorter, so a short-lived token is still used for most of its life."""
        if self.access_lifetime:
            return min(longest, self.access_lifetime * share)
        return longest  # a token stored before its lifetime was: refreshed once, then adaptive

    def access_valid(self, now: datetime, longest_margin: timedelta, margin_share: float = 1.0) -> bool:
        """Usable until its expiry minus :meth:`access_margin`."""
        if not (self.access_token and self.access_expires_at):
            return False
        return self.access_expires_at - self.access_margin(longest_margin, margin_share) > now

    def refresh_valid(self, now: datetime, margin: timedelta) -> bool:
        return bool(self.refresh_token and self.refresh_expires_at and self.refresh_expires_at - margin > now)

    def blocked(self, now: datetime) -> bool:
        return bool(self.blocked_until and self.blocked_until > now)


@dataclass(frozen=True)
class IpBlock:
    """İYS's H084 block of one budget key: no token call from that IP, by any account, until then."""

    blocked_until: datetime
    reason: str | None = None


@dataclass(frozen=True)
class TokenReservation:
    """The answer to "may this process make one token call now?", decided atomically per budget key.

    Granted: the call is logged (``request_id``) and counts against the hour. Refused: either the
    IP is blocked (``block``), or ``used`` calls in the window already reached the limit and the
    oldest of them leaves it at ``frees_at``.
    """

    granted: bool
    used: int
    request_id: int | None = None
    frees_at: datetime | None = None
    block: IpBlock | None = None


class TokenSlot:
    """The locked token row of one account, handed to the caller inside :meth:`token_lock`."""

    def __init__(self, token: StoredToken) -> None:
        self.token = token

    def update(self, **changes: object) -> None:
        self.token = replace(self.token, **changes)


def utcnow() -> datetime:
    return datetime.now(UTC)


class PostgresSharedState:
    """Shared token cache (per account), token budget, H084 block and rate scheduler (per IP) in Postgres.

    :param connect: returns a new psycopg 3 connection (e.g. ``PostgresHook.get_conn``).
    """

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._tallies: dict[str, ResponseTally] = {}
        self._ledger: dict[str, tuple[float, RatioReading]] = {}  # budget key -> (read at, last 24 h)
        self._clock = DatabaseClock()

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            conn.autocommit = True
            migrate(conn)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Flush the answers counted in memory, then close the connection."""
        for budget_key, tally in list(self._tallies.items()):
            if tally.pending:
                self.flush_responses(budget_key)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ success-ratio ledger

    def count_response(self, budget_key: str, status: int) -> None:
        """Count one İYS answer (status 0: none); written to ``iys.api_responses`` in batches."""
        with self._lock:
            tally = self._tallies.setdefault(budget_key, ResponseTally())
        if tally.add(status):
            self.flush_responses(budget_key)

    def success_ratio(self, budget_key: str) -> RatioReading:
        """The last 24 hours: the ledger (re-read at most every few seconds) plus the unflushed answers."""
        with self._lock:
            tally = self._tallies.setdefault(budget_key, ResponseTally())
            read_at, reading = self._ledger.get(budget_key, (None, None))
        if reading is None or time.monotonic() - read_at >= tally.flush_seconds:
            self.flush_responses(budget_key)
            with self._lock:
                read_at, reading = self._ledger.get(budget_key, (None, RatioReading()))
        return reading + tally.reading()

    def flush_responses(self, budget_key: str) -> None:
        """Write the counted answers and re-read the 24-hour totals, in one locked exchange.

        Best effort: the ledger watches İYS's rule, it must not fail a sync, so a database error
        keeps the counts for the next flush and is logged.
        """
        with self._lock:
            tally = self._tallies.get(budget_key)
            counts = tally.take() if tally else {}
            try:
                add_response_counts(self.conn, budget_key, counts)
                self._ledger[budget_key] = (time.monotonic(), success_ratio_24h(self.conn, budget_key))
            except psycopg.Error as exc:
                if tally:
                    tally.give_back(counts)
                log.warning("Could not write İYS's answers to iys.api_responses (kept for later): %s", exc)

    def reserve_request_slot(self, limiter_key: str, ceiling: float, rule: RateRule = RATE_RULE) -> RequestSlot:
        """Reserve the next request slot at the key's learned rate; the slot says when to send.

        Slots are spaced 1/rate apart on the database clock, so no two workers can send in the
        same slot whatever their own clocks say; each is converted to this process's clock
        (:class:`~iys_provider.limits.rate_control_store.DatabaseClock`). The rate is the one every process on the key
        learns together (:mod:`iys_provider.limits.rate_control`), never above ``ceiling``, the caller's
        configured ``rate_limit_per_second``.
        """
        with self._lock:
            return reserve_slot(self.conn, limiter_key, ceiling, rule, self._clock)

    def record_rate_limited(
        self,
        limiter_key: str,
        ceiling: float,
        retry_after: float | None,
        rule: RateRule = RATE_RULE,
        sent_at_rate: float | None = None,
    ) -> LimitVerdict:
        """İYS said 429 (per second) to a request sent at ``sent_at_rate``: lower the shared rate,
        once per window and not for a rate a decrease already answered, and hold every process back."""
        with self._lock:
            return record_limit(self.conn, limiter_key, ceiling, retry_after, rule, sent_at_rate)

    def learned_rate(self, limiter_key: str) -> LearnedRate:
        """The key's learned rate as stored, for progress logs, benchmarks and tests."""
        with self._lock:
            return read_learned_rate(self.conn, limiter_key)

    def token_requests_since(self, budget_key: str, window: timedelta) -> tuple[int, datetime | None]:
        """Token requests in the window, and when the oldest of them leaves it."""
        with self._lock:
            count, oldest = self.conn.execute(_TOKEN_WINDOW, (budget_key, window)).fetchone()
        return count, (oldest + window if oldest else None)

    def reserve_token_request(
        self, budget_key: str, account_key: str, grant_type: str, *, limit: int, window: timedelta
    ) -> TokenReservation:
        """Check the IP's block and budget and log the call, as one step no other process can split.

        Every account on the IP takes the same transaction-level lock first, so two processes
        refreshing different accounts cannot both count ``limit - 1`` and both call. The log row
        is committed before the HTTP call is made, so a crash during it still counts.
        """
        with self._lock, self.conn.transaction():
            conn = self.conn
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (TOKEN_BUDGET_LOCK_CLASS, budget_key))
            block = conn.execute(_ACTIVE_IP_BLOCK, (budget_key,)).fetchone()
            if block:
                return TokenReservation(granted=False, used=0, block=IpBlock(*block))
            used, oldest = conn.execute(_TOKEN_WINDOW, (budget_key, window)).fetchone()
            if used >= limit:
                return TokenReservation(granted=False, used=used, frees_at=oldest + window)
            (request_id,) = conn.execute(
                "INSERT INTO iys.token_requests (budget_key, account_key, grant_type) VALUES (%s, %s, %s) RETURNING id",
                (budget_key, account_key, grant_type),
            ).fetchone()
        return TokenReservation(granted=True, used=used, request_id=request_id)

    def ip_block(self, budget_key: str) -> IpBlock | None:
        """The IP's H084 block, while it lasts (on the database clock, the one every worker shares)."""
        with self._lock:
            row = self.conn.execute(_ACTIVE_IP_BLOCK, (budget_key,)).fetchone()
        return IpBlock(*row) if row else None

    def block_ip(self, budget_key: str, seconds: float, reason: str) -> IpBlock:
        """Record İYS's H084 for every account on the IP; a longer block already recorded stays."""
        with self._lock:
            row = self.conn.execute(
                """
                INSERT INTO iys.ip_blocks AS b (budget_key, blocked_until, block_reason)
                VALUES (%(key)s, clock_timestamp() + make_interval(secs => %(seconds)s), %(reason)s)
                ON CONFLICT (budget_key) DO UPDATE
                   SET blocked_until = greatest(b.blocked_until, excluded.blocked_until),
                       block_reason = CASE WHEN excluded.blocked_until >= b.blocked_until
                                           THEN excluded.block_reason ELSE b.block_reason END,
                       updated_at = now()
                RETURNING blocked_until, block_reason
                """,
                {"key": budget_key, "seconds": seconds, "reason": reason},
            ).fetchone()
        return IpBlock(*row)

    def record_token_outcome(self, request_id: int, outcome: str) -> None:
        with self._lock:
            self.conn.execute("UPDATE iys.token_requests SET outcome = %s WHERE id = %s", (outcome, request_id))

    def peek_token(self, account_key: str) -> StoredToken:
        with self._lock:
            row = self.conn.execute(_SELECT_TOKEN, (account_key,)).fetchone()
        return StoredToken(*row) if row else StoredToken()

    @contextmanager
    def token_lock(self, account_key: str) -> Iterator[TokenSlot]:
        """Hold the account's token row locked: one refresher at a time, everyone else waits.

        The row lock lives on a dedicated connection so the token-request log, written on the
        main connection, is committed before the HTTP call and survives a crash during it.
        """
        conn = self._connect()  # psycopg starts a transaction on the first statement
        try:
            conn.execute("INSERT INTO iys.api_tokens (account_key) VALUES (%s) ON CONFLICT DO NOTHING", (account_key,))
            row = conn.execute(_SELECT_TOKEN + " FOR UPDATE", (account_key,)).fetchone()
            slot = TokenSlot(StoredToken(*row))
            before = slot.token
            try:
                yield slot
            finally:
                # Persist whatever was learnt (a new token, an H084 block) and commit even when the
                # caller raises: losing a block would let the next task call İYS again.
                if slot.token != before:
                    conn.execute(_UPDATE_TOKEN, (*astuple(slot.token), account_key))
                conn.commit()
        finally:
            conn.close()


_TOKEN_WINDOW = """
SELECT count(*), min(requested_at)
  FROM iys.token_requests
 WHERE budget_key = %s AND requested_at > clock_timestamp() - %s
"""
_ACTIVE_IP_BLOCK = """
SELECT blocked_until, block_reason FROM iys.ip_blocks WHERE budget_key = %s AND blocked_until > clock_timestamp()
"""
_UPDATE_TOKEN = """
UPDATE iys.api_tokens
   SET access_token = %s, access_expires_at = %s, refresh_token = %s, refresh_expires_at = %s,
       blocked_until = %s, block_reason = %s, access_lifetime = %s, updated_at = now()
 WHERE account_key = %s
"""
_SELECT_TOKEN = """
SELECT access_token, access_expires_at, refresh_token, refresh_expires_at, blocked_until, block_reason,
       access_lifetime
  FROM iys.api_tokens WHERE account_key = %s
"""


@dataclass
class _MemoryRate:
    """The learned rate of one key in memory; instants on ``time.monotonic``."""

    rate: float
    updated_at: float
    decreased_at: float | None = None
    decreases: int = 0
    knee: float | None = None


class InProcessSharedState:
    """The same contract held in memory: correct only while a single process talks to İYS."""

    _tokens: dict[str, StoredToken] = {}
    _token_log: dict[str, deque[float]] = {}
    _ip_blocks: dict[str, IpBlock] = {}
    _next_slot: dict[str, float] = {}
    _rates: dict[str, _MemoryRate] = {}
    _locks: dict[str, threading.Lock] = {}
    _responses: dict[str, dict[tuple[datetime, int], int]] = {}
    _guard = threading.Lock()

    def close(self) -> None:
        """Nothing to release: the state is process-wide by design."""

    def count_response(self, budget_key: str, status: int) -> None:
        key = (hour_of(time.time()), status)
        with self._guard:
            counts = self._responses.setdefault(budget_key, {})
            counts[key] = counts.get(key, 0) + 1

    def success_ratio(self, budget_key: str) -> RatioReading:
        since = hour_of(time.time() - 24 * 3600)  # the buckets overlapping the last 24 hours
        by_status: dict[int, int] = {}
        with self._guard:
            for (hour, status), n in self._responses.get(budget_key, {}).items():
                if hour >= since:
                    by_status[status] = by_status.get(status, 0) + n
        return RatioReading(by_status)

    def reserve_request_slot(self, limiter_key: str, ceiling: float, rule: RateRule = RATE_RULE) -> RequestSlot:
        with self._guard:
            now = time.monotonic()
            learned = self._rates.get(limiter_key)
            if learned is None:
                learned = self._rates[limiter_key] = _MemoryRate(rule.initial(ceiling), now)
            else:
                learned.rate = rule.climbed(learned.rate, ceiling, now - learned.updated_at, learned.knee)
                learned.updated_at = now
            rate = rule.effective(learned.rate, ceiling)
            slot = max(self._next_slot.get(limiter_key, now), now)
            self._next_slot[limiter_key] = slot + 1.0 / rate
        return RequestSlot(slot, rate)

    def record_rate_limited(
        self,
        limiter_key: str,
        ceiling: float,
        retry_after: float | None,
        rule: RateRule = RATE_RULE,
        sent_at_rate: float | None = None,
    ) -> LimitVerdict:
        with self._guard:
            now = time.monotonic()
            learned = self._rates.setdefault(limiter_key, _MemoryRate(rule.initial(ceiling), now))
            since = None if learned.decreased_at is None else now - learned.decreased_at
            step = rule.on_limit(learned.rate, learned.knee, ceiling, since, sent_at_rate)
            if step.decreased:
                learned.rate, learned.knee = step.rate, step.knee
                learned.updated_at = learned.decreased_at = now
                learned.decreases += 1
            pause = rule.pause_seconds(retry_after, learned.rate, ceiling)
            self._next_slot[limiter_key] = max(self._next_slot.get(limiter_key, now), now + pause)
            return LimitVerdict(learned.rate, step.decreased)

    def learned_rate(self, limiter_key: str) -> LearnedRate:
        with self._guard:
            learned = self._rates.get(limiter_key)
            if learned is None:
                return LearnedRate(None)
            return LearnedRate(learned.rate, learned.decreases, knee=learned.knee)

    def token_requests_since(self, budget_key: str, window: timedelta) -> tuple[int, datetime | None]:
        with self._guard:
            return self._window(budget_key, window)

    def _window(self, budget_key: str, window: timedelta) -> tuple[int, datetime | None]:
        """Callers hold ``_guard``."""
        log = self._token_log.setdefault(budget_key, deque())
        horizon = time.time() - window.total_seconds()
        while log and log[0] <= horizon:
            log.popleft()
        oldest = datetime.fromtimestamp(log[0], UTC) + window if log else None
        return len(log), oldest

    def reserve_token_request(
        self, budget_key: str, account_key: str, grant_type: str, *, limit: int, window: timedelta
    ) -> TokenReservation:
        with self._guard:
            block = self._active_block(budget_key)
            if block:
                return TokenReservation(granted=False, used=0, block=block)
            used, frees_at = self._window(budget_key, window)
            if used >= limit:
                return TokenReservation(granted=False, used=used, frees_at=frees_at)
            self._token_log[budget_key].append(time.time())
        return TokenReservation(granted=True, used=used, request_id=0)

    def ip_block(self, budget_key: str) -> IpBlock | None:
        with self._guard:
            return self._active_block(budget_key)

    def _active_block(self, budget_key: str) -> IpBlock | None:
        """Callers hold ``_guard``."""
        block = self._ip_blocks.get(budget_key)
        return block if block and block.blocked_until > utcnow() else None

    def block_ip(self, budget_key: str, seconds: float, reason: str) -> IpBlock:
        with self._guard:
            block = IpBlock(utcnow() + timedelta(seconds=seconds), reason)
            current = self._ip_blocks.get(budget_key)
            if current is None or current.blocked_until < block.blocked_until:
                self._ip_blocks[budget_key] = block
            return self._ip_blocks[budget_key]

    def record_token_outcome(self, request_id: int, outcome: str) -> None:
        """Outcomes are only kept in the Postgres log."""

    def peek_token(self, account_key: str) -> StoredToken:
        with self._guard:
            return self._tokens.get(account_key, StoredToken())

    @contextmanager
    def token_lock(self, account_key: str) -> Iterator[TokenSlot]:
        with self._guard:
            lock = self._locks.setdefault(account_key, threading.Lock())
        with lock:
            slot = TokenSlot(self.peek_token(account_key))
            try:
                yield slot
            finally:
                with self._guard:
                    self._tokens[account_key] = slot.token
