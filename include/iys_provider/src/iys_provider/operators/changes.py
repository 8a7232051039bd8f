"""Pull one İYS change stream into ``iys.consent_events`` and ``iys.consents``."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from iys_provider.change_feed_store import (
    DEFAULT_CHECK_MARGIN,
    mark_pull_complete,
    read_stream_state,
    store_change_page,
)
from iys_provider.models import ChangeMovement, ChangePage, ChangeStream, is_documented
from iys_provider.operators.base import IysBaseOperator
from iys_provider.scan_ledger_store import last_finished_scan
from iys_provider.templating import as_int

#: İYS serves 7 days minus one hour of movements; fail well before that horizon.
DEFAULT_MAX_PULL_GAP_HOURS = 6 * 24
#: How long a pull that stops early waits for the page request it still has in flight.
FETCHER_GRACE_SECONDS = 10.0


class PullResult(TypedDict):
    """One stream's pull: movements received, new to us, applied to ``iys.consents``, ignored as older than
    what we hold, held (a value İYS never documented) and replaced (a later movement under one transaction
    id); pages read; seconds between the pull's start and the newest movement (None without one)."""

    stream: str
    pulled: int
    new: int
    applied: int
    ignored_stale: int
    held: int
    replaced: int
    pages: int
    feed_lag_seconds: int | None


class IysPullChangesOperator(IysBaseOperator):
    """Pull every new movement of one change stream, page by page, resumable at any page.

    Each page's movements, the resulting consent state and the stream's cursor are stored in one
    transaction, so a crash between pages loses nothing and a rerun duplicates nothing.

    Before pulling, guards İYS's 7-day window: when the last complete pull (or, before the
    first one, the last initial-sync scan) is older than ``max_pull_gap_hours``, movements may
    already have left the feed, and the task fails with the remedy (a rescan) instead of
    silently skipping them.

    :param stream: ``IYS`` (recipients' own changes through İYS channels) or ``HS`` (changes
        written by service providers: the brand's other systems or this package). (templated)
    :param max_pull_gap_hours: see above; default 144 (6 days). (templated)
    :param page_size: movements per request (≤1000).
    :param check_margin_seconds: movements created up to this long before our last status check
        of an address are still applied in feed order (our clock and İYS's differ by seconds).

    Values İYS did not document are read, not refused: a new ``source`` is stored as text, a
    movement with a new status, channel or recipient type is kept in ``iys.consent_events`` and
    never applied. Each new value is logged once per run.
    """

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "stream", "max_pull_gap_hours")

    def __init__(
        self,
        *,
        stream: str = ChangeStream.IYS.value,
        max_pull_gap_hours: int | str = DEFAULT_MAX_PULL_GAP_HOURS,
        page_size: int = 1000,
        check_margin_seconds: float = DEFAULT_CHECK_MARGIN.total_seconds(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stream = stream
        self.max_pull_gap_hours = max_pull_gap_hours
        self.page_size = page_size
        self.check_margin = timedelta(seconds=check_margin_seconds)

    def execute(self, context: Context) -> PullResult:
        stream = ChangeStream(str(self.stream).upper())
        brand_code = self.iys_hook.brand_code
        with self.database() as conn:
            state = read_stream_state(conn, brand_code, stream)
            cursor, last_success_at, details = state if state else (None, None, {})
            self._guard_feed_window(conn, brand_code, stream, last_success_at)
            started_at = datetime.now(UTC)
            result = PullResult(
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
            pages = self.iys_hook.iter_change_pages(stream, after=cursor, limit=self.page_size)
            for page in _fetched_ahead(pages):
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
            for field in ("status", "type", "recipient_type", "source"):
                value = getattr(change, field)
                if value is None or is_documented(value) or (field, value) in seen:
                    continue
                seen.add((field, value))
                kept = "stored and applied" if field == "source" else "stored in iys.consent_events, not applied"
                self.log.warning("İYS sent a %s value it does not document: %r (%s)", field, value, kept)

    def _guard_feed_window(self, conn, brand_code: int, stream: ChangeStream, last_success_at: datetime | None) -> None:
        last_scan = last_finished_scan(conn, brand_code)
        scan_started_at = last_scan.started_at if last_scan else None
        covered_until = max((t for t in (last_success_at, scan_started_at) if t is not None), default=None)
        if covered_until is None:
            self.log.info("First pull of the %s stream: İYS serves the last 7 days of movements", stream.value)
            return
        gap = datetime.now(UTC) - covered_until
        limit = timedelta(hours=as_int(self.max_pull_gap_hours, "max_pull_gap_hours"))
        if gap > limit:
            raise AirflowFailException(
                f"The {stream.value} change stream was last pulled completely at {covered_until:%Y-%m-%d %H:%M %Z} "
                f"({gap.days} days {gap.seconds // 3600} h ago), beyond the {limit.total_seconds() / 3600:.0f} h "
                "threshold. İYS keeps only 7 days of changes, so movements may already be lost. Remedy: rescan "
                "the whole user base with `airflow dags trigger iys_initial_sync -c '{\"rescan\": true}'`; when "
                "that scan finishes, this DAG continues from İYS's current window."
            )


def _fetched_ahead(pages: Iterator[ChangePage]) -> Iterator[ChangePage]:
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
