"""consent_store against a real PostgreSQL: status-change counting, COPY escaping, stale rows, plans."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from iys_provider import consent_store
from iys_provider.consent_store import write_checked_users
from iys_provider.initial_sync.recipients import prepare_users
from iys_provider.models import ConsentType, RecipientType
from iys_provider.people.user_source import SourceUser
from iys_provider.schema import migrate

BRAND = 4242
MESAJ = (RecipientType.BIREYSEL, ConsentType.MESAJ)
ARAMA = (RecipientType.BIREYSEL, ConsentType.ARAMA)
EPOSTA = (RecipientType.BIREYSEL, ConsentType.EPOSTA)


@pytest.fixture
def store(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    return pg


def user(user_id, phone=None, email=None, recipient_type=None):
    # As UserSource computes it: an md5 of the raw values.
    digest = hashlib.md5(repr((phone, email, recipient_type)).encode()).hexdigest()
    return SourceUser(user_id, phone, email, recipient_type, digest)


def write(conn, users, onay, checked_at=None):
    return write_checked_users(
        conn,
        brand_code=BRAND,
        prepared=prepare_users(users),
        onay=onay,
        checked_at=checked_at or datetime.now(UTC),
    )


def statuses(conn):
    return dict(
        ((r, t), s)
        for r, t, s in conn.execute("SELECT recipient, type, status FROM iys.consents WHERE brand_code = %s", (BRAND,))
    )


def test_status_changes_counts_only_what_this_write_changed(store):
    users = [user("a", "05321112233", "a@example.com"), user("b", "05321112244")]
    first = write(store, users, {MESAJ: {"+905321112233"}, EPOSTA: {"a@example.com"}})
    # Newly known ONAYs are changes; addresses İYS holds nothing for stay NULL and are not.
    assert first.status_changes == 2
    assert first.consents == 5

    again = write(store, users, {MESAJ: {"+905321112233"}, EPOSTA: {"a@example.com"}})
    assert again.status_changes == 0

    withdrawn = write(store, users, {EPOSTA: {"a@example.com"}})
    assert withdrawn.status_changes == 1  # the MESAJ ONAY that is no longer listed became RET
    assert statuses(store)[("+905321112233", "MESAJ")] == "RET"

    # An answer older than what we already know neither changes the row nor counts.
    stale = write(store, users, {MESAJ: {"+905321112233"}}, checked_at=datetime.now(UTC) - timedelta(hours=1))
    assert stale.status_changes == 0
    assert statuses(store)[("+905321112233", "MESAJ")] == "RET"


@pytest.mark.parametrize("awkward_id", ["tab\tid", "back\\slash", "new\nline", "cr\rid", "\\N"])
def test_source_values_with_copy_specials_are_stored_verbatim(store, awkward_id):
    raw_phone = "not a phone\t\\N"
    write(store, [user(awkward_id, "05321112233", "x@example.com"), user("plain", raw_phone)], {})

    links = store.execute("SELECT user_id, kind FROM iys.user_recipients ORDER BY kind").fetchall()
    assert links == [(awkward_id, "email"), (awkward_id, "phone")]
    assert store.execute('SELECT user_id FROM iys.user_sources ORDER BY user_id COLLATE "C"').fetchall() == sorted(
        [(awkward_id,), ("plain",)], key=lambda row: row[0].encode()
    )
    assert store.execute("SELECT user_id, field, raw_value FROM iys.rejected_recipients").fetchall() == [
        ("plain", "phone", raw_phone)
    ]


def test_links_and_quarantine_follow_the_latest_source_values(store):
    write(
        store, [user("keeps"), user("drops", "05321112233", "d@example.com"), user("fixes", "12", "f@example.com")], {}
    )
    assert store.execute("SELECT field, reason FROM iys.rejected_recipients WHERE user_id = 'fixes'").fetchall() == [
        ("phone", "PHONE_INVALID")
    ]

    write(
        store,
        [
            user("drops", None, "d@example.com"),  # phone removed from the source: its link goes
            user("fixes", "05321112299", "f@example.com"),  # phone fixed: quarantine row goes
            user("typo", "05321112255", "t@example.com", recipient_type="PERSONAL"),
        ],
        {},
    )
    links = store.execute("SELECT user_id, kind, recipient FROM iys.user_recipients ORDER BY 1, 2").fetchall()
    assert links == [
        ("drops", "email", "d@example.com"),
        ("fixes", "email", "f@example.com"),
        ("fixes", "phone", "+905321112299"),
    ]
    assert store.execute("SELECT user_id, field, raw_value, reason FROM iys.rejected_recipients").fetchall() == [
        ("typo", "recipient_type", "PERSONAL", "INVALID_RECIPIENT_TYPE")
    ]

    # Once the recipient type is fixed, the user links and the quarantine row goes.
    write(store, [user("typo", "05321112255", "t@example.com", recipient_type="tacir")], {})
    assert store.execute("SELECT count(*) FROM iys.rejected_recipients").fetchone()[0] == 0
    assert store.execute(
        "SELECT kind, recipient_type FROM iys.user_recipients WHERE user_id = 'typo' ORDER BY kind"
    ).fetchall() == [("email", "TACIR"), ("phone", "TACIR")]


def test_batch_joins_use_index_lookups_however_large_the_tables(store):
    """A hash or merge join would read the whole links table for every batch of a scan."""
    store.execute(
        "INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient) "
        "SELECT %s, 'u' || g, k, 'r' || g || k FROM generate_series(1, 50000) g, unnest(array['phone', 'email']) k",
        (BRAND,),
    )
    store.execute(
        "INSERT INTO iys.rejected_recipients (brand_code, user_id, field, raw_value, reason) "
        "SELECT %s, 'u' || g, 'phone', 'x', 'PHONE_INVALID' FROM generate_series(1, 50000) g",
        (BRAND,),
    )
    store.execute("ANALYZE iys.user_recipients, iys.rejected_recipients")
    with store.transaction(), store.cursor() as cur:
        cur.execute(consent_store.JOIN_SETTINGS_SQL)
        cur.execute(consent_store.CREATE_STAGING_SQL)
        cur.execute("INSERT INTO stage_users SELECT 'u' || g, 'd', '{}', '{}' FROM generate_series(1, 5000) g")
        for statement in (consent_store.DELETE_STALE_LINKS_SQL, consent_store.CLEAR_FIXED_QUARANTINE_SQL):
            plan = "\n".join(row[0] for row in cur.execute("EXPLAIN " + statement, {"brand": BRAND}))
            assert "Seq Scan on user_recipients" not in plan and "Seq Scan on rejected_recipients" not in plan, plan
            assert "Index" in plan, plan
        raise psycopg.Rollback()  # leave nothing behind
