"""Leavers against a real PostgreSQL: who departed, what forgetting removes, the safety rule, a plan's leavers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iys_provider.consent_store import write_checked_users
from iys_provider.initial_sync.recipients import prepare_users
from iys_provider.initial_sync.scan_ledger import ScanStep
from iys_provider.initial_sync.scan_ledger_store import plan_scan, schedule_scan
from iys_provider.models import ConsentType, RecipientType
from iys_provider.people.leavers import Forgotten, TooManyLeaversError
from iys_provider.people.leavers_store import forget_leavers, forget_users, known_users
from iys_provider.people.user_source import SourceQueryError, UserSource
from iys_provider.schema import migrate

BRAND, OTHER_BRAND = 6161, 6262
SOURCE = UserSource("SELECT id AS user_id, phone, email FROM public.leaver_users")
USERS = [
    ("u1", "05321110001", "u1@example.com"),
    ("u2", "05321110002", "not-an-email"),  # its e-mail is quarantined
    ("u3", "12345", "shared@example.com"),  # its phone is quarantined; shares an e-mail with u4
    ("u4", "05321110004", "shared@example.com"),
    ("u5", "05321110005", None),
]
PHONES = {"+905321110001", "+905321110002", "+905321110004", "+905321110005"}
EMAILS = {"u1@example.com", "shared@example.com"}
ONAY = {
    (RecipientType.BIREYSEL, ConsentType.MESAJ): PHONES,
    (RecipientType.BIREYSEL, ConsentType.ARAMA): PHONES,
    (RecipientType.BIREYSEL, ConsentType.EPOSTA): EMAILS,
}


@pytest.fixture
def store(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    pg.execute("DROP TABLE IF EXISTS public.leaver_users")
    pg.execute("CREATE TABLE public.leaver_users (id text PRIMARY KEY, phone text, email text)")
    with pg.cursor() as cur:
        cur.executemany("INSERT INTO public.leaver_users VALUES (%s, %s, %s)", USERS)
    migrate(pg)
    for brand in (BRAND, OTHER_BRAND):
        sync(pg, brand)
    yield pg
    pg.execute("DROP TABLE IF EXISTS public.leaver_users")


def sync(conn, brand):
    write_checked_users(
        conn,
        brand_code=brand,
        prepared=prepare_users(list(SOURCE.read_users(conn))),
        onay=ONAY,
        checked_at=datetime.now(UTC),
    )


def leave(conn, *user_ids):
    conn.execute("DELETE FROM public.leaver_users WHERE id = ANY(%s)", (list(user_ids),))


def rows_of(conn, brand):
    """Per table, the user ids of the brand that still have rows."""
    return {
        table: sorted({u for (u,) in conn.execute(f"SELECT user_id FROM iys.{table} WHERE brand_code = %s", (brand,))})
        for table in ("user_recipients", "rejected_recipients", "user_sources", "sendable")
    }


def sendable_recipients(conn, brand):
    return sorted(set(conn.execute("SELECT recipient FROM iys.sendable WHERE brand_code = %s", (brand,)).fetchall()))


def test_departed_users_are_the_known_ones_the_source_no_longer_returns(store):
    assert SOURCE.read_departed(store, BRAND) == []
    leave(store, "u4", "u2")
    assert SOURCE.read_departed(store, BRAND) == ["u2", "u4"]
    # A row without a user_id keeps nobody, and a user returned twice is still there.
    noisy = UserSource(
        f"{SOURCE.recipients_sql} UNION ALL SELECT NULL, '05321119999', NULL "
        "UNION ALL SELECT id, phone, email FROM public.leaver_users WHERE id = 'u1'"
    )
    assert noisy.read_departed(store, BRAND) == ["u2", "u4"]
    assert SOURCE.read_departed(store, 999) == []  # a brand nobody was synced for


def test_user_ids_of_any_type_are_compared_as_text(store):
    store.execute(
        "INSERT INTO iys.user_sources (brand_code, user_id, digest) VALUES (%s, '1', 'x'), (%s, '2', 'x'), (%s, '10', 'x')",
        (7, 7, 7),
    )
    integers = UserSource("SELECT n AS user_id, NULL::text AS phone, NULL::text AS email FROM generate_series(1, 2) n")
    assert integers.read_departed(store, 7) == ["10"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (f"{SOURCE.recipients_sql}; DELETE FROM iys.user_sources", "exactly one SELECT statement"),
        (
            "WITH gone AS (DELETE FROM iys.user_sources RETURNING user_id) "
            "SELECT user_id, NULL AS phone, NULL AS email FROM gone",
            "one plain SELECT that only reads",
        ),
    ],
)
def test_reading_departed_users_runs_the_source_read_only_too(store, query, message):
    with pytest.raises(SourceQueryError, match=message):
        UserSource(query).read_departed(store, BRAND)
    assert known_users(store, BRAND) == 5


def test_forgetting_removes_links_quarantine_and_fingerprints_of_the_brand_only(store):
    before_other = rows_of(store, OTHER_BRAND)
    consents = store.execute("SELECT * FROM iys.consents ORDER BY 1, 2, 3, 4").fetchall()
    leave(store, "u2", "u3")

    forgotten = forget_users(store, brand_code=BRAND, user_ids=SOURCE.read_departed(store, BRAND), chunk_size=1)

    # u2: its phone link and its quarantined e-mail; u3: its e-mail link and its quarantined phone.
    assert forgotten == Forgotten(leavers=2, links_removed=2, quarantine_rows_removed=2, queued_rows_removed=0)
    assert rows_of(store, BRAND) == {
        "user_recipients": ["u1", "u4", "u5"],
        "rejected_recipients": [],
        "user_sources": ["u1", "u4", "u5"],
        "sendable": ["u1", "u4", "u5"],
    }
    # u2's number nobody else holds leaves sendable; the e-mail u3 shared with u4 stays, through u4.
    assert ("+905321110002",) not in sendable_recipients(store, BRAND)
    assert store.execute(
        "SELECT user_id FROM iys.sendable WHERE brand_code = %s AND recipient = 'shared@example.com'", (BRAND,)
    ).fetchall() == [("u4",)]
    # İYS's records of the addresses stay, and hold no user; the other brand is untouched.
    assert store.execute("SELECT * FROM iys.consents ORDER BY 1, 2, 3, 4").fetchall() == consents
    assert rows_of(store, OTHER_BRAND) == before_other
    # Forgotten users come back as new users if the source returns them again.
    store.execute("INSERT INTO public.leaver_users VALUES ('u2', '05321110002', NULL)")
    assert [u.user_id for u in SOURCE.read_changed(store, BRAND)] == ["u2"]


def test_forgetting_again_removes_nothing_more(store):
    leave(store, "u5")
    first = forget_users(store, brand_code=BRAND, user_ids=["u5"])
    assert first == Forgotten(leavers=1, links_removed=1)
    assert forget_users(store, brand_code=BRAND, user_ids=["u5"]) == Forgotten()


def test_the_safety_rule_refuses_before_anything_is_deleted(store):
    before = rows_of(store, BRAND)
    store.execute("TRUNCATE public.leaver_users")  # the source returns nobody
    departed = SOURCE.read_departed(store, BRAND)
    assert len(departed) == 5
    with pytest.raises(TooManyLeaversError, match="returns none of the 5 users synced so far"):
        forget_leavers(store, brand_code=BRAND, user_ids=departed, max_share=0.5)
    leave(store, "u1", "u2", "u3")
    with pytest.raises(TooManyLeaversError, match=r"3 of the 5 users .* max_leaver_share=0\.6 or more"):
        forget_leavers(store, brand_code=BRAND, user_ids=["u1", "u2", "u3"], max_share=0.5)
    assert rows_of(store, BRAND) == before

    # The override lets a deliberate departure of everybody through.
    assert forget_leavers(store, brand_code=BRAND, user_ids=departed, max_share=1).leavers == 5
    assert rows_of(store, BRAND) == {t: [] for t in before}


def test_leavers_are_dropped_from_the_open_scan_s_queue_of_their_brand(store):
    with store.transaction():
        scan = plan_scan(store, brand_code=BRAND, source=SOURCE, batch_size=2)
    with store.transaction():
        other = plan_scan(store, brand_code=OTHER_BRAND, source=SOURCE, batch_size=2)

    def queued(scan_id):
        return [
            u
            for (u,) in store.execute(
                "SELECT user_id FROM iys.initial_sync_queue WHERE scan_id = %s ORDER BY 1", (scan_id,)
            )
        ]

    leave(store, "u3")
    assert forget_users(store, brand_code=BRAND, user_ids=["u3"], open_scan_queue=False).queued_rows_removed == 0
    assert "u3" in queued(scan.scan_id)
    store.execute("INSERT INTO iys.user_sources (brand_code, user_id, digest) VALUES (%s, 'u3', 'x')", (BRAND,))
    assert forget_users(store, brand_code=BRAND, user_ids=["u3"]).queued_rows_removed == 1
    assert queued(scan.scan_id) == ["u1", "u2", "u4", "u5"]
    assert queued(other.scan_id) == ["u1", "u2", "u3", "u4", "u5"]


def schedule(conn, **kwargs):
    return schedule_scan(conn, brand_code=BRAND, source=SOURCE, batch_size=2, **kwargs)


def test_a_new_plan_forgets_the_known_users_its_snapshot_does_not_hold(store):
    leave(store, "u1", "u3")
    schedule_, forgotten = schedule(store)
    assert schedule_.step is ScanStep.PLAN and schedule_.planned.users == 3
    assert forgotten == Forgotten(leavers=2, links_removed=3, quarantine_rows_removed=1)
    assert rows_of(store, BRAND)["user_sources"] == ["u2", "u4", "u5"]
    assert rows_of(store, BRAND)["rejected_recipients"] == ["u2"]
    assert rows_of(store, OTHER_BRAND)["user_sources"] == ["u1", "u2", "u3", "u4", "u5"]

    # Resuming plans nothing, so it forgets nobody (the incremental run does, between scans).
    leave(store, "u2")
    resumed, forgotten = schedule(store)
    assert resumed.step is ScanStep.RESUME and forgotten == Forgotten()
    assert "u2" in rows_of(store, BRAND)["user_sources"]
    rescanned, forgotten = schedule(store, rescan=True)
    assert rescanned.step is ScanStep.RESCAN and forgotten.leavers == 1


def test_a_plan_refused_by_the_safety_rule_plans_nothing_and_forgets_nobody(store):
    open_ = schedule(store)[0]
    before = rows_of(store, BRAND)
    leave(store, "u1", "u2", "u3", "u4")
    with pytest.raises(TooManyLeaversError, match="4 of the 5 users"):
        schedule(store, rescan=True)
    assert rows_of(store, BRAND) == before
    # The rescan's abandoning of the open scan was rolled back with it: the scan still resumes.
    assert store.execute(
        "SELECT scan_id, abandoned FROM iys.initial_sync_scans WHERE brand_code = %s AND finished_at IS NULL", (BRAND,)
    ).fetchall() == [(open_.scan_id, False)]
    assert schedule(store)[0].scan_id == open_.scan_id

    planned, forgotten = schedule(store, rescan=True, max_leaver_share=0.8)
    assert planned.planned.users == 1 and forgotten.leavers == 4
