"""The İYS page as a browser draws it, against a real PostgreSQL database and Airflow's own auth manager.

The page's app is served by uvicorn as the API server mounts it (under ``/iys`` of an app whose
auth manager is Airflow's configured SimpleAuthManager); headless Chromium carries a token that
auth manager signed, as the Airflow UI's session cookie. The panels' clock is fixed, so every
expected time is computed here from the fixed moment with ``zoneinfo`` (not by the page's code),
and every figure from the rows this test wrote. No full Airflow stack is needed: test_iys_page.py
covers the page inside a running Airflow.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.sync_api import expect

from iys_provider.consent_store import record_sendable_counts
from iys_provider.schema import migrate

pytestmark = pytest.mark.stack
BRAND = 700001
#: The panels' "now": Wednesday 2 December 2026, 09:30 UTC.
NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
TURKEY = ZoneInfo("Europe/Istanbul")
SERVER_START_TIMEOUT = 30.0


def shown(moment: datetime, zone: str) -> str:
    """A moment as the page must label it: local date and time in ``zone``, then its UTC offset."""
    local = moment.astimezone(ZoneInfo(zone))
    offset = local.utcoffset()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    label = "UTC" if minutes == 0 else f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")
    return f"{local:%Y-%m-%d %H:%M} {label}"


@pytest.fixture
def db(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    pg.execute(
        "INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%s, 'initial_sync', %s)", (BRAND, NOW)
    )
    return pg


@pytest.fixture
def page_url(airflow_db, db, pg_dsn) -> Iterator[str]:
    """The page's app under /iys on a uvicorn server of its own; yields the server's base URL."""
    import uvicorn
    from airflow.api_fastapi.app import init_auth_manager
    from fastapi import FastAPI

    from iys_provider.plugins.app import create_dashboard_app

    root = FastAPI()
    init_auth_manager(root)
    root.mount("/iys", create_dashboard_app(lambda: psycopg.connect(pg_dsn), clock=lambda: NOW))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.started:  # a condition with a deadline, not a fixed wait
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=SERVER_START_TIMEOUT)


def open_page(browser, base_url: str, *, browser_zone: str, airflow_ui_zone: str | None):
    """A logged-in tab on the page; ``airflow_ui_zone``: the zone the user picked in the Airflow UI, if any."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="viewer", role="VIEWER"))
    context = browser.new_context(timezone_id=browser_zone, viewport={"width": 1400, "height": 2000})
    context.add_cookies([{"name": "_token", "value": token, "url": base_url}])
    if airflow_ui_zone is not None:
        # What the Airflow UI's time zone menu stores: the zone JSON-encoded, under "timezone".
        context.add_init_script(f"window.localStorage.setItem('timezone', JSON.stringify({airflow_ui_zone!r}))")
    page = context.new_page()
    page.goto(f"{base_url}/iys/")
    expect(page.locator("body[data-loaded]")).to_have_count(1)
    return page


def insert_run(db, run_id: str, finished_at: datetime, figures: tuple[int, ...], lag: int | None) -> None:
    db.execute(
        """
        INSERT INTO iys.sync_runs (run_id, brand_code, dag_id, finished_at, pulled_iys, pulled_hs, applied,
                                   new_users_checked, pushed, skipped, rejected, failed, feed_lag_seconds)
        VALUES (%s, %s, 'iys_incremental_sync', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (run_id, BRAND, finished_at, *figures, lag),
    )


def test_a_quiet_brand_zero_runs_a_caught_up_feed_and_an_empty_outbox(browser, page_url, db):
    for hours_ago in (3, 2, 1):
        insert_run(db, f"quiet-{hours_ago}", NOW - timedelta(hours=hours_ago), (0,) * 8, None)
    iys_read, hs_read = NOW - timedelta(minutes=58), NOW - timedelta(minutes=59)
    for stream, read in (("changes:IYS", iys_read), ("changes:HS", hs_read)):
        db.execute(
            "INSERT INTO iys.sync_state (brand_code, stream, last_success_at) VALUES (%s, %s, %s)",
            (BRAND, stream, read),
        )
    db.execute("INSERT INTO iys.rate_limiter (limiter_key, rate) VALUES ('127.0.0.1:8099', 5)")
    page = open_page(browser, page_url, browser_zone="Australia/Adelaide", airflow_ui_zone=None)

    # No zone chosen in the Airflow UI: the browser's own, as the UI defaults; labelled.
    expect(page.locator("#generated")).to_have_text(f"as of {shown(NOW, 'Australia/Adelaide')}")
    assert shown(NOW, "Australia/Adelaide") == "2026-12-02 20:00 UTC+10:30"
    expect(page.locator("#zone")).to_contain_text("times in Australia/Adelaide")

    # A run that pulled nothing records no lag: the page says the feed is caught up, and since when
    # (the older of the two streams' last complete reads), not "not recorded".
    note = page.locator("#panel-runs .lag-note")
    expect(note).to_contain_text("feed caught up")
    expect(note).to_contain_text(shown(hs_read, "Australia/Adelaide"))
    expect(note).not_to_contain_text("not recorded")

    # All-zero runs: the count axis starts at 0 and runs to a whole-number maximum, not −1…1.
    scale = page.evaluate(
        "() => { const y = Chart.getChart(document.getElementById('chart-runs')).scales.y;"
        " return {min: y.min, max: y.max, ticks: y.ticks.map((t) => t.value)}; }"
    )
    assert scale["min"] == 0 and scale["max"] >= 1
    assert all(float(tick).is_integer() for tick in scale["ticks"])
    # Seven series all on 0: each drawn distinguishably (its own dash and point style).
    styles = page.evaluate(
        "() => Chart.getChart(document.getElementById('chart-runs')).data.datasets"
        ".map((d) => JSON.stringify([d.borderDash, d.pointStyle]))"
    )
    assert len(styles) == 7 and len(set(styles)) == 7

    # The user picks a zone at UTC+0 in the Airflow UI: plain "UTC" after the offset.
    page.evaluate("() => window.localStorage.setItem('timezone', JSON.stringify('Europe/London'))")
    page.reload()
    expect(page.locator("body[data-loaded]")).to_have_count(1)
    expect(page.locator("#generated")).to_have_text(f"as of {shown(NOW, 'Europe/London')}")
    assert shown(NOW, "Europe/London") == "2026-12-02 09:30 UTC"
    expect(page.locator("#zone")).to_contain_text("times in Europe/London")

    # An empty outbox says so, not a bare table header.
    outbox = page.locator("#panel-outbox")
    expect(outbox.locator("table.states")).to_have_text("Nothing waiting: the outbox holds no consent change.")
    expect(outbox.locator("table.states th")).to_have_count(0)

    # The budget names İYS's host it is kept for, never a "client IP".
    budget = page.locator("#panel-budget")
    expect(budget.locator("h3")).to_have_text("İYS host 127.0.0.1:8099")
    expect(budget).not_to_contain_text("client IP")


def test_figures_times_and_links_match_the_database(browser, page_url, db):
    # Runs: equal series (pulled = applied) and a lag; figures from these rows are the truth.
    insert_run(
        db, "scheduled__2026-12-02T07:00:00+00:00", NOW - timedelta(hours=2), (4, 1, 5, 2, 3, 1, 1, 0), 3600 * 30
    )
    insert_run(db, "manual__2026-12-02T08:00:00+00:00", NOW - timedelta(hours=1), (7, 0, 7, 7, 7, 0, 0, 2), 3600 * 2)
    # A RET given on Monday 30 November (Turkey time), not yet in İYS: three business days (Tue, Wed,
    # Thu), so the window closes at 00:00 Turkey time on Friday 4 December.
    db.execute(
        "INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source, state) "
        "VALUES (%s, '+905329998877', 'MESAJ', 'RET', %s, 'HS_WEB', 'pending')",
        (BRAND, datetime(2026, 11, 30, 10, 0, tzinfo=TURKEY)),
    )
    # Two users share one phone with ONAY: sendable users (2) exceed the ONAY addresses (1).
    db.execute(
        "INSERT INTO iys.consents (brand_code, recipient, recipient_type, type, status) "
        "VALUES (%s, '+905320000001', 'BIREYSEL', 'MESAJ', 'ONAY')",
        (BRAND,),
    )
    db.execute(
        "INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient) "
        "VALUES (%(b)s, 'u1', 'phone', '+905320000001'), (%(b)s, 'u2', 'phone', '+905320000001')",
        {"b": BRAND},
    )
    record_sendable_counts(db, BRAND)
    reconciliation_run = "scheduled__2026-12-02T02:30:00+00:00"
    db.execute(
        "INSERT INTO iys.reconciliations (brand_code, report_date, status, agreed_at, run_id, map_index) VALUES "
        "(%(b)s, DATE '2026-12-01', 'agreed', %(agreed)s, %(run)s, 0), "
        "(%(b)s, DATE '2026-11-30', 'mismatch', NULL, %(run)s, 1)",
        {"b": BRAND, "run": reconciliation_run, "agreed": NOW - timedelta(hours=6)},
    )
    zone = "America/New_York"
    page = open_page(browser, page_url, browser_zone="Asia/Tokyo", airflow_ui_zone=zone)

    # The zone the user chose in the Airflow UI wins over the browser's.
    expect(page.locator("#generated")).to_have_text(f"as of {shown(NOW, zone)}")
    assert shown(NOW, zone) == "2026-12-02 04:30 UTC-5"
    expect(page.locator("#zone")).to_contain_text(f"times in {zone}")

    # Legal deadlines in Turkey time, labelled as such, whatever the UI's zone.
    deadline = "2026-12-04 00:00 Turkey time (UTC+3)"
    outbox = page.locator("#panel-outbox")
    expect(outbox.locator("table.deadline")).to_contain_text(deadline)
    expect(outbox.locator("table.undelivered")).to_contain_text(deadline)
    expect(outbox.locator("table.undelivered")).to_contain_text(
        shown(datetime(2026, 11, 30, 10, 0, tzinfo=TURKEY), zone)  # the consent date: an ordinary time
    )

    # The per-run table: one row per run, newest first, each figure as the database holds it.
    expected = db.execute(
        """
        SELECT run_id, finished_at, pulled_iys + pulled_hs, applied, new_users_checked, pushed, skipped, rejected,
               failed, feed_lag_seconds
          FROM iys.sync_runs WHERE brand_code = %s ORDER BY finished_at DESC
        """,
        (BRAND,),
    ).fetchall()
    table = page.locator("#panel-runs table.runs")
    expect(table.locator("tr[data-run-id]")).to_have_count(len(expected))
    for row, (run_id, finished, *figures, lag) in zip(table.locator("tr[data-run-id]").all(), expected, strict=True):
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == shown(finished, zone)
        assert cells[1:8] == [str(n) for n in figures]
        assert cells[8] == f"{lag / 3600:.1f} h"
        assert row.get_attribute("data-run-id") == run_id
        assert (
            row.locator("a").get_attribute("href")
            == f"{page_url}/dags/iys_incremental_sync/runs/{quote(run_id, safe='')}"
        )

    # Series with equal values stay distinguishable (the latest run: pulled = applied = new users = pushed = 7).
    styles = page.evaluate(
        "() => Chart.getChart(document.getElementById('chart-runs')).data.datasets"
        ".map((d) => JSON.stringify([d.borderDash, d.pointStyle]))"
    )
    assert len(set(styles)) == len(styles) == 7
    # … and the legend gives each series' latest value, read from the newest row.
    latest = dict(
        zip(
            ("pulled", "applied", "new users", "pushed", "skipped", "rejected", "failed"), expected[0][2:9], strict=True
        )
    )
    legend = page.evaluate(
        "() => Chart.getChart(document.getElementById('chart-runs')).data.datasets.map((d) => d.label)"
    )
    assert legend == [f"{name} (latest {value})" for name, value in latest.items()]

    # Sendable users above ONAY: a one-line note says why.
    consents = page.locator("#panel-consents")
    expect(consents.locator("tr", has_text="MESAJ").locator("td").nth(1)).to_have_text("1")  # ONAY
    expect(consents.locator("tr", has_text="MESAJ").locator("td").nth(4)).to_have_text("2")  # sendable users
    expect(consents.locator(".sendable-note")).to_contain_text("share one phone number or e-mail address")

    # A reconciliation day opens its own task instance (mapped index) in the Airflow UI.
    links = page.locator("#panel-reconciliation a")
    quoted = quote(reconciliation_run, safe="")
    for index in (0, 1):
        expect(links.nth(index)).to_have_attribute(
            "href", f"{page_url}/dags/iys_reconciliation/runs/{quoted}/tasks/day.reconcile_day/mapped/{index}"
        )
    expect(page.locator("#panel-reconciliation")).to_contain_text(shown(NOW - timedelta(hours=6), zone))

    # No personal data on the page.
    text = page.locator("main").inner_text()
    assert "+90532" not in text and "905320000001" not in text
