"""Pull one İYS change stream into ``iys.consent_events`` and ``iys.consents``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context

from iys_provider.change_feed.pull import DEFAULT_MAX_PULL_GAP_HOURS, ChangeFeedPull, PullResult
from iys_provider.change_feed.store import DEFAULT_CHECK_MARGIN
from iys_provider.lineage import TaskLineage
from iys_provider.models import ChangeStream
from iys_provider.operators.base import IysBaseOperator, failing_without_retries
from iys_provider.templating import as_int

__all__ = ["DEFAULT_MAX_PULL_GAP_HOURS", "IysPullChangesOperator", "PullResult"]


class IysPullChangesOperator(IysBaseOperator):
    """Pull every new movement of one change stream, page by page, resumable at any page.

    Each page's movements, the resulting consent state and the stream's cursor are stored in one
    transaction, so a crash between pages loses nothing and a rerun duplicates nothing. The work is
    :class:`~iys_provider.change_feed.pull.ChangeFeedPull`.

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

    lineage = TaskLineage(reads=("sync_state",), writes=("consent_events", "consents", "sync_state"), iys_reads=True)

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
        with self.database() as conn, failing_without_retries():
            return ChangeFeedPull(
                self.iys_hook,
                conn,
                ChangeStream(str(self.stream).upper()),
                page_size=self.page_size,
                check_margin=self.check_margin,
                max_pull_gap=timedelta(hours=as_int(self.max_pull_gap_hours, "max_pull_gap_hours")),
                log=self.log,
            ).run()
