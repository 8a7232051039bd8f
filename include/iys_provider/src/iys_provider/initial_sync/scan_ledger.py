"""The initial sync's ledger: one scan of every user, planned once, processed batch by batch.

A scan goes through plan → queue → batches → finish (tables ``iys.initial_sync_scans``,
``iys.initial_sync_queue``, ``iys.initial_sync_batches``; the SQL is in
:mod:`iys_provider.initial_sync.scan_ledger_store`):

1. **plan**: a scan row is opened and every user of the source query is snapshotted into the
   queue, numbered into batches in ``user_id`` order ("C" collation), sized by
   :func:`batch_sizes` (below). One batch row per number records its first and last user id (the
   label of its mapped task). The source query runs once: its sorted rows are counted where they
   lie (the server keeps them) and then streamed, numbered on the way, into the queue.
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

How many users each batch gets (:func:`batch_sizes`). A batch asks İYS about its recipients in
calls of ≤1000 per channel, and its last call per channel is part-filled: about 1.5 calls per
batch (MESAJ, ARAMA, EPOSTA) that a scan in one piece would not make. Large batches make those
negligible; but ``parallel`` tasks (``IYS_API_CONCURRENCY``, 4) run at once, and tasks that
start together with equal batches also finish together, leaving İYS idle while all of them
write and the next ones start. So, for ``rows`` users, ``batch_size`` B grown just enough that
⌈rows/B⌉ ≤ ``max_batches`` (:func:`choose_batch_size`), ``parallel`` W, and the body size
b = min(B, ⌈rows/(2W−1)⌉) (at most B, and small enough for 2W−1 batches, so every task gets some):

======================================  =========================================================
when                                    batches
======================================  =========================================================
b ≥ ``MIN_SHAPED_BATCH`` (10,000),      **shaped**: a ramp up of W−1 batches (b/W, 2b/W, …), the
W > 1, and they fit ``max_batches``     body in equal batches of ≤ b, the ramp down mirrored.
                                        The first wave's tasks finish one after the other
                                        (staggered from then on), the first call comes after a
                                        small batch is read and the last write is of a small one.
                                        Sizes are rounded to whole calls' worth of users
                                        (``USERS_PER_FULL_CALL``) when b/W is at least that; the
                                        last body batch takes the remainder
otherwise: small scans or               equal batches of ≤ B, as few as can be; their sizes one
``batch_size``, W = 1, huge scans       apart at most
======================================  =========================================================

At the defaults (B = 75,000, W = 4) a million users are 17 batches (6 of them ramps, the first
and last of 19,000 users). Users who each hold their own phone and e-mail then need exactly the
floor (every recipient once, in full calls: 3,000 calls); the demo users, with shared, missing and
broken addresses, need about 1 % more, and equal batches of 10,000 needed 6.4 % more
(``bench/bench_plan.py``).
More cores do not raise İYS's rate (10 requests/s per IP): raise ``parallel`` only while the
tasks' local work, not İYS, holds the rate back, and ``batch_size`` with it, so that a body
batch stays ~200 calls.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

#: Mapped task instances are scheduler and database rows; stay far below ``max_map_length`` (1024).
DEFAULT_MAX_BATCHES = 500
#: ~200 multi-status calls per batch: its ~1.5 part-filled ones are under 1 % (see the table above).
DEFAULT_BATCH_SIZE = 75_000
#: Batch tasks running at once: the DAGs' ``IYS_API_CONCURRENCY`` default.
DEFAULT_PARALLEL_BATCHES = 4
#: Below this body size a scan is short enough that a ramp's extra batches cost more calls than
#: the idle time they save.
MIN_SHAPED_BATCH = 10_000
#: A shaped scan's batches hold whole calls' worth of users (multi status answers ≤1000
#: recipients a call, and a user usually brings one recipient per channel), so a batch whose
#: users hold their own addresses leaves no part-filled call behind.
USERS_PER_FULL_CALL = 1000
#: The ``iys.sync_state`` stream that records the last finished scan.
INITIAL_SYNC_STREAM = "initial_sync"


def choose_batch_size(total_users: int, requested: int, max_batches: int = DEFAULT_MAX_BATCHES) -> int:
    """The requested size, grown just enough that the batch count stays within ``max_batches``."""
    return max(requested, math.ceil(total_users / max_batches) if total_users else requested)


def batch_sizes(
    rows: int,
    batch_size: int,
    *,
    max_batches: int = DEFAULT_MAX_BATCHES,
    parallel: int = DEFAULT_PARALLEL_BATCHES,
) -> tuple[int, ...]:
    """How many of ``rows`` users each batch gets, in batch order (see the table above); they add up to ``rows``."""
    if batch_size < 1 or max_batches < 1 or parallel < 1:
        raise ValueError(
            f"batch_size, max_batches and parallel must be at least 1: {batch_size}, {max_batches}, {parallel}"
        )
    if rows <= 0:
        return ()
    body = min(choose_batch_size(rows, batch_size, max_batches), math.ceil(rows / (2 * parallel - 1)))
    if 1 < parallel <= body and body >= MIN_SHAPED_BATCH:
        # In whole calls' worth of users where a ramp step is at least that, so the ramp still rises.
        unit = USERS_PER_FULL_CALL if body // parallel >= USERS_PER_FULL_CALL else 1
        ramp = [_rounded(body * step // parallel, unit) for step in range(1, parallel)]
        sizes = (*ramp, *_equal_parts(rows - 2 * sum(ramp), body, unit), *reversed(ramp))
        if len(sizes) <= max_batches:
            return sizes
    return _equal_parts(rows, choose_batch_size(rows, batch_size, max_batches))


def batch_request_concurrency(batch_no: int, batch_count: int, base: int) -> int:
    """Calls one batch keeps in flight: twice ``base``, but 1.5 × for the scan's second-to-last
    batch and ``base`` for its last.

    Slots of the shared rate are served in the order they are reserved, so a task's share of the
    rate is its share of the calls in flight. With equal shares the ramp down's batches finish
    their calls together and then all write at once, on a machine whose cores the writes share;
    with these, the earlier ones finish first and write while the last ones still call, and the
    last batch (the ramp down's smallest) writes last, alone. The last batch keeps ``base``, so
    on its own it sends as fast as every batch did before.
    """
    remaining = batch_count - batch_no  # 1 for the last batch
    return max(1, base * min(remaining + 1, 4) // 2)


def _rounded(users: int, unit: int) -> int:
    """``users`` rounded to the nearest multiple of ``unit`` (at least one unit)."""
    return max(unit, (users + unit // 2) // unit * unit)


def _equal_parts(rows: int, most: int, unit: int = 1) -> tuple[int, ...]:
    """``rows`` in as few parts of at most ``most`` as possible, each a multiple of ``unit`` but the
    last (which takes the remainder), their units one apart at most.

    With a ``unit`` above 1 the parts may differ by a unit plus the remainder; a part that would
    outgrow ``most`` by that rounding makes one part more, which ends once a part holds one unit
    (so ``most`` must be at least two units).
    """
    if unit > 1 and most < 2 * unit:
        raise ValueError(f"parts of at most {most} cannot be cut in units of {unit}")
    parts = math.ceil(rows / most)
    while True:
        units, remainder = divmod(rows, unit)
        small, bigger = divmod(units, parts)
        sizes = [(small + 1) * unit] * bigger + [small * unit] * (parts - bigger)
        sizes[-1] += remainder
        if max(sizes) <= most and min(sizes) > 0:
            return tuple(sizes)
        parts += 1


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
