"""The outbox with several brands in one database: the V008 upgrade, the brand trigger, and every
outbox query filtered by brand (issue #13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from iys_provider.outbox.rules import OutboxState, Verdict
from iys_provider.outbox.store import (
    collected_by_run,
    expire_submissions,
    fetch_pending,
    fetch_pending_by_id,
    finalise,
    mark_submitted,
    submitted_requests,
    submitted_rows,
    unsent_rets_by_day,
)
from iys_provider.schema import migrate

BRAND_A, BRAND_B = 700001, 700002
OUTBOX_COLUMNS = "(recipient, type, recipient_type, status, consent_date, source)"


@pytest.fixture
def empty_schema(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    yield pg
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")


def add_row(conn, recipient: str, *, brand: int | None, status: str = "RET", when: datetime | None = None) -> int:
    when = when or datetime.now(UTC) - timedelta(minutes=5)
    if brand is None:  # as an application written before brands existed inserts
        return conn.execute(
            f"INSERT INTO iys.consent_updates {OUTBOX_COLUMNS} VALUES (%s, 'MESAJ', 'BIREYSEL', %s, %s, 'HS_MOBIL') "
            "RETURNING id",
            (recipient, status, when),
        ).fetchone()[0]
    return conn.execute(
        "INSERT INTO iys.consent_updates (brand_code, recipient, type, recipient_type, status, consent_date, source) "
        "VALUES (%s, %s, 'MESAJ', 'BIREYSEL', %s, %s, 'HS_MOBIL') RETURNING id",
        (brand, recipient, status, when),
    ).fetchone()[0]


def sync_brand(conn, brand: int) -> None:
    conn.execute(
        "INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%s, 'initial_sync', now())", (brand,)
    )


def brands_of_outbox(conn) -> list[tuple[str, int]]:
    return conn.execute("SELECT recipient, brand_code FROM iys.consent_updates ORDER BY id").fetchall()


def test_upgrade_gives_existing_rows_the_only_brand(empty_schema):
    migrate(empty_schema, up_to=7)
    sync_brand(empty_schema, BRAND_A)
    add_row(empty_schema, "+905320000001", brand=None)
    add_row(empty_schema, "+905320000002", brand=None)

    assert 8 in migrate(empty_schema, up_to=8)
    assert brands_of_outbox(empty_schema) == [("+905320000001", BRAND_A), ("+905320000002", BRAND_A)]


def test_upgrade_with_several_brands_stops_and_says_how_to_fill_the_rows(empty_schema):
    migrate(empty_schema, up_to=7)
    sync_brand(empty_schema, BRAND_A)
    empty_schema.execute(
        "INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status) "
        "VALUES (%s, '+905320000009', 'BIREYSEL', 'MESAJ', 'ONAY')",
        (BRAND_B,),
    )
    add_row(empty_schema, "+905320000001", brand=None)
    add_row(empty_schema, "+905320000002", brand=None)

    with pytest.raises(psycopg.errors.RaiseException) as refused:
        migrate(empty_schema, up_to=8)
    assert "2 rows without a brand" in refused.value.diag.message_primary
    assert "2 brands" in refused.value.diag.message_primary
    assert "UPDATE iys.consent_updates SET brand_code" in refused.value.diag.message_hint
    assert empty_schema.execute("SELECT max(version) FROM iys.schema_migrations").fetchone()[0] == 7

    # What the hint says, then the upgrade goes through and keeps it.
    empty_schema.execute("ALTER TABLE iys.consent_updates ADD COLUMN brand_code bigint")
    empty_schema.execute(
        "UPDATE iys.consent_updates SET brand_code = CASE WHEN recipient LIKE '%%1' THEN %s ELSE %s END",
        (BRAND_A, BRAND_B),
    )
    assert 8 in migrate(empty_schema, up_to=8)
    assert brands_of_outbox(empty_schema) == [("+905320000001", BRAND_A), ("+905320000002", BRAND_B)]


def test_an_insert_without_brand_gets_the_only_brand_and_fails_with_several(empty_schema):
    pg = empty_schema
    migrate(pg)
    with pytest.raises(psycopg.errors.NotNullViolation, match="brand_code is required: this database holds 0 brands"):
        add_row(pg, "+905320000001", brand=None)

    sync_brand(pg, BRAND_A)
    add_row(pg, "+905320000002", brand=None)
    assert brands_of_outbox(pg) == [("+905320000002", BRAND_A)]

    sync_brand(pg, BRAND_B)
    with pytest.raises(psycopg.errors.NotNullViolation, match="this database holds 2 brands"):
        add_row(pg, "+905320000003", brand=None)
    add_row(pg, "+905320000003", brand=BRAND_B)
    assert brands_of_outbox(pg)[-1] == ("+905320000003", BRAND_B)


def test_every_outbox_query_sees_only_its_brand(empty_schema):
    pg = empty_schema
    migrate(pg)
    a_pending = add_row(pg, "+905320000001", brand=BRAND_A)
    b_pending = add_row(pg, "+905320000002", brand=BRAND_B)
    a_batch = [add_row(pg, f"+90532000001{i}", brand=BRAND_A) for i in range(2)]
    b_batch = [add_row(pg, f"+90532000002{i}", brand=BRAND_B) for i in range(3)]
    mark_submitted(pg, "request-a", a_batch)
    mark_submitted(pg, "request-b", b_batch)

    assert [r.id for r in fetch_pending(pg, BRAND_A, 100)] == [a_pending]
    assert [r.id for r in fetch_pending(pg, BRAND_B, 100)] == [b_pending]
    assert fetch_pending_by_id(pg, BRAND_A, [a_pending, b_pending])[0].id == a_pending
    assert len(fetch_pending_by_id(pg, BRAND_A, [a_pending, b_pending])) == 1
    assert [(r, n) for r, _, n in submitted_requests(pg, BRAND_A)] == [("request-a", 2)]
    assert [(r, n) for r, _, n in submitted_requests(pg, BRAND_B)] == [("request-b", 3)]
    assert submitted_rows(pg, BRAND_A, "request-b") == []
    assert len(submitted_rows(pg, BRAND_B, "request-b")) == 3

    # Every brand's scheduled run of one night has the same run id.
    run_id = "scheduled__2026-11-28T23:00:00+00:00"
    finalise(pg, [(a_batch[0], Verdict(OutboxState.SENT))], result_run_id=run_id)
    finalise(
        pg, [(b_batch[0], Verdict(OutboxState.SENT)), (b_batch[1], Verdict(OutboxState.SENT))], result_run_id=run_id
    )
    assert collected_by_run(pg, BRAND_A, run_id) == {"sent": 1}
    assert collected_by_run(pg, BRAND_B, run_id) == {"sent": 2}

    # An expiry sweep for brand A leaves brand B's batch submitted, however old.
    reopened = expire_submissions(
        pg, BRAND_A, code="BATCH_EXPIRED", detail="test", submitted_before=datetime.now(UTC) + timedelta(hours=1)
    )
    assert reopened == 1
    assert [(r, n) for r, _, n in submitted_requests(pg, BRAND_B)] == [("request-b", 1)]

    unsent_a, unsent_b = unsent_rets_by_day(pg, BRAND_A), unsent_rets_by_day(pg, BRAND_B)
    assert sum(unsent_a.values()) == 2  # the pending one and the reopened one
    assert sum(unsent_b.values()) == 2  # the pending one and the one still submitted
