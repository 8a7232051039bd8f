"""The Airflow UI of ``make airflow``, in headless Chromium: what a person sees and can do.

* Admin → Connections → Add offers the type "İYS"; its form relabels the standard fields and
  renders the provider's "İYS code" and "Brand code" fields; a connection saved from it is of
  type iys with both codes in its extra.
* The DAG list shows iys_initial_sync, iys_incremental_sync, iys_reconciliation and iys_push.
* The trigger form of iys_initial_sync shows its Params, and a run triggered from it carries them.

The screenshots README.md and docs/development.md show (docs/*.png) are taken here: ``make screenshots``.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect
from ui.conftest import trigger  # tests/ is on sys.path (pytest.ini)

from iys_provider.operators.initial_sync import DEFAULT_BATCH_SIZE

pytestmark = pytest.mark.stack
INITIAL_SYNC_PARAMS = {
    # key: title shown in the form
    "iys_conn_id": "İYS connection",
    "postgres_conn_id": "Postgres connection",
    "rescan": "Rescan",
    "batch_size": "Batch size",
    "dry_run": "Dry run",
}
UI_CONN_ID = "iys_brand_from_ui"
DIALOG_VIEWPORT = {"width": 1280, "height": 1800}


def open_iys_connection_form(page, api_url: str, conn_id: str):
    """Admin → Connections → Add Connection, type İYS; returns the dialog."""
    page.set_viewport_size(DIALOG_VIEWPORT)  # the whole dialog on the screenshot
    page.goto(f"{api_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.locator("input[name=connection_id]").fill(conn_id)
    connection_type = dialog.get_by_role("combobox")
    connection_type.click()
    connection_type.fill("İYS")
    option = page.get_by_role("option", name="İYS", exact=True)
    expect(option).to_have_count(1)
    option.click()
    return dialog


def test_connection_form_offers_iys_with_its_fields(page, airflow_stack, screenshot_dir):
    dialog = open_iys_connection_form(page, airflow_stack.info["api_url"], UI_CONN_ID)

    # Standard fields, relabelled and with placeholders from ui-field-behaviour; schema and port hidden.
    for name, label in (("host", "API base URL"), ("login", "API username"), ("password", "API password")):
        expect(dialog.get_by_label(label, exact=True)).to_have_attribute("name", name)
    expect(dialog.locator("input[name=host]")).to_have_attribute("placeholder", "https://api.iys.org.tr")
    expect(dialog.locator("input[name=schema], input[name=port]")).to_have_count(0)
    dialog.locator("input[name=host]").fill("https://api.iys.org.tr")
    dialog.locator("input[name=login]").fill("api-user")
    dialog.locator("input[name=password]").fill("api-password")

    # The provider's conn-fields.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    iys_code = dialog.get_by_label("İYS code")
    brand_code = dialog.get_by_label("Brand code")
    expect(iys_code).to_be_visible()
    expect(brand_code).to_be_visible()
    expect(dialog.get_by_text("Your service provider (HS) İYS number", exact=False)).to_be_visible()
    for label in ("Request rate limit (per second)", "Shared state Postgres connection", "Verify TLS certificates"):
        expect(dialog.get_by_text(label, exact=True)).to_be_visible()
    iys_code.fill("123456")
    brand_code.fill("654321")
    expect(dialog.get_by_role("button", name="Save")).to_be_enabled()
    dialog.screenshot(path=screenshot_dir / "connection-form.png", animations="disabled")

    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("cell", name=UI_CONN_ID, exact=True)).to_be_visible()
    saved = airflow_stack.api(f"/connections/{UI_CONN_ID}")
    assert saved["conn_type"] == "iys"
    assert saved["host"] == "https://api.iys.org.tr"
    assert saved["login"] == "api-user"
    extra = json.loads(saved["extra"])
    assert (extra["iys_code"], extra["brand_code"]) == (123456, 654321)
    assert extra["shared_state_conn_id"] == "iys_postgres"
    assert extra["verify_ssl"] is True


def test_connection_form_saves_every_default(page, airflow_stack):
    dialog = open_iys_connection_form(page, airflow_stack.info["api_url"], "iys_defaults_from_ui")
    dialog.get_by_label("API username", exact=True).fill("api-user")
    dialog.get_by_label("API password", exact=True).fill("api-password")
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    dialog.get_by_label("İYS code").fill("123456")
    dialog.get_by_label("Brand code").fill("123456")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    extra = json.loads(airflow_stack.api("/connections/iys_defaults_from_ui")["extra"])
    assert extra["auth_requests_per_hour"] == 10


def test_trigger_form_of_initial_sync_shows_its_params(page, airflow_stack, screenshot_dir):
    page.set_viewport_size(DIALOG_VIEWPORT)
    page.goto(f"{airflow_stack.info['api_url']}/dags/iys_initial_sync")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Trigger Dag - iys_initial_sync")).to_be_visible()
    expect(dialog.get_by_text("Run Parameters")).to_be_visible()
    for key, title in INITIAL_SYNC_PARAMS.items():
        expect(dialog.locator(f"[name=element_{key}]")).to_have_count(1)
        label = dialog.locator("label").filter(has_text=re.compile(rf"^{re.escape(title)}\W*$"))
        expect(label.first).to_be_visible()
    expect(dialog.locator("[name=element_iys_conn_id]")).to_have_value("iys_default")
    expect(dialog.locator("[name=element_postgres_conn_id]")).to_have_value("iys_postgres")
    expect(dialog.locator("[name=element_batch_size]")).to_have_value(str(DEFAULT_BATCH_SIZE))
    dialog.screenshot(path=screenshot_dir / "trigger-initial-sync.png", animations="disabled")

    # The form works: a dry run with a smaller batch size.
    dialog.locator("[name=element_batch_size]").fill("1000")
    dialog.locator("label").filter(has=page.locator("[name=element_dry_run]")).click()
    expect(dialog.locator("[name=element_dry_run]")).to_be_checked()
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    expect(dialog).to_be_hidden()
    runs = airflow_stack.api("/dags/iys_initial_sync/dagRuns?run_type=manual&order_by=-run_after")["dag_runs"]
    assert runs, "the trigger form created no run"
    assert runs[0]["conf"]["dry_run"] is True
    assert runs[0]["conf"]["batch_size"] == 1000
    assert runs[0]["conf"]["iys_conn_id"] == "iys_default"


def test_dag_list_shows_the_four_dags(page, airflow_stack, screenshot_dir):
    # A run of its own (a dry run), so the list (and its screenshot) shows one in any test order.
    trigger(airflow_stack, "iys_initial_sync", {"dry_run": True})
    page.goto(f"{airflow_stack.info['api_url']}/dags")
    for dag_id in ("iys_initial_sync", "iys_incremental_sync", "iys_reconciliation", "iys_push"):
        expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
    expect(page.get_by_text("4 Dags", exact=True)).to_be_visible()
    page.screenshot(path=screenshot_dir / "dags.png", animations="disabled")
