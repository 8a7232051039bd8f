"""Retention against a real PostgreSQL: what goes, what always stays, per brand, in chunks, by index."""

from __future__ import annotations

import pytest

from iys_provider.people.retention import RetentionPolicy
from iys_provider.people.retention_store import (
    DELETE_FINISHED_UPDATES_SQL,
    DELETE_OLD_EVENTS_SQL,
    RetentionOutcome,
    apply_retention,
)
from iys_provider.schema import migrate

BRAND, OTHER_BRAND = 7171, 7272


@pytest.fixture
def store(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    return pg


def add_event(conn, transaction_id, *, brand=BRAND, received_days_ago):
    conn.execute(
        "INSERT INTO iys.consent_events (transaction_id, brand_code, recipient, recipient_type, type, status, "
        "consent_date, creation_date, source, stream, received_at) "
        "VALUES (%s, %s, '+905321110001', 'BIREYSEL', 'MESAJ', 'ONAY', now(), now() - %s * interval '1 day', "
        "'IYS_WEB', 'IYS', now() - %s * interval '1 day')",
        (transaction_id, brand, received_days_ago, received_days_ago),
    )


def add_update(conn, name, *, state, processed_days_ago, status="ONAY", consent_days_ago=30, brand=BRAND):
    conn.execute(
        "INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state, "
        "processed_at, detail) VALUES (%s, '+905321110001', 'MESAJ', %s, now() - %s * interval '1 day', 'HS_WEB', "
        "%s, now() - %s * interval '1 day', %s)",
        (brand, status, consent_days_ago, state, processed_days_ago, name),
    )


def events(conn):
    return sorted(t for (t,) in conn.execute("SELECT transaction_id FROM iys.consent_events"))


def updates(conn):
    return sorted(d for (d,) in conn.execute("SELECT detail FROM iys.consent_updates"))


def test_keeping_everything_deletes_nothing(store):
    add_event(store, "old", received_days_ago=4000)
    add_update(store, "old", state="sent", processed_days_ago=4000)
    assert apply_retention(store, brand_code=BRAND, policy=RetentionPolicy()) == RetentionOutcome(0, 0)
    assert (events(store), updates(store)) == (["old"], ["old"])


def add_pushed(conn, transaction_id, *, brand=BRAND, received_days_ago, applied=True):
    conn.execute(
        "INSERT INTO iys.push_inbox (brand_code, transaction_id, channel, movement, creation_date, received_at, "
        "applied_at) VALUES (%s, %s, 'MESAJ', '{}'::jsonb, now(), now() - %s * interval '1 day', "
        "CASE WHEN %s THEN now() END)",
        (brand, transaction_id, received_days_ago, applied),
    )


def add_quarantined(conn, reason, *, brand=BRAND, received_days_ago):
    conn.execute(
        "INSERT INTO iys.push_quarantine (brand_code, channel, reason, item, item_hash, received_at) "
        "VALUES (%s, 'MESAJ', %s, '{}', %s, now() - %s * interval '1 day')",
        (brand, reason, reason, received_days_ago),
    )


def test_pushed_movements_age_with_the_events_but_an_unapplied_one_stays(store):
    for i in range(4):
        add_pushed(store, f"old-{i}", received_days_ago=31)
    add_pushed(store, "old-unapplied", received_days_ago=31, applied=False)
    add_pushed(store, "recent", received_days_ago=29)
    add_pushed(store, "other-brand-old", brand=OTHER_BRAND, received_days_ago=400)
    add_quarantined(store, "old", received_days_ago=31)
    add_quarantined(store, "recent", received_days_ago=1)

    outcome = apply_retention(store, brand_code=BRAND, policy=RetentionPolicy(consent_events_days=30), chunk_size=3)

    assert outcome == RetentionOutcome(consent_events_deleted=0, finished_updates_deleted=0, pushed_movements_deleted=5)
    kept = sorted(t for (t,) in store.execute("SELECT transaction_id FROM iys.push_inbox"))
    assert kept == ["old-unapplied", "other-brand-old", "recent"]
    assert [r for (r,) in store.execute("SELECT reason FROM iys.push_quarantine")] == ["recent"]
    # Keeping events forever keeps the pushed movements too.
    add_pushed(store, "ancient", received_days_ago=4000)
    assert apply_retention(store, brand_code=BRAND, policy=RetentionPolicy()).pushed_movements_deleted == 0


def test_events_received_before_the_cutoff_go_in_chunks_of_the_brand_only(store):
    for i in range(7):
        add_event(store, f"old-{i}", received_days_ago=31)
    add_event(store, "recent", received_days_ago=29)
    add_event(store, "other-brand-old", brand=OTHER_BRAND, received_days_ago=400)

    outcome = apply_retention(store, brand_code=BRAND, policy=RetentionPolicy(consent_events_days=30), chunk_size=3)

    assert outcome == RetentionOutcome(consent_events_deleted=7, finished_updates_deleted=0)
    assert events(store) == ["other-brand-old", "recent"]


def test_only_settled_outbox_rows_go_and_an_opt_out_that_never_reached_iys_stays(store):
    for state in ("sent", "skipped", "rejected", "failed"):
        add_update(store, f"{state}-old", state=state, processed_days_ago=10)
        add_update(store, f"{state}-recent", state=state, processed_days_ago=1)
    add_update(store, "pending-old", state="pending", processed_days_ago=10)
    add_update(store, "submitted-old", state="submitted", processed_days_ago=10)
    add_update(store, "never-processed", state="sent", processed_days_ago=None)
    # Opt-outs that failed for good: one İYS still accepts (consent date an hour ago), one it refuses.
    add_update(
        store, "failed-ret-registrable", state="failed", status="RET", consent_days_ago=1 / 24, processed_days_ago=10
    )
    add_update(store, "failed-ret-expired", state="failed", status="RET", consent_days_ago=30, processed_days_ago=10)
    add_update(store, "held-old", state="held", status="RET", consent_days_ago=30, processed_days_ago=10)
    add_update(
        store, "failed-ret-lowercase", state="failed", status=" ret ", consent_days_ago=1 / 24, processed_days_ago=10
    )
    add_update(store, "other-brand-old", state="sent", processed_days_ago=400, brand=OTHER_BRAND)

    # Too late for İYS (EXPIRED): still the citizen's "no", kept; any other refusal is history.
    store.execute("UPDATE iys.consent_updates SET status = 'RET', error_code = 'EXPIRED' WHERE detail = 'rejected-old'")
    add_update(store, "rejected-ret-invalid", state="rejected", status="RET", processed_days_ago=10)

    outcome = apply_retention(store, brand_code=BRAND, policy=RetentionPolicy(finished_updates_days=2), chunk_size=2)

    assert outcome == RetentionOutcome(consent_events_deleted=0, finished_updates_deleted=4)
    assert updates(store) == sorted(
        [
            *(f"{state}-recent" for state in ("sent", "skipped", "rejected", "failed")),
            "pending-old",
            "submitted-old",
            "never-processed",
            "failed-ret-registrable",
            "failed-ret-lowercase",
            "failed-ret-expired",
            "held-old",
            "rejected-old",
            "other-brand-old",
        ]
    )


def test_an_exact_multiple_of_the_chunk_size_ends_with_an_empty_chunk(store):
    for i in range(4):
        add_event(store, f"old-{i}", received_days_ago=10)
    outcome = apply_retention(store, brand_code=BRAND, policy=RetentionPolicy(consent_events_days=8), chunk_size=2)
    assert outcome.consent_events_deleted == 4 and events(store) == []


@pytest.mark.parametrize(
    ("statement", "index"),
    [(DELETE_OLD_EVENTS_SQL, "consent_events_received"), (DELETE_FINISHED_UPDATES_SQL, "consent_updates_finished")],
)
def test_each_chunk_finds_its_rows_by_index(store, statement, index):
    params = {"brand": BRAND, "before": "2026-01-01", "still_registrable_after": "2026-01-01", "limit": 100}
    with store.transaction():
        store.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(row[0] for row in store.execute(f"EXPLAIN {statement}", params))
    assert index in plan, plan


def test_the_operator_applies_the_retention_to_the_brand_of_its_connection(sim, store):
    from iys_provider.operators.retention import IysApplyRetentionOperator
    from tests_support import SIM_BRAND_CODE

    add_event(store, "old", brand=SIM_BRAND_CODE, received_days_ago=9)
    add_event(store, "recent", brand=SIM_BRAND_CODE, received_days_ago=7)
    add_event(store, "other-brand-old", brand=OTHER_BRAND, received_days_ago=9)
    add_update(store, "sent-old", state="sent", processed_days_ago=3, brand=SIM_BRAND_CODE)

    result = IysApplyRetentionOperator(
        task_id="retention", consent_events_retention_days="8", finished_updates_retention_days="None"
    ).execute(context={})

    assert result == {
        "step": "retention",
        "consent_events_deleted": 1,
        "finished_updates_deleted": 0,
        "pushed_movements_deleted": 0,
    }
    assert events(store) == ["other-brand-old", "recent"] and updates(store) == ["sent-old"]
