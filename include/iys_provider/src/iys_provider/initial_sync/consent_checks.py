"""Checking users against İYS: prepare → ask multi status → write, for the initial sync and new users alike.

* **prepare**: normalise each user's phone and e-mail, quarantine what does not normalise, and
  collect the unique (recipient type, channel, address) triples (:mod:`iys_provider.initial_sync.recipients`);
  a scan's batch then leaves out the addresses another batch of its scan claimed first
  (:mod:`iys_provider.initial_sync.scan_claims`);
* **check**: ask İYS with multi status, ≤1000 addresses per call, ``concurrency`` calls in
  flight (the shared rate limiter still bounds every task's aggregate rate);
* **write**: consents, user links, quarantine rows and fingerprints in one transaction
  (:mod:`iys_provider.consent_store`: COPY into staging tables, then set-based upserts), with a
  scan's batch marked finished in that same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING

import psycopg

from iys_provider.consent_store import write_checked_users
from iys_provider.initial_sync.recipients import PreparedUsers, prepare_users
from iys_provider.initial_sync.scan_claims import addresses_to_ask, claimable
from iys_provider.initial_sync.scan_claims_store import claim_addresses
from iys_provider.initial_sync.scan_ledger import ScanBatch
from iys_provider.initial_sync.scan_ledger_store import finish_batch, read_batch_users
from iys_provider.models import ConsentType, RecipientType, SourceUser, WriteOutcome

if TYPE_CHECKING:  # the hook module imports Airflow; the benchmark uses this module without it
    from iys_provider.hooks.iys import IysHook


@dataclass(frozen=True)
class CheckOutcome:
    """What checking a group of users did; outcomes of several groups add up with ``+``."""

    users: int = 0
    recipients: int = 0  # unique addresses asked about, per (recipient type, channel)
    quarantined: int = 0
    status_changes: int = 0
    requests: int = 0  # İYS requests made, retries and token requests included
    status_calls: int = 0  # ≤1000-address multi-status calls the addresses needed
    rows_written: int = 0  # consents, user links and fingerprints
    api_seconds: float = 0.0
    local_seconds: float = 0.0  # reading, normalising and writing
    write_seconds: float = 0.0

    def __add__(self, other: CheckOutcome) -> CheckOutcome:
        return CheckOutcome(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def check_users(
    hook: IysHook,
    conn: psycopg.Connection,
    *,
    brand_code: int,
    users: Iterable[SourceUser],
    concurrency: int = 1,
    batch: ScanBatch | None = None,
) -> CheckOutcome:
    """Check ``users`` with İYS and record what it said; ``batch``, if given, is finished with them.

    A scan's ``batch`` asks only about the addresses it claims first in its scan: the others are
    asked and recorded by the batch that claimed them, and only its users' links are written here.
    """
    started = time.monotonic()
    prepared = prepare_users(users)
    if batch is not None:
        claimed_elsewhere = claim_addresses(conn, batch, claimable(prepared.to_check))
        prepared.to_check = addresses_to_ask(prepared.to_check, claimed_elsewhere)
    prepare_seconds = time.monotonic() - started
    checked_at = datetime.now(UTC)
    requests_before = hook.stats.requests
    api_started = time.monotonic()
    onay = hook.get_onay_recipients_by_channel(
        {key: sorted(recipients) for key, recipients in prepared.to_check.items()}, concurrency=concurrency
    )
    api_seconds = time.monotonic() - api_started
    requests = hook.stats.requests - requests_before
    write_started = time.monotonic()
    written = record_checked_users(
        conn,
        brand_code=brand_code,
        prepared=prepared,
        onay=onay,
        checked_at=checked_at,
        requests=requests,
        batch=batch,
    )
    write_seconds = time.monotonic() - write_started
    return CheckOutcome(
        users=prepared.users,
        recipients=prepared.unique_recipients,
        quarantined=written.quarantined,
        status_changes=written.status_changes,
        requests=requests,
        status_calls=prepared.planned_requests(),
        rows_written=written.consents + written.links + prepared.users,
        api_seconds=api_seconds,
        local_seconds=prepare_seconds + write_seconds,
        write_seconds=write_seconds,
    )


def check_scan_batch(
    hook: IysHook, conn: psycopg.Connection, *, brand_code: int, batch: ScanBatch, concurrency: int = 1
) -> CheckOutcome:
    """Check the users a scan's batch snapshotted, and finish the batch with them."""
    started = time.monotonic()
    users = read_batch_users(conn, batch)
    read_seconds = time.monotonic() - started
    outcome = check_users(hook, conn, brand_code=brand_code, users=users, concurrency=concurrency, batch=batch)
    return outcome + CheckOutcome(local_seconds=read_seconds)


def check_users_in_chunks(
    hook: IysHook,
    conn: psycopg.Connection,
    *,
    brand_code: int,
    users: Iterable[SourceUser],
    chunk_size: int,
    concurrency: int = 1,
) -> CheckOutcome:
    """:func:`check_users` for any number of users, ``chunk_size`` per transaction."""
    total = CheckOutcome()
    for chunk in _chunks(iter(users), chunk_size):
        total += check_users(hook, conn, brand_code=brand_code, users=chunk, concurrency=concurrency)
    return total


def record_checked_users(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    prepared: PreparedUsers,
    onay: Mapping[tuple[RecipientType, ConsentType], set[str]],
    checked_at: datetime,
    requests: int = 0,
    batch: ScanBatch | None = None,
) -> WriteOutcome:
    """Write what İYS said about prepared users and, for a scan's batch, its completion: both or neither."""
    if batch is None:
        return write_checked_users(conn, brand_code=brand_code, prepared=prepared, onay=onay, checked_at=checked_at)
    with conn.transaction():
        written = write_checked_users(conn, brand_code=brand_code, prepared=prepared, onay=onay, checked_at=checked_at)
        finish_batch(
            conn,
            batch,
            users=prepared.users,
            recipients=prepared.unique_recipients,
            quarantined=prepared.quarantined,
            requests=requests,
        )
    return written


def _chunks(users: Iterator[SourceUser], size: int) -> Iterator[list[SourceUser]]:
    while chunk := list(islice(users, size)):
        yield chunk
