"""The İYS page's panel queries (iys_provider.plugins.dashboard_store) on a real PostgreSQL database.

Each test writes the rows the sync would have written (two brands, so every query must keep to its
brand) and reads the panels back through the read-only connection the page uses.
"""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from iys_provider.business_days import legal_deadline
from iys_provider.consent_store import record_sendable_counts, recorded_sendable_counts
from iys_provider.plugins import dashboard_store
from iys_provider.schema import migrate

BRAND = 700001
OTHER = 700002
RAW_PHONE = "0532 999 88 77"
RAW_EMAIL = "secret.person@example.com"


@pytest.fixture
def db(pg, pg_dsn):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    yield pg


def panels(pg_dsn: str, brand: int = BRAND, **kwargs) -> dict:
    with dashboard_store.read_only(lambda: psycopg.connect(pg_dsn)) as conn:
        return dashboard_store.read_panels(conn, brand, datetime.now(UTC), **kwargs)


def seed_brand(db, brand: int) -> None:
    db.execute(
        "INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%s, 'initial_sync', now())", (brand,)
    )


def test_an_empty_brand_shows_every_figure_as_not_recorded(db, pg_dsn):
    seed_brand(db, BRAND)
    shown = panels(pg_dsn)
    assert shown["consents"]["total"] == 0
    assert shown["consents"]["sendable"] is None
    assert shown["initial_sync"] is None
    assert shown["runs"]["rows"] == []
    assert shown["outbox"]["by_state"] == [] and shown["outbox"]["earliest_deadline"] is None
    assert shown["quarantine"]["by_reason"] == []
    assert shown["budget"]["keys"] == []
    assert shown["reconciliation"] is None  # no day reconciled yet


def test_brands_come_from_the_bookkeeping_and_the_runs(db, pg_dsn):
    seed_brand(db, OTHER)
    db.execute(
        "INSERT INTO iys.sync_runs (run_id, brand_code, dag_id) VALUES ('r', %s, 'iys_incremental_sync')", (BRAND,)
    )
    with dashboard_store.read_only(lambda: psycopg.connect(pg_dsn)) as conn:
        assert dashboard_store.brands(conn) == [BRAND, OTHER]


def test_consents_by_channel_and_status_and_the_sendable_count(db, pg_dsn):
    for brand in (BRAND, OTHER):
        db.execute(
            """
            INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status) VALUES
              (%(b)s, '+905320000001', 'BIREYSEL', 'MESAJ', 'ONAY'), (%(b)s, '+905320000001', 'BIREYSEL', 'ARAMA', 'RET'),
              (%(b)s, '+905320000002', 'BIREYSEL', 'MESAJ', 'ONAY'), (%(b)s, '+905320000002', 'BIREYSEL', 'ARAMA', NULL),
              (%(b)s, 'a@example.com', 'BIREYSEL', 'EPOSTA', 'ONAY'), (%(b)s, 'b@example.com', 'BIREYSEL', 'EPOSTA', 'RET')
            """,
            {"b": brand},
        )
    # Two users share the first phone; the second phone and b@ have no user (left): not sendable.
    db.execute(
        """
        INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient) VALUES
          (%(b)s, 'u1', 'phone', '+905320000001'), (%(b)s, 'u2', 'phone', '+905320000001'),
          (%(b)s, 'u1', 'email', 'a@example.com')
        """,
        {"b": BRAND},
    )
    # Before the sync has counted, the page says so rather than show 0.
    with dashboard_store.read_only(lambda: psycopg.connect(pg_dsn)) as conn:
        assert recorded_sendable_counts(conn, BRAND) == (None, None)
    record_sendable_counts(db, BRAND)  # what the sync's tasks do at the end of a run
    with dashboard_store.read_only(lambda: psycopg.connect(pg_dsn)) as conn:
        sendable, counted_at = recorded_sendable_counts(conn, BRAND)
    shown = panels(pg_dsn, sendable=sendable, sendable_counted_at=counted_at)["consents"]
    assert shown["counts"] == {
        "MESAJ": {"ONAY": 2, "RET": 0, "unknown": 0},
        "ARAMA": {"ONAY": 0, "RET": 1, "unknown": 1},
        "EPOSTA": {"ONAY": 1, "RET": 1, "unknown": 0},
    }
    assert shown["total"] == 6  # the other brand's six rows are not counted
    assert shown["sendable"] == {"MESAJ": 2, "ARAMA": 0, "EPOSTA": 1}  # users × channel, as iys.sendable
    assert shown["sendable_counted_at"] == counted_at.isoformat()


def test_initial_sync_shows_the_open_scan_with_its_progress_and_estimate(db, pg_dsn):
    # An abandoned scan and a finished one, then the open scan: the open one is shown.
    db.execute(
        """
        INSERT INTO iys.initial_sync_scans (scan_id, brand_code, recipients_sql, batch_size, total_users, batch_count,
                                            started_at, finished_at, abandoned) VALUES
          (1, %(b)s, 'q', 10, 40, 4, now() - interval '3 days', now() - interval '2 days', true),
          (2, %(b)s, 'q', 10, 40, 4, now() - interval '2 days', now() - interval '1 day', false),
          (3, %(b)s, 'q', 10, 40, 4, now() - interval '1 hour', NULL, false)
        """,
        {"b": BRAND},
    )
    db.execute(
        """
        INSERT INTO iys.initial_sync_batches (scan_id, batch_no, first_user_id, last_user_id, users, requests, finished_at)
        VALUES (3, 0, 'a', 'b', 10, 30, now()), (3, 1, 'c', 'd', 10, 30, now()),
               (3, 2, 'e', 'f', NULL, NULL, NULL), (3, 3, 'g', 'h', NULL, NULL, NULL)
        """
    )
    db.execute("INSERT INTO iys.rate_limiter (limiter_key, rate) VALUES ('api.example', 7.5)")
    shown = panels(pg_dsn)["initial_sync"]
    assert shown["scan_id"] == 3
    assert (shown["batches_done"], shown["batch_count"]) == (2, 4)
    assert (shown["users_done"], shown["total_users"]) == (20, 40)
    assert shown["finished_at"] is None and shown["level"] == "warning"
    assert 60 / 3700 < shown["requests_per_second"] < 60 / 3500  # 60 requests in about an hour
    eta = datetime.fromisoformat(shown["estimated_finish"]) - datetime.now(UTC)
    assert timedelta(minutes=55) < eta < timedelta(minutes=65)  # two batches left at 30 min each
    assert shown["learned_rate"] == 7.5
    assert shown["link"] == "dags/iys_initial_sync/runs"


def test_finished_scan_when_none_is_open(db, pg_dsn):
    db.execute(
        """
        INSERT INTO iys.initial_sync_scans (scan_id, brand_code, recipients_sql, batch_size, total_users, batch_count,
                                            started_at, finished_at)
        VALUES (5, %s, 'q', 10, 10, 1, now() - interval '2 hours', now() - interval '1 hour')
        """,
        (BRAND,),
    )
    db.execute("INSERT INTO iys.initial_sync_batches VALUES (5, 0, 'a', 'b', 10, 10, 0, 20, now() - interval '1 hour')")
    shown = panels(pg_dsn)["initial_sync"]
    assert shown["level"] == "ok"
    assert shown["estimated_finish"] == shown["finished_at"]
    assert shown["batches_done"] == 1


def test_last_thirty_runs_oldest_first_with_lag_levels_and_links(db, pg_dsn):
    for i in range(35):
        db.execute(
            """
            INSERT INTO iys.sync_runs (run_id, brand_code, dag_id, finished_at, pulled_iys, pulled_hs, applied,
                                       new_users_checked, pushed, skipped, rejected, failed, feed_lag_seconds)
            VALUES (%s, %s, 'iys_incremental_sync__brand_a', now() - make_interval(hours => 35 - %s),
                    %s, 1, 2, 3, 4, 5, 6, 7, %s)
            """,
            (f"run-{i:02d}", BRAND, i, i, i * 6 * 3600),
        )
    db.execute("INSERT INTO iys.sync_runs (run_id, brand_code, dag_id) VALUES ('other', %s, 'x')", (OTHER,))
    shown = panels(pg_dsn)
    rows = shown["runs"]["rows"]
    assert [r["run_id"] for r in rows] == [f"run-{i:02d}" for i in range(5, 35)]
    last = rows[-1]
    assert (last["pulled"], last["applied"], last["new_users"], last["pushed"]) == (35, 2, 3, 4)
    assert (last["skipped"], last["rejected"], last["failed"]) == (5, 6, 7)
    assert last["feed_lag_days"] == 8.5 and last["feed_lag_level"] == "danger"
    assert rows[0]["feed_lag_level"] == "ok"  # 30 h
    assert [r["feed_lag_level"] for r in rows].count("warning") == 4  # 6 d ≤ lag < 7 d: runs 24..27
    assert last["link"] == "dags/iys_incremental_sync__brand_a/runs/run-34/tasks/report"
    assert last["run_link"] == "dags/iys_incremental_sync__brand_a/runs/run-34"  # the per-run table's link
    assert shown["runs"]["link"] == "dags/iys_incremental_sync__brand_a/runs"
    assert shown["initial_sync"] is None
    assert shown["quarantine"]["link"] == "dags/iys_incremental_sync__brand_a/runs/run-34/tasks/check_new_users"


def test_outbox_by_state_and_code_and_the_oldest_unsent_ret_deadline(db, pg_dsn):
    consent_day = datetime.now(UTC) - timedelta(days=1)
    old_day = datetime.now(UTC) - timedelta(days=30)
    rows = [
        # (brand, status, state, code, consent_date)
        (BRAND, "RET", "pending", None, consent_day),
        (BRAND, "RET", "failed", "H500", consent_day),
        (BRAND, "RET", "pending", None, old_day),  # past its deadline
        (BRAND, "ONAY", "sent", None, consent_day),
        (BRAND, "ONAY", "rejected", "H174", consent_day),
        (BRAND, "ONAY", "rejected", "H174", consent_day),
        (OTHER, "RET", "pending", None, old_day),
    ]
    for brand, status, state, code, when in rows:
        db.execute(
            """
            INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state, error_code)
            VALUES (%s, %s, 'MESAJ', %s, %s, 'HS_WEB', %s, %s)
            """,
            (brand, "+905329998877", status, when, state, code),
        )
    shown = panels(pg_dsn)["outbox"]
    assert shown["by_state"] == [
        {"state": "failed", "code": "H500", "count": 1},
        {"state": "pending", "code": None, "count": 2},
        {"state": "rejected", "code": "H174", "count": 2},
        {"state": "sent", "code": None, "count": 1},
    ]
    assert (shown["unsent_rets"], shown["overdue_rets"]) == (2, 1)
    # The RETs not in İYS, oldest first, by outbox id: the overdue one, then the pending and the failed.
    listed = [(r["state"], r["code"], r["overdue"], r["acknowledged_at"]) for r in shown["undelivered"]]
    assert listed == [("pending", None, True, None), ("pending", None, False, None), ("failed", "H500", False, None)]
    assert shown["undelivered"][0]["deadline"] == legal_deadline(old_day).isoformat()
    db.execute("UPDATE iys.consent_updates SET acknowledged_at = now() WHERE consent_date = %s", (old_day,))
    acknowledged = panels(pg_dsn)["outbox"]
    assert (acknowledged["overdue_rets"], acknowledged["acknowledged_rets"]) == (0, 1)
    assert acknowledged["level"] != "danger"  # the others' deadlines are two business days or more away
    assert shown["earliest_deadline"] == legal_deadline(consent_day).isoformat()
    assert shown["level"] == "danger"  # one is overdue
    assert "+90532" not in json.dumps(shown)


def test_quarantine_is_counted_by_reason_without_raw_values(db, pg_dsn):
    for user, field, raw, reason in [
        ("u1", "phone", RAW_PHONE, "PHONE_INVALID"),
        ("u2", "phone", "12", "PHONE_INVALID"),
        ("u3", "email", RAW_EMAIL, "EMAIL_INVALID"),
    ]:
        db.execute(
            "INSERT INTO iys.rejected_recipients (brand_code, user_id, field, raw_value, reason) VALUES (%s, %s, %s, %s, %s)",
            (BRAND, user, field, raw, reason),
        )
    db.execute(
        "INSERT INTO iys.rejected_recipients (brand_code, user_id, field, raw_value, reason) "
        "VALUES (%s, 'x', 'phone', '1', 'EMPTY')",
        (OTHER,),
    )
    shown = panels(pg_dsn)
    assert shown["quarantine"]["by_reason"] == [
        {"reason": "PHONE_INVALID", "count": 2},
        {"reason": "EMAIL_INVALID", "count": 1},
    ]
    page = json.dumps(shown)
    assert RAW_PHONE not in page and RAW_EMAIL not in page and "u1" not in page


def test_budget_per_client_ip_tokens_block_requests_and_success_ratio(db, pg_dsn):
    key = "https://api.iys.example"
    db.execute(
        """
        INSERT INTO iys.token_requests (budget_key, account_key, grant_type, requested_at) VALUES
          (%(k)s, 'acc', 'password', now() - interval '10 minutes'),
          (%(k)s, 'acc', 'refresh_token', now() - interval '50 minutes'),
          (%(k)s, 'acc', 'password', now() - interval '2 hours')
        """,
        {"k": key},
    )
    db.execute(
        "INSERT INTO iys.ip_blocks (budget_key, blocked_until, block_reason) VALUES (%s, now() + interval '40 minutes', 'H084')",
        (key,),
    )
    db.execute(
        """
        INSERT INTO iys.api_responses (budget_key, hour, status, response_class, responses) VALUES
          (%(k)s, date_trunc('hour', now()), 200, 'success', 90),
          (%(k)s, date_trunc('hour', now()), 429, 'rate_limited', 4),
          (%(k)s, date_trunc('hour', now()) - interval '1 hour', 404, 'client_error', 10),
          (%(k)s, date_trunc('hour', now()) - interval '1 hour', 0, 'transport_error', 3),
          (%(k)s, date_trunc('hour', now()) - interval '5 hours', 200, 'success', 900),
          (%(k)s, date_trunc('hour', now()) - interval '30 hours', 404, 'client_error', 5000)
        """,
        {"k": key},
    )
    db.execute("INSERT INTO iys.rate_limiter (limiter_key, rate) VALUES (%s, 9.5)", (key,))
    (shown,) = panels(pg_dsn)["budget"]["keys"]
    assert shown["budget_key"] == key
    assert (shown["token_requests_last_hour"], shown["token_limit"]) == (2, 10)
    assert shown["blocked_until"] is not None and shown["block_reason"] == "H084"
    assert shown["token_level"] == "danger"
    assert (shown["requests"], shown["rate_limited"]) == (104, 4)  # the transport errors got no answer
    assert shown["requests_level"] == "warning"
    assert shown["success_ratio_24h"] == pytest.approx(990 / 1000)  # the 30-hour-old 404s are out of the window
    assert shown["ratio_level"] == "ok"
    assert shown["learned_rate"] == 9.5


def test_reconciliation_days_once_recorded_linking_to_the_reconciliation_run(db, pg_dsn):
    assert panels(pg_dsn)["reconciliation"] is None
    db.execute(
        "INSERT INTO iys.sync_runs (run_id, brand_code, dag_id) VALUES ('night-1', %s, 'iys_incremental_sync')",
        (BRAND,),
    )
    db.execute(
        """
        INSERT INTO iys.reconciliations (brand_code, report_date, status, agreed_at, run_id, updated_at) VALUES
          (%(b)s, current_date - 2, 'agreed', now(), 'night-1', now()),
          (%(b)s, current_date - 1, 'mismatch', NULL, 'night-1', now()),
          (%(o)s, current_date - 1, 'agreed', now(), 'x', now())
        """,
        {"b": BRAND, "o": OTHER},
    )
    shown = panels(pg_dsn)["reconciliation"]
    assert [d["status"] for d in shown["days"]] == ["mismatch", "agreed"]
    assert shown["level"] == "danger"
    # Rows written before the map index was recorded: the run, the best link there is.
    assert shown["days"][0]["link"] == "dags/iys_reconciliation/runs/night-1"
    # Agreed without an archive: the page says no evidence is kept for that day.
    assert [d["evidence_kept"] for d in shown["days"]] == [False, False]
    db.execute(
        "UPDATE iys.reconciliations SET archived_file = 'file:///e/d.csv', archived_timestamp = 'file:///e/d.tsr' "
        "WHERE brand_code = %s AND status = 'agreed'",
        (BRAND,),
    )
    assert [d["evidence_kept"] for d in panels(pg_dsn)["reconciliation"]["days"]] == [False, True]


def test_the_page_reads_in_a_read_only_transaction(db, pg_dsn):
    with dashboard_store.read_only(lambda: psycopg.connect(pg_dsn)) as conn:
        # A slow query cannot hold the API server's thread for long.
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "10s"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM iys.sync_runs")


def test_onay_addresses_held_out_now_by_opt_outs_not_yet_in_iys(db, pg_dsn):
    week_ago = datetime.now(UTC) - timedelta(days=7)
    for recipient, type_ in [("+905321110001", "MESAJ"), ("+905321110001", "ARAMA"), ("ali@example.com", "EPOSTA")]:
        db.execute(
            "INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status, consent_date) "
            "VALUES (%s, %s, 'BIREYSEL', %s, 'ONAY', %s)",
            (BRAND, recipient, type_, week_ago),
        )
    for recipient, type_, state in [
        ("0532 111 00 01", "MESAJ", "pending"),  # as the app writes it
        ("+90 532 111 0001", "MESAJ", "failed"),  # the same address again: counted once
        (" Ali@Example.com", "EPOSTA", "sent"),  # confirmed: our copy will say RET, nothing held
        ("0532 111 00 01", "ARAMA", "skipped"),
    ]:
        db.execute(
            "INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state) "
            "VALUES (%s, %s, %s, 'RET', now(), 'HS_MOBIL', %s)",
            (BRAND, recipient, type_, state),
        )
    assert panels(pg_dsn)["consents"]["held_out_now"] == {"MESAJ": 1}


# ---------------------------------------------------------------------------- push

PUSH_NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PUSH_PHONE = "+905551112233"


def push_panel(pg_dsn: str, brand: int = BRAND, now: datetime = PUSH_NOW) -> dict:
    with dashboard_store.read_only(lambda: psycopg.connect(pg_dsn)) as conn:
        return dashboard_store.push_panel(conn, brand, now)


def insert_movement(db, brand, channel, transaction_id, *, created, received, applied=None, announced=None):
    db.execute(
        """
        INSERT INTO iys.push_inbox (brand_code, transaction_id, channel, movement, creation_date, received_at,
                                    last_delivery_at, applied_at, announced_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            brand,
            transaction_id,
            channel,
            json.dumps({"recipient": PUSH_PHONE, "type": channel, "status": "RET", "transactionId": transaction_id}),
            created,
            received,
            received,
            applied,
            announced,
        ),
    )


def test_push_channels_never_heard_from_say_so_rather_than_show_zeros(db, pg_dsn):
    seed_brand(db, BRAND)
    # Another brand's receiver is busy: nothing of it shows for this brand.
    db.execute(
        "INSERT INTO iys.push_channels (brand_code, channel, last_push_at) VALUES (%s, 'MESAJ', %s)",
        (OTHER, PUSH_NOW),
    )
    insert_movement(db, OTHER, "ARAMA", "other-1", created=PUSH_NOW, received=PUSH_NOW, applied=PUSH_NOW)
    shown = push_panel(pg_dsn)
    assert shown["channels"] == [
        {"channel": channel, "heard_from": False, "level": "none"} for channel in ("MESAJ", "ARAMA", "EPOSTA")
    ]
    assert shown["level"] == "none"
    assert shown["link"] == "dags/iys_push/runs"
    # The whole page carries the same panel.
    assert panels(pg_dsn)["push"]["channels"] == shown["channels"]


def test_push_health_per_channel_from_the_inbox_tables(db, pg_dsn):
    seed_brand(db, BRAND)
    db.execute(
        "INSERT INTO iys.sync_runs (run_id, brand_code, dag_id) VALUES ('r', %s, 'iys_incremental_sync__brand_a')",
        (BRAND,),
    )
    now = PUSH_NOW
    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    db.execute(
        """
        INSERT INTO iys.push_channels (brand_code, channel, last_push_at, last_test_at) VALUES
          (%(b)s, 'MESAJ', %(push)s, %(test)s), (%(b)s, 'EPOSTA', NULL, %(test)s)
        """,
        {"b": BRAND, "push": now - minutes(2), "test": now - timedelta(days=3)},
    )
    # (transaction id, created, received, applied, announced) on MESAJ: the truth the panel must match.
    seconds = timedelta(seconds=1)
    movements = [
        ("t1", now - minutes(50), now - minutes(50) + 0.8 * seconds, now - minutes(50) + 0.8 * seconds, True),
        ("t2", now - minutes(40), now - minutes(40) + 1.2 * seconds, now - minutes(40) + 1.2 * seconds, True),
        ("t3", now - minutes(30), now - minutes(30) + 2.5 * seconds, now - minutes(30) + 2.5 * seconds, False),
        ("t4", now - minutes(20), now - minutes(20) + 3 * seconds, now - minutes(20) + 3 * seconds, False),
        # İYS's clock a little ahead of ours: a negative lag, shown as it is.
        ("t5", now - minutes(10), now - minutes(10) - 1.5 * seconds, now - minutes(10) - 1.5 * seconds, False),
        # Stored in time, applied 40 s later by the push DAG.
        ("t6", now - minutes(5), now - minutes(5) + seconds, now - minutes(5) + 40 * seconds, False),
        # Two hours old: out of the last hour.
        ("t7", now - minutes(121), now - minutes(120), now - minutes(120), True),
        # Received two hours ago, applied only ten minutes ago: applied in the hour, not received in it.
        ("t8", now - minutes(121), now - minutes(120), now - minutes(10), False),
        # Not applied yet.
        ("t9", now - minutes(21), now - minutes(20), None, False),
        ("t10", now - minutes(6), now - minutes(5), None, False),
        # After the reading's "now": not in its last hour.
        ("t11", now + minutes(1), now + minutes(2), now + minutes(2), True),
    ]
    for transaction_id, created, received, applied, announced in movements:
        insert_movement(
            db,
            BRAND,
            "MESAJ",
            transaction_id,
            created=created,
            received=received,
            applied=applied,
            announced=applied if announced else None,
        )
    insert_movement(db, OTHER, "MESAJ", "o1", created=now - minutes(1), received=now - minutes(1))
    for channel, brand, received, hash_ in [
        ("MESAJ", BRAND, now - timedelta(hours=3), "a"),
        ("MESAJ", BRAND, now - timedelta(hours=30), "b"),  # out of the 24 h
        ("EPOSTA", OTHER, now - timedelta(hours=1), "c"),
    ]:
        db.execute(
            "INSERT INTO iys.push_quarantine (brand_code, channel, position, reason, item, item_hash, received_at) "
            "VALUES (%s, %s, 0, 'no transactionId', %s, %s, %s)",
            (brand, channel, f'{{"recipient": "{PUSH_PHONE}"}}', hash_, received),
        )

    shown = push_panel(pg_dsn)
    mesaj, arama, eposta = shown["channels"]
    hour_ago = now - timedelta(hours=1)
    within = lambda moment: moment is not None and hour_ago < moment <= now  # noqa: E731
    applied_lags = [(a - c).total_seconds() for _, c, _, a, _ in movements if within(a)]
    assert len(applied_lags) == 7  # t1..t6 and t8
    assert mesaj["heard_from"] is True
    assert mesaj["last_push_at"] == (now - minutes(2)).isoformat()
    assert mesaj["last_test_at"] == (now - timedelta(days=3)).isoformat()
    assert mesaj["received_last_hour"] == sum(within(r) for _, _, r, _, _ in movements) == 8
    assert mesaj["applied_last_hour"] == len(applied_lags)
    assert mesaj["lag_p50_seconds"] == pytest.approx(statistics.median(applied_lags))
    assert mesaj["lag_p95_seconds"] == pytest.approx(statistics.quantiles(applied_lags, n=20, method="inclusive")[18])
    assert mesaj["lag_max_seconds"] == pytest.approx(max(applied_lags))
    unapplied = [r for _, _, r, a, _ in movements if a is None]
    assert mesaj["unapplied"] == len(unapplied) == 2
    assert mesaj["oldest_unapplied_received_at"] == min(unapplied).isoformat()
    assert mesaj["not_announced"] == sum(1 for _, _, _, a, told in movements if a is not None and not told)
    assert mesaj["quarantined_24h"] == 1
    assert mesaj["level"] == "warning"  # a quarantined item, and a movement unapplied for 20 minutes

    assert arama == {"channel": "ARAMA", "heard_from": False, "level": "none"}
    # Only the test record so far: heard from, real zeros, no push yet.
    assert eposta["heard_from"] is True and eposta["last_push_at"] is None
    assert (eposta["received_last_hour"], eposta["applied_last_hour"], eposta["unapplied"]) == (0, 0, 0)
    assert eposta["lag_p50_seconds"] is None and eposta["quarantined_24h"] == 0  # the other brand's item
    assert eposta["level"] == "ok"

    assert shown["level"] == "warning"
    assert shown["link"] == "dags/iys_push__brand_a/runs"
    assert PUSH_PHONE not in json.dumps(shown)


def test_a_reconciliation_day_links_to_its_own_mapped_task_instance(db, pg_dsn):
    db.execute(
        "INSERT INTO iys.sync_runs (run_id, brand_code, dag_id) VALUES ('r', %s, 'iys_incremental_sync__brand_a')",
        (BRAND,),
    )
    run_id = "scheduled__2026-12-01T02:30:00+00:00"
    db.execute(
        """
        INSERT INTO iys.reconciliations (brand_code, report_date, status, run_id, map_index) VALUES
          (%(b)s, DATE '2026-11-30', 'agreed', %(run)s, 0), (%(b)s, DATE '2026-11-29', 'pending', %(run)s, 1)
        """,
        {"b": BRAND, "run": run_id},
    )
    days = panels(pg_dsn)["reconciliation"]["days"]
    # The Airflow 3 UI's route of a mapped task instance: /dags/<dag>/runs/<run>/tasks/<task>/mapped/<index>.
    quoted_run = "scheduled__2026-12-01T02%3A30%3A00%2B00%3A00"
    assert [d["link"] for d in days] == [
        f"dags/iys_reconciliation__brand_a/runs/{quoted_run}/tasks/day.reconcile_day/mapped/0",
        f"dags/iys_reconciliation__brand_a/runs/{quoted_run}/tasks/day.reconcile_day/mapped/1",
    ]


def test_a_caught_up_feed_says_when_every_stream_was_last_read_to_its_end(db, pg_dsn):
    db.execute(
        "INSERT INTO iys.sync_runs (run_id, brand_code, dag_id, pulled_iys, feed_lag_seconds) "
        "VALUES ('quiet', %s, 'iys_incremental_sync', 0, NULL)",
        (BRAND,),
    )
    iys_read = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    hs_read = datetime(2026, 12, 1, 8, 55, tzinfo=UTC)
    # Only one stream read so far: the feed cannot be called caught up.
    db.execute(
        "INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%s, 'changes:IYS', %s)",
        (BRAND, iys_read),
    )
    db.execute(
        "INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%s, 'changes:HS', NULL)", (BRAND,)
    )
    db.execute(
        "INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%s, 'changes:IYS', %s)",
        (OTHER, iys_read + timedelta(hours=5)),
    )
    assert panels(pg_dsn)["runs"]["feed_read_to_end_at"] is None
    db.execute(
        "UPDATE iys.sync_state SET last_success_at = %s WHERE brand_code = %s AND stream = 'changes:HS'",
        (hs_read, BRAND),
    )
    shown = panels(pg_dsn)["runs"]
    assert shown["rows"][-1]["feed_lag_days"] is None  # the quiet run recorded no lag
    assert datetime.fromisoformat(shown["feed_read_to_end_at"]) == hs_read  # the older of the two streams


def test_a_budget_names_the_iys_host_and_egress_label_it_is_kept_for(db, pg_dsn):
    db.execute(
        "INSERT INTO iys.rate_limiter (limiter_key, rate) VALUES ('127.0.0.1:8099', 5), ('api.iys.gov.tr|nat-b', 8)"
    )
    keys = {k["budget_key"]: k for k in panels(pg_dsn)["budget"]["keys"]}
    assert (keys["127.0.0.1:8099"]["iys_host"], keys["127.0.0.1:8099"]["egress_label"]) == ("127.0.0.1:8099", None)
    assert (keys["api.iys.gov.tr|nat-b"]["iys_host"], keys["api.iys.gov.tr|nat-b"]["egress_label"]) == (
        "api.iys.gov.tr",
        "nat-b",
    )
