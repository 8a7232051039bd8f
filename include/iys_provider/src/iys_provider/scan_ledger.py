"""The initial sync's ledger: one scan of every user, planned once, processed batch by batch.

A scan goes through plan → queue → batches → finish (tables ``iys.initial_sync_scans``,
``iys.initial_sync_queue``, ``iys.initial_sync_batches``; the SQL is in
:mod:`iys_provider.scan_ledger_store`):

1. **plan**: a scan row is opened and every user of the source query is snapshotted into the
   queue, numbered into batches of ``batch_size`` in ``user_id`` order ("C" collation). One batch
   row per number records its first and last user id (the label of its mapped task).
2. **batches**: a batch reads its users from the queue, has them checked with İYS, and is marked
   finished in the transaction that writes their consents; its queue rows are deleted with it,
   so no copy of personal data outlives the batch.
3. **finish**: once no batch is pending, the scan is finished and ``iys.sync_state`` (stream
   ``initial_sync``) records it.

A run that dies halfway plans nothing new: the next one resumes the open scan's pending
batches. A rescan abandons the open scan (its queue rows go) and plans a new one.

=====  ===========  ===============  ==========================================================
row    finished_at  scan abandoned   state
=====  ===========  ===============  ==========================================================
scan   NULL         false            **open**: batches pending; at most one per brand
scan   set          false            **finished**: every user processed. The last one tells
                                     whether the initial sync is done; the feed guard counts
                                     from its start
scan   set          true             **abandoned** by a rescan (or migration V004): never counts
batch  NULL         false            **pending**: its users wait in the queue
batch  set          false            **finished**: recorded with its users' consents, queue rows
                                     gone
batch  any          true             **abandoned** with its scan: nothing to do, the rescan
                                     covers its users
=====  ===========  ===============  ==========================================================

What a planning run does:

=======  ==================================  ================================================
step     when                                does
=======  ==================================  ================================================
RESCAN   ``rescan`` requested                abandons the open scan, if any, and plans anew
RESUME   a scan is open                      returns its pending batches
DONE     the last scan finished              nothing: new users are the incremental sync's
PLAN     no scan yet                         snapshots the users into a new scan's batches
=======  ==================================  ================================================
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

#: Mapped task instances are scheduler and database rows; stay far below ``max_map_length`` (1024).
DEFAULT_MAX_BATCHES = 500
DEFAULT_BATCH_SIZE = 10_000
#: The ``iys.sync_state`` stream that records the last finished scan.
INITIAL_SYNC_STREAM = "initial_sync"


def choose_batch_size(total_users: int, requested: int, max_batches: int = DEFAULT_MAX_BATCHES) -> int:
    """The requested size, grown just enough that the batch count stays within ``max_batches``."""
    return max(requested, math.ceil(total_users / max_batches) if total_users else requested)


def count_batches(total_users: int, batch_size: int) -> int:
    return math.ceil(total_users / batch_size)


class ScanStep(enum.StrEnum):
    RESCAN = "rescan"
    RESUME = "resume"
    DONE = "done"
    PLAN = "plan"


class BatchState(enum.StrEnum):
    PENDING = "pending"
    FINISHED = "finished"
    ABANDONED = "abandoned"


class OpenScan(NamedTuple):
    scan_id: int
    batch_count: int
    total_users: int


class FinishedScan(NamedTuple):
    scan_id: int
    started_at: datetime
    finished_at: datetime
    total_users: int


class PlannedScan(NamedTuple):
    scan_id: int
    users: int
    batch_count: int
    batch_size: int
    repeated_user_ids: int  # source rows dropped because their user_id was already queued
    null_user_ids: int  # source rows that cannot be linked to anyone


class ScanBatch(NamedTuple):
    """One batch of one scan: the key every batch statement works by."""

    scan_id: int
    batch_no: int


class PendingBatch(NamedTuple):
    batch_no: int
    first_user_id: str
    last_user_id: str


class BatchRecord(NamedTuple):
    finished_at: datetime | None
    batch_count: int  # of its scan
    brand_code: int
    scan_abandoned: bool

    @property
    def state(self) -> BatchState:
        # Abandoned first: a rescan covers these users again, whatever this batch got to do.
        if self.scan_abandoned:
            return BatchState.ABANDONED
        return BatchState.PENDING if self.finished_at is None else BatchState.FINISHED


class ScanProgress(NamedTuple):
    batches_done: int
    batch_count: int
    users_done: int
    elapsed_seconds: float

    @property
    def eta_seconds(self) -> float | None:
        """Time left at the pace so far; unknown before the first batch is done."""
        if not self.batches_done:
            return None
        return (self.batch_count - self.batches_done) * self.elapsed_seconds / self.batches_done


def next_scan_step(*, rescan: bool, open_scan: OpenScan | None, last_finished: FinishedScan | None) -> ScanStep:
    """What a planning run does (see the table above)."""
    if rescan:
        return ScanStep.RESCAN
    if open_scan is not None:
        return ScanStep.RESUME
    return ScanStep.DONE if last_finished is not None else ScanStep.PLAN


@dataclass(frozen=True)
class ScanSchedule:
    """What a planning run found or did, and the batches of the scan still to process."""

    step: ScanStep
    scan_id: int | None = None
    batch_count: int = 0
    pending: tuple[PendingBatch, ...] = ()
    planned: PlannedScan | None = None  # RESCAN and PLAN
    last_finished: FinishedScan | None = None  # DONE
    abandoned_open_scan: bool = False  # RESCAN
