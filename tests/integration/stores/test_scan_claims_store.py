"""scan_claims_store against a real PostgreSQL: first claim wins, retries keep theirs, no deadlock, dropped with the scan."""

from __future__ import annotations

import threading

import psycopg
import pytest

from iys_provider.initial_sync.scan_claims_store import claim_addresses, claims_table_name
from iys_provider.initial_sync.scan_ledger import ScanBatch
from iys_provider.initial_sync.scan_ledger_store import finish_batch, finish_scan, pending_batches, schedule_scan
from iys_provider.people.user_source import UserSource
from iys_provider.schema import migrate

BRAND = 4343
SOURCE = UserSource(
    "SELECT 'u' || n AS user_id, '0532111' || lpad(n::text, 4, '0') AS phone, NULL AS email FROM generate_series(1, 4) n"
)


@pytest.fixture
def scan(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    schedule, _ = schedule_scan(pg, brand_code=BRAND, source=SOURCE, batch_size=2, max_batches=10)
    return schedule.scan_id


def pairs(*addresses):
    return [("BIREYSEL", a) for a in addresses]


def holders(pg, scan_id):
    return dict(
        ((rtype, address), batch_no)
        for rtype, address, batch_no in pg.execute(
            f"SELECT recipient_type, recipient, batch_no FROM {claims_table_name(scan_id)}"
        )
    )


def table_exists(pg, scan_id):
    return pg.execute("SELECT to_regclass(%s) IS NOT NULL", (claims_table_name(scan_id),)).fetchone()[0]


def test_the_first_batch_to_claim_an_address_holds_it(pg, scan):
    assert claim_addresses(pg, ScanBatch(scan, 0), pairs("+1", "+2")) == set()
    assert claim_addresses(pg, ScanBatch(scan, 1), pairs("+2", "+3")) == {("BIREYSEL", "+2")}
    assert holders(pg, scan) == {("BIREYSEL", "+1"): 0, ("BIREYSEL", "+2"): 0, ("BIREYSEL", "+3"): 1}
    # The same address as another recipient type is another İYS record, free to claim.
    assert claim_addresses(pg, ScanBatch(scan, 1), [("TACIR", "+1")]) == set()


def test_a_retried_batch_keeps_what_its_failed_try_claimed(pg, scan):
    claim_addresses(pg, ScanBatch(scan, 0), pairs("+1", "+2"))
    claim_addresses(pg, ScanBatch(scan, 1), pairs("+3"))
    # The retry asks again about everything it claimed, and is still left what batch 1 holds.
    assert claim_addresses(pg, ScanBatch(scan, 0), pairs("+1", "+2", "+3")) == {("BIREYSEL", "+3")}
    assert holders(pg, scan)[("BIREYSEL", "+1")] == 0


def test_batches_claiming_overlapping_addresses_at_once_neither_deadlock_nor_share_one(pg, pg_dsn, scan):
    addresses = [f"+90532{n:07d}" for n in range(20_000)]
    orders = {0: addresses, 1: list(reversed(addresses)), 2: addresses[::2] + addresses[1::2]}
    barrier = threading.Barrier(len(orders))
    left: dict[int, set] = {}
    errors: list[BaseException] = []

    def claim(batch_no):
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                barrier.wait(timeout=30)
                left[batch_no] = claim_addresses(conn, ScanBatch(scan, batch_no), pairs(*orders[batch_no]))
        except BaseException as exc:  # a deadlock would surface here as psycopg.errors.DeadlockDetected
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(n,)) for n in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    held = holders(pg, scan)
    assert len(held) == len(addresses)
    for batch_no, elsewhere in left.items():
        mine = {key for key, holder in held.items() if holder == batch_no}
        # What a batch was told others hold is exactly what it does not hold itself.
        assert elsewhere == set(pairs(*addresses)) - mine


def test_finishing_the_scan_drops_its_claims(pg, scan):
    claim_addresses(pg, ScanBatch(scan, 0), pairs("+1"))
    assert table_exists(pg, scan)
    for batch in pending_batches(pg, scan):
        finish_batch(pg, ScanBatch(scan, batch.batch_no), users=1, recipients=1, quarantined=0, requests=1)
    assert finish_scan(pg, BRAND, scan) == 4
    assert not table_exists(pg, scan)


def test_a_rescan_drops_the_abandoned_scans_claims_and_its_late_batches_claim_nothing(pg, scan):
    claim_addresses(pg, ScanBatch(scan, 0), pairs("+1"))
    schedule_scan(pg, brand_code=BRAND, source=SOURCE, batch_size=2, max_batches=10, rescan=True)
    assert not table_exists(pg, scan)
    # A batch of the abandoned scan still running asks about everything and recreates nothing.
    assert claim_addresses(pg, ScanBatch(scan, 1), pairs("+1")) == set()
    assert not table_exists(pg, scan)
