"""Pulling one İYS change stream into ``iys.consent_events`` and ``iys.consents``, page by page.

The SQL is in :mod:`iys_provider.change_feed.store`; this module runs one pull with it.
:class:`~iys_provider.operators.changes.IysPullChangesOperator` is its Airflow face.

* each page's movements, the resulting consent state and the stream's cursor are stored in one
  transaction, so a crash between pages loses nothing and a rerun duplicates nothing;
* the next page is fetched in a thread while this one is stored (:func:`fetched_ahead`);
* before pulling, İYS's 7-day window is guarded: when the last complete pull (or, before the
  first one, the last initial-sync scan) is older than ``max_pull_gap``, movements may already
  have left the feed and the pull refuses with the remedy (a rescan).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import psycopg

from iys_provider.change_feed.store import (
    DEFAULT_CHECK_MARGIN,
    mark_pull_complete,
    read_stream_state,
    store_change_page,
)
from iys_provider.exceptions import IysStepFailure
from iys_provider.hooks.iys import IysHook
from iys_provider.initial_sync.scan_ledger_store import last_finished_scan
from iys_provider.models import ChangeMovement, ChangePage, ChangeStream, StepKind, is_documented

#: İYS serves 7 days minus one hour of movements; fail well before that horizon.
DEFAULT_MAX_PULL_GAP_HOURS = 6 * 24
#: How long a pull that stops early waits for the page request it still has in flight.
FETCHER_GRACE_SECONDS = 10.0


class PullResult(TypedDict):
    """One stream's pull: movements received, new to us, applied to ``iys.consents``, ignored as older than
    what we hold, held (a value İYS never documented) and replaced (a later movement under one transaction
    id); pages read; seconds between the pull's start and the newest movement (None without one)."""

    step: str
    stream: str
    pulled: int
    new: int
    applied: int
    ignored_stale: int
    held: int
    replaced: int
    pages: int
    feed_lag_seconds: int | None


class FeedGapError(IysStepFailure):
    """The stream was last pulled completely too long ago: movements may have left İYS's 7-day feed."""


@dataclass
class ChangeFeedPull:
    """One pull of ``stream`` over ``conn`` (autocommit) through ``hook``; ``clock`` gives the current time (aware)."""

    hook: IysHook
    conn: psycopg.Connection
    stream: ChangeStream
    page_size: int = 1000
    check_margin: timedelta = DEFAULT_CHECK_MARGIN
    max_pull_gap: timedelta = timedelta(hours=DEFAULT_MAX_PULL_GAP_HOURS)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))

    def run(self) -> PullResult:
        conn, stream = self.conn, self.stream
        brand_code = self.hook.brand_code
        state = read_stream_state(conn, brand_code, stream)
        cursor, last_success_at, details = state if state else (None, None, {})
        self._guard_feed_window(brand_code, last_success_at)
        started_at = self.clock()
        result = PullResult(
            step=StepKind.CHANGE_FEED_PULL.value,
            stream=stream.value,
            pulled=0,
            new=0,
            applied=0,
            ignored_stale=0,
            held=0,
            replaced=0,
            pages=0,
            feed_lag_seconds=None,
        )
        newest = (details or {}).get("newest_creation_date")
        undocumented: set[tuple[str, str]] = set()
        pages = self.hook.iter_change_pages(stream, after=cursor, limit=self.page_size)
        for page in fetched_ahead(pages):
            self._log_undocumented_values(page.changes, undocumented)
            outcome = store_change_page(
                conn, brand_code=brand_code, stream=stream, page=page, check_margin=self.check_margin
            )
            result["pages"] += 1
            result["pulled"] += outcome.received
            result["new"] += outcome.new
            result["applied"] += outcome.applied
            result["ignored_stale"] += outcome.ignored_stale
            result["held"] += outcome.held
            result["replaced"] += outcome.replaced
            newest = max(c.creation_date for c in page.changes).isoformat()
            self.log.info(
                "%s stream page %d: %d movements (%d new, %d applied, %d stale or older than a check)",
                stream.value,
                result["pages"],
                outcome.received,
                outcome.new,
                outcome.applied,
                outcome.ignored_stale,
            )
        mark_pull_complete(conn, brand_code=brand_code, stream=stream, at=started_at)
        if newest:
            result["feed_lag_seconds"] = int((started_at - datetime.fromisoformat(str(newest))).total_seconds())
        self.log.info(
            "%s stream: %d movements pulled, %d new, %d applied to iys.consents, %d ignored as stale; "
            "newest movement %s (İYS withholds the last hour)",
            stream.value,
            result["pulled"],
            result["new"],
            result["applied"],
            result["ignored_stale"],
            newest or "-",
        )
        return result

    def _log_undocumented_values(self, changes: list[ChangeMovement], seen: set[tuple[str, str]]) -> None:
        for change in changes:
            for name in ("status", "type", "recipient_type", "source"):
                value = getattr(change, name)
                if value is None or is_documented(value) or (name, value) in seen:
                    continue
                seen.add((name, value))
                kept = "stored and applied" if name == "source" else "stored in iys.consent_events, not applied"
                self.log.warning("İYS sent a %s value it does not document: %r (%s)", name, value, kept)

    def _guard_feed_window(self, brand_code: int, last_success_at: datetime | None) -> None:
        last_scan = last_finished_scan(self.conn, brand_code)
        scan_started_at = last_scan.started_at if last_scan else None
        covered_until = max((t for t in (last_success_at, scan_started_at) if t is not None), default=None)
        if covered_until is None:
            self.log.info("First pull of the %s stream: İYS serves the last 7 days of movements", self.stream.value)
            return
        gap = self.clock() - covered_until
        limit = self.max_pull_gap
        if gap > limit:
            raise FeedGapError(
                f"The {self.stream.value} change stream was last pulled completely at "
                f"{covered_until:%Y-%m-%d %H:%M %Z} ({gap.days} days {gap.seconds // 3600} h ago), beyond the "
                f"{limit.total_seconds() / 3600:.0f} h threshold. İYS keeps only 7 days of changes, so movements may "
                "already be lost. Remedy: rescan the whole user base with `airflow dags trigger iys_initial_sync -c "
                "'{\"rescan\": true}'`; when that scan finishes, this DAG continues from İYS's current window."
            )


def fetched_ahead(pages: Iterator[ChangePage]) -> Iterator[ChangePage]:
    """``pages``, the next one requested (and parsed) in a thread while the caller stores this one.

    One page after the other, a pull waited for İYS's answer, then for the database, never for
    both at once: half of İYS's rate. Only one page is fetched ahead and nothing is stored out of
    order, so a failure still leaves the cursor after the last page stored: a fetch error is
    raised once the pages before it are stored, and when storing fails the page fetched ahead is
    dropped (the rerun asks for it again).

    The first page is fetched in the caller's thread: the hook looks up its connections and token
    there, where the task's Airflow context is.
    """
    first = next(pages, None)
    if first is None:
        return
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def fetch() -> None:
        try:
            while not stop.is_set():
                try:
                    page = next(pages)
                except StopIteration:
                    handoff.put(("end", None))
                    return
                handoff.put(("page", page))
        except BaseException as exc:  # handed to the caller, raised in its thread
            handoff.put(("error", exc))
        finally:
            pages.close()

    fetcher = threading.Thread(target=fetch, name="iys-change-feed-fetch", daemon=True)
    fetcher.start()
    try:
        yield first
        while True:
            kind, value = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        # Frees a fetcher blocked on a full queue; it then sees ``stop`` before asking İYS again.
        try:
            handoff.get_nowait()
        except queue.Empty:
            pass
        # At the end of the feed the fetcher is done already. Stopped early (a failed store, the
        # task being stopped) it may be inside the hook's retries: it gets a moment to finish, but
        # never holds up the task (a daemon thread; its page is dropped).
        fetcher.join(timeout=FETCHER_GRACE_SECONDS)
