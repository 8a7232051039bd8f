"""The İYS page of ``make airflow`` after a demo run, in headless Chromium (issue #16).

The demo run is what ``make demo`` does, through the stack's scheduler: ``iys_initial_sync``,
then citizens changing consents in the simulated İYS and the brand's app writing opt-outs to the
outbox, then ``iys_incremental_sync``. Then:

* anonymously, every route of the page's app answers 401, with no data;
* logged in, the side bar's "İYS" entry opens the page, and every panel holds data;
* the panels link to the run and task that produced them, a reconciliation day to its own
  (mapped) task instance.

The reconciliation panel says "not recorded" until ``iys_reconciliation`` has run (checked); the
test then runs it (the demo's movements are today's, so its days D-1 … D-7 hold none and are
agreed as empty) and finds the panel's days.

The screenshots README.md and docs/operations.md show (docs/iys-*.png) are taken here: ``make screenshots``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import psycopg
import pytest
from playwright.sync_api import expect
from ui.conftest import task_states, trigger, wait_for_run  # tests/ is on sys.path (pytest.ini)

pytestmark = pytest.mark.stack
PANELS = (
    "panel-consents",
    "panel-initial-sync",
    "panel-runs",
    "panel-outbox",
    "panel-quarantine",
    "panel-budget",
    "panel-reconciliation",
    "panel-push",
)
#: Empty after the demo's story: nothing has reconciled yet.
EMPTY_AFTER_DEMO = ("panel-reconciliation",)
FILLED_BY_DEMO = tuple(panel for panel in PANELS if panel not in EMPTY_AFTER_DEMO)
PAGE_VIEWPORT = {"width": 1400, "height": 2000}


def sim_post(stack, path: str, payload: dict) -> dict:
    request = urllib.request.Request(
        f"{stack.info['sim_url']}/__sim/{path}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def demo_run(airflow_stack) -> dict[str, str]:
    """``make demo``'s story on the stack: the two DAGs' run ids."""
    stack = airflow_stack
    initial = trigger(stack, "iys_initial_sync")
    state, _ = wait_for_run(stack, "iys_initial_sync", initial, timeout=600)
    assert state == "success", task_states(stack, "iys_initial_sync", initial)
    with psycopg.connect(stack.info["pg_dsn"], autocommit=True) as conn:
        brand = conn.execute("SELECT unnest(iys.synced_brands())").fetchone()[0]
        for (phone,) in conn.execute(
            "SELECT recipient FROM iys.consents WHERE type = 'MESAJ' AND status = 'ONAY' ORDER BY recipient LIMIT 2"
        ).fetchall():
            sim_post(
                stack,
                "citizen_change",
                {"recipient": phone, "type": "MESAJ", "status": "RET", "source": "IYS_KISAMESAJ"},
            )
        emails = conn.execute(
            "SELECT recipient FROM iys.consents WHERE type = 'EPOSTA' AND status = 'ONAY' ORDER BY recipient LIMIT 2"
        ).fetchall()
        # The brand's app: one user unsubscribes by e-mail, another re-confirms.
        for (email,), status in zip(emails, ("RET", "ONAY"), strict=True):
            conn.execute(
                "INSERT INTO iys.consent_updates (brand_code, recipient, type, status, consent_date, source) "
                "VALUES (%s, %s, 'EPOSTA', %s, now() - interval '5 minutes', 'HS_MOBIL')",
                (brand, email, status),
            )
    # The stack's push receiver is registered: the two citizen RETs came by push too.
    assert sim_post(stack, "push/wait_idle", {"timeout": 60})["idle"]
    sim_post(stack, "clock", {"advance_seconds": 3700})  # İYS withholds the last hour of its change feed
    incremental = trigger(stack, "iys_incremental_sync")
    state, _ = wait_for_run(stack, "iys_incremental_sync", incremental, timeout=600)
    assert state == "success", task_states(stack, "iys_incremental_sync", incremental)
    return {"initial": initial, "incremental": incremental, "brand": str(brand)}


def run_reconciliation(stack) -> str:
    # The stack's Airflow plans İYS's window (D-1 … D-7, Turkey time) by the machine's clock, and the
    # demo moved İYS's clock an hour on for its change feed: from 23:00 to midnight Turkey time İYS's
    # oldest day would be a day later than ours (422 H502 on D-7). One clock again, whatever the hour.
    sim_post(stack, "clock", {"offset_seconds": 0})
    run_id = trigger(stack, "iys_reconciliation")
    state, _ = wait_for_run(stack, "iys_reconciliation", run_id, timeout=600)
    assert state == "success", task_states(stack, "iys_reconciliation", run_id)
    return run_id


@pytest.mark.parametrize(
    "path",
    [
        "/iys/",
        "/iys/api/brands",
        "/iys/api/panels/700001",
        "/iys/api/push/700001",
        "/iys/static/index.html",
        "/iys/static/dashboard.js",
        "/iys/static/icon.svg",
        "/iys/openapi.json",
        "/iys/redoc",
        "/iys/docs",
    ],
)
def test_anonymous_requests_get_401_and_no_data(airflow_stack, demo_run, path):
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{airflow_stack.info['api_url']}{path}", timeout=30)
    assert answer.value.code == 401
    body = answer.value.read().decode()
    assert "EPOSTA" not in body and "panel-" not in body


def test_page_shows_every_panel_with_data_and_links(page, airflow_stack, demo_run, screenshot_dir):
    api_url = airflow_stack.info["api_url"]
    page.set_viewport_size(PAGE_VIEWPORT)
    page.goto(f"{api_url}/")
    # The side bar's own entry (nav_top_level), not one under "Plugins".
    page.get_by_role("link", name="İYS").first.click()
    page.wait_for_url(f"{api_url}/plugin/iys")
    # The side bar's icon is behind the login too: the browser's session cookie fetches it.
    assert page.request.get(f"{api_url}/iys/static/icon.svg").ok
    frame = page.frame_locator("iframe")
    expect(frame.locator("body[data-loaded]")).to_have_count(1)
    for panel in FILLED_BY_DEMO:
        expect(frame.locator(f"#{panel}")).to_have_attribute("data-state", "ready")
    # Before the reconciliation feature has written anything: "not recorded".
    reconciliation = frame.locator("#panel-reconciliation")
    expect(reconciliation).to_have_attribute("data-state", "empty")
    expect(reconciliation.get_by_text("not recorded")).to_be_visible()
    # The stack registered its receiver (İYS's test record reached every channel), and the demo's two
    # citizen RETs on MESAJ arrived by push.
    push = frame.locator("#panel-push")
    expect(push.get_by_text("no push received", exact=True)).to_have_count(0)
    expect(push.locator("th").nth(1)).to_have_text("MESAJ")
    applied_last_hour = push.locator("tr", has_text="applied, last hour").locator("td")
    expect(applied_last_hour.nth(1)).to_have_text("2")

    # Links to the run and task that produced the figures.
    incremental = demo_run["incremental"]
    runs_link = frame.locator("#panel-outbox a.source")
    expect(runs_link).to_have_attribute(
        "href", f"{api_url}/dags/iys_incremental_sync/runs/{_quoted(incremental)}/tasks/push_consent_updates"
    )
    expect(frame.locator("#panel-initial-sync a.source")).to_have_attribute(
        "href", f"{api_url}/dags/iys_initial_sync/runs"
    )
    expect(frame.locator("#panel-budget")).to_contain_text("success ratio, 24 h")
    expect(frame.locator("#panel-runs .lag-note")).to_contain_text(re.compile(r"feed lag: [0-9.]+ h"))
    expect(frame.locator("#panel-outbox")).to_contain_text("sent")
    expect(frame.locator("#panel-quarantine canvas")).to_be_visible()

    # Masked: the page never shows an address.
    text = frame.locator("main").inner_text()
    assert "@example.com" not in text and "+90" not in text

    # One more citizen says no in İYS: the open page shows it on its own within its 30-s refresh.
    citizen_ret_by_push(airflow_stack)
    expect(applied_last_hour.nth(1)).to_have_text("3")
    expect(push.locator("a.source")).to_have_attribute("href", f"{api_url}/dags/iys_push/runs")

    reconciliation_run = run_reconciliation(airflow_stack)
    page.reload()
    frame = page.frame_locator("iframe")
    for panel in PANELS:
        expect(frame.locator(f"#{panel}")).to_have_attribute("data-state", "ready")
    # Each day links to its own task instance: Airflow's API says which map index holds which day.
    instances = airflow_stack.api(
        f"/dags/iys_reconciliation/dagRuns/{_quoted(reconciliation_run)}/taskInstances?task_id=day.reconcile_day"
    )["task_instances"]
    index_of_day = {ti["rendered_map_index"]: ti["map_index"] for ti in instances if ti["map_index"] >= 0}
    day_links = frame.locator("#panel-reconciliation a")
    expect(day_links.first).to_be_visible()
    assert day_links.count() == len(index_of_day) > 0
    for link in day_links.all():
        day = link.inner_text()
        assert link.get_attribute("href") == (
            f"{api_url}/dags/iys_reconciliation/runs/{_quoted(reconciliation_run)}"
            f"/tasks/day.reconcile_day/mapped/{index_of_day[day]}"
        )
    page.screenshot(path=screenshot_dir / "iys-page-in-airflow.png", animations="disabled")

    # A panel's link opens the run in Airflow itself (target _top).
    runs_link = frame.locator("#panel-consents a.source")
    expect(runs_link).to_have_attribute("href", f"{api_url}/dags/iys_incremental_sync/runs/{_quoted(incremental)}")
    runs_link.click()
    page.wait_for_url(f"{api_url}/dags/iys_incremental_sync/runs/**")

    # A reconciliation day's link opens that day's task instance in Airflow itself.
    page.goto(f"{api_url}/plugin/iys")
    frame = page.frame_locator("iframe")
    expect(frame.locator("body[data-loaded]")).to_have_count(1)
    first_day = frame.locator("#panel-reconciliation a").first
    first_day_href = first_day.get_attribute("href")
    assert "/tasks/day.reconcile_day/mapped/" in first_day_href
    first_day.click()
    page.wait_for_url(first_day_href)


def test_whole_page_on_its_own(page, airflow_stack, demo_run, screenshot_dir):
    """The page outside its frame (same session cookie), for the full screenshot in docs/operations.md."""
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{airflow_stack.info['api_url']}/iys/")
    expect(page.locator("body[data-loaded]")).to_have_count(1)
    for panel in FILLED_BY_DEMO:
        expect(page.locator(f"#{panel}")).to_have_attribute("data-state", "ready")
    page.screenshot(path=screenshot_dir / "iys-page.png", full_page=True, animations="disabled")


def citizen_ret_by_push(stack) -> None:
    """A citizen's RET on MESAJ made in the simulator, pushed to the stack's receiver."""
    with psycopg.connect(stack.info["pg_dsn"], autocommit=True) as conn:
        (phone,) = conn.execute(
            "SELECT recipient FROM iys.consents WHERE type = 'MESAJ' AND status = 'ONAY' ORDER BY recipient LIMIT 1"
        ).fetchone()
    sim_post(stack, "citizen_change", {"recipient": phone, "type": "MESAJ", "status": "RET", "source": "IYS_WEB"})
    assert sim_post(stack, "push/wait_idle", {"timeout": 60})["idle"]


def _quoted(run_id: str) -> str:
    from urllib.parse import quote

    return quote(run_id, safe="")
