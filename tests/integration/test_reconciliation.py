"""The daily reconciliation through the simulator over HTTP and real Postgres (issue #15's "done when").

Green at any hour, also in the 15 minutes after Turkish midnight when D-1 is not asked for yet: to
check, run the module at 21:05 UTC with libfaketime, in a network namespace without the server at
127.0.0.1:5432 so the embedded PostgreSQL runs on the same clock::

    unshare -n sh -c 'ip link set lo up; faketime -f "@2026-12-04 21:05:00" \
        .venv/bin/python -m pytest tests/integration/test_reconciliation.py'
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, date, datetime, timedelta

import pytest
import requests
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException, TaskDeferred
from incremental_support import consent, pull

from iys_provider.models import IYS_TIMEZONE
from iys_provider.operators.reconciliation import (
    IysCompareSummaryOperator,
    IysPlanReconciliationOperator,
    IysReconcileDayOperator,
    IysReconciliationReportOperator,
    default_archive_location,
)
from iys_provider.reconciliation.rules import reconciliation_window
from iys_provider.sensors.reconciliation import IysReconciliationHashSensor
from iys_provider.triggers.reconciliation_hash import IysReconciliationHashTrigger
from tests_support import SIM_BRAND_CODE, first_event_after, rebuilt_trigger, sim_control

PHONE_A, PHONE_B, PHONE_C = "+905321110101", "+905321110102", "+905321110103"
EMAIL = "ayse@example.com"


def turkey_today() -> date:
    return datetime.now(UTC).astimezone(IYS_TIMEZONE).date()


def days_ago(days: int) -> date:
    """A day inside İYS's window at any hour: D-2 … D-6 (near Turkish midnight the product leaves out
    D-1, in the first 15 minutes after it, or D-7, in the last 15 before it)."""
    assert 2 <= days <= 6, f"D-{days} leaves İYS's window at some hour of the day"
    return turkey_today() - timedelta(days=days)


@pytest.fixture
def world(sim, pg):
    """A fresh iys schema and an empty default archive; İYS's hash jobs finish at once unless a test says otherwise."""
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    shutil.rmtree(default_archive().path, ignore_errors=True)
    sim_control(sim, "config", {"reconciliation_queue_seconds": 0, "reconciliation_hash_seconds": 0})
    sim_control(sim, "requests/reset")
    return sim


def default_archive() -> ObjectStoragePath:
    """Where a default install keeps the evidence (under the test session's Airflow home)."""
    return ObjectStoragePath(default_archive_location())


def archived(day: date, suffix: str, archive: ObjectStoragePath | None = None) -> ObjectStoragePath:
    folder = (archive or default_archive()) / str(SIM_BRAND_CODE) / day.isoformat()
    return folder / f"iys_{SIM_BRAND_CODE}_{day}.{suffix}"


def movements_on(sim, day: date) -> list[str]:
    """A day of both streams: citizens' own changes (IYS_*) and service-provider writes (HS_*); their ids."""
    ids = []
    for recipient, type_, status, source, at in (
        (PHONE_A, "MESAJ", "ONAY", "IYS_WEB", "09:00:00"),
        (PHONE_A, "MESAJ", "RET", "IYS_KISAMESAJ", "11:30:00"),
        (PHONE_B, "ARAMA", "ONAY", "IYS_MOBIL", "11:30:00"),
        (EMAIL, "EPOSTA", "ONAY", "IYS_WEB", "23:59:59"),
    ):
        answer = sim_control(
            sim,
            "citizen_change",
            {"recipient": recipient, "type": type_, "status": status, "source": source, "creationDate": f"{day} {at}"},
        )
        ids.append(answer["transactionId"])
    injected = sim_control(
        sim,
        "inject_events",
        {
            "events": [
                {
                    "recipient": PHONE_C,
                    "type": "MESAJ",
                    "status": "ONAY",
                    "source": "HS_WEB",
                    "stream": "HS",
                    "consentDate": f"{day} 07:59:00",
                    "creationDate": f"{day} 08:00:00",
                    "apply": True,
                }
            ]
        },
    )
    ids.extend(event["transactionId"] for event in injected["events"])
    return ids


def pull_both():
    pull("IYS")
    pull("HS")


def run_day(day: date, *, context: dict | None = None, **options):
    """The per-day tasks of the DAG, in order, with their defaults unless ``options`` say: summary, hash
    wait (one poke), reconcile."""
    context = context or {"run_id": "night-1"}
    report_date = day.isoformat()
    IysCompareSummaryOperator(task_id="compare_summary", report_date=report_date).execute(context)
    poke = IysReconciliationHashSensor(task_id="wait_for_hash", report_date=report_date).poke(context)
    assert poke.is_done
    return IysReconcileDayOperator(task_id="reconcile_day", report_date=report_date, **options).execute(context)


def reconciliation(pg, day: date) -> dict:
    cur = pg.execute(
        "SELECT * FROM iys.reconciliations WHERE brand_code = %s AND report_date = %s", (SIM_BRAND_CODE, day)
    )
    names = [column.name for column in cur.description]
    row = cur.fetchone()
    return dict(zip(names, row, strict=True)) if row else {}


def iys_requests(sim) -> list[dict]:
    return sim_control(sim, "requests", method="GET")["requests"]


def test_a_clean_day_is_agreed(world, pg):
    sim = world
    day = days_ago(2)
    movements_on(sim, day)
    pull_both()

    planned = IysPlanReconciliationOperator(task_id="plan_days", report_date=day.isoformat()).execute(
        {"run_id": "night-1"}
    )
    assert planned == [day.isoformat()]
    result = run_day(day)

    assert result["status"] == "agreed" and result["movements_ours"] == 5 and result["repaired"] == 0
    row = reconciliation(pg, day)
    expected_hash = hashlib.sha384(sim_daily_file(sim, day)).hexdigest()
    assert row["status"] == "agreed" and row["agreed_at"] is not None and row["run_id"] == "night-1"
    assert row["hash_ours"] == row["hash_iys"] == expected_hash and row["hash_method"] == "sha384"
    assert row["summary_ours"] == row["summary_iys"]
    assert row["summary_iys"]["MESAJ"]["IYS"] == {"approval": 1, "rejection": 1, "pending": 0, "total": 2}
    assert row["summary_iys"]["MESAJ"]["HS"]["approval"] == 1
    assert row["difference"] is None and row["file_layout"] == "literal"
    # A default install keeps the evidence: our file (equal to İYS's, the hashes are) and the .tsr.
    assert row["archived_file"] == str(archived(day, "csv")) and row["archived_timestamp"] == str(archived(day, "tsr"))
    assert archived(day, "csv").read_bytes() == sim_daily_file(sim, day)
    puts = [r for r in iys_requests(sim) if r["method"] == "PUT"]
    assert puts == [
        {
            "method": "PUT",
            "path": f"/sps/700001/brands/{SIM_BRAND_CODE}/agreements/{day}",
            "endpoint": "agreement_put",
            "status": 200,
        }
    ]
    assert not [r for r in iys_requests(sim) if r["endpoint"] == "reconciliation_file"]  # no download needed

    # The next run plans nothing for the day: it is agreed.
    assert IysPlanReconciliationOperator(task_id="plan_days", report_date=day.isoformat()).execute({}) == []
    report = IysReconciliationReportOperator(task_id="report", report_dates=planned).execute({"run_id": "night-1"})
    assert report == {"days": 1, "agreed": [day.isoformat()], "waiting": [], "failed": [], "consent_changes": 0}


def sim_daily_file(sim, day: date) -> bytes:
    return sim_control(sim, f"daily_file?reportDate={day}", method="GET")["content"].encode("utf-8")


def test_a_movement_missing_from_the_feed_is_repaired_from_the_file_then_agreed_and_archived(world, pg, tmp_path):
    sim = world
    day = days_ago(2)
    ids = movements_on(sim, day)
    lost = ids[1]  # PHONE_A's RET: our copy would keep a stale ONAY
    sim_control(sim, "faults", {"feed_omits_transactions": [lost]})
    pull_both()
    assert pg.execute("SELECT count(*) FROM iys.consent_events WHERE transaction_id = %s", (lost,)).fetchone()[0] == 0
    assert (
        pg.execute("SELECT status FROM iys.consents WHERE recipient = %s AND type = 'MESAJ'", (PHONE_A,)).fetchone()[0]
        == "ONAY"
    )

    archive = ObjectStoragePath(tmp_path.as_uri()) / "iys-archive"
    result = run_day(day, archive_location=str(archive))

    assert result == {
        "report_date": day.isoformat(),
        "status": "repaired_and_agreed",
        "movements_ours": 5,
        "repaired": 1,
        "archived": True,
    }
    row = reconciliation(pg, day)
    assert row["status"] == "repaired_and_agreed" and row["agreed_at"] is not None
    assert row["hash_ours"] == row["hash_iys"] == row["hash_file"]
    assert row["difference"]["missing"] == {"MESAJ": {"IYS": 1}} and row["difference"]["extra_total"] == 0
    assert row["repaired"] == 1
    # Stored and applied by the feed's own rules: the newer RET wins, the feed's cursor did not move back.
    event = pg.execute(
        "SELECT status, stream, source FROM iys.consent_events WHERE transaction_id = %s", (lost,)
    ).fetchone()
    assert event == ("RET", "IYS", "IYS_KISAMESAJ")
    assert (
        pg.execute("SELECT status FROM iys.consents WHERE recipient = %s AND type = 'MESAJ'", (PHONE_A,)).fetchone()[0]
        == "RET"
    )
    listed = pg.execute(
        "SELECT transaction_id, kind, type, source, repaired FROM iys.reconciliation_movements WHERE report_date = %s",
        (day,),
    ).fetchall()
    assert listed == [(lost, "missing", "MESAJ", "IYS_KISAMESAJ", True)]

    # The archive holds İYS's file and its timestamp, named by brand and date.
    folder = archive / str(SIM_BRAND_CODE) / day.isoformat()
    csv_file, tsr_file = folder / f"iys_{SIM_BRAND_CODE}_{day}.csv", folder / f"iys_{SIM_BRAND_CODE}_{day}.tsr"
    assert row["archived_file"] == str(csv_file) and row["archived_timestamp"] == str(tsr_file)
    assert csv_file.read_bytes() == sim_daily_file(sim, day)
    assert hashlib.sha384(csv_file.read_bytes()).hexdigest() == row["hash_iys"]
    stamp = tsr_file.read_bytes()
    assert stamp.startswith(b"IYS-SIM-TSR\x00") and stamp.endswith(hashlib.sha384(csv_file.read_bytes()).digest())

    # Archived evidence is never overwritten: a second archive run leaves the same file.
    before = csv_file.read_bytes()
    assert (
        IysPlanReconciliationOperator(
            task_id="plan_days", report_date=day.isoformat(), archive_location=str(archive)
        ).execute({})
        == []
    )
    assert csv_file.read_bytes() == before


def test_an_agreed_day_is_archived_from_our_own_file_when_no_download_was_needed(world, pg, tmp_path):
    sim = world
    day = days_ago(3)
    movements_on(sim, day)
    pull_both()
    archive = tmp_path.as_uri()
    result = run_day(day, archive_location=archive)
    assert result["status"] == "agreed" and result["archived"]
    folder = ObjectStoragePath(archive) / str(SIM_BRAND_CODE) / day.isoformat()
    # Our bytes, equal to İYS's (the hashes are): no download of İYS's file was needed.
    assert (folder / f"iys_{SIM_BRAND_CODE}_{day}.csv").read_bytes() == sim_daily_file(sim, day)
    assert not [r for r in iys_requests(sim) if r["endpoint"] == "reconciliation_file"]
    assert [r["status"] for r in iys_requests(sim) if r["endpoint"] == "reconciliation_timestamp"] == [200]


def test_a_hash_error_is_reported_and_fails_the_run_after_the_other_days(world, pg):
    sim = world
    bad, good = days_ago(4), days_ago(5)
    movements_on(sim, bad)
    movements_on(sim, good)
    sim_control(sim, "config", {"reconciliation_job_modes": {bad.isoformat(): "error"}})
    pull_both()
    context = {"run_id": "night-2"}

    IysCompareSummaryOperator(task_id="compare_summary", report_date=bad.isoformat()).execute(context)
    with pytest.raises(AirflowFailException, match="hash job ended in error"):
        IysReconciliationHashSensor(task_id="wait_for_hash", report_date=bad.isoformat()).poke(context)
    assert run_day(good, context=context)["status"] == "agreed"

    row = reconciliation(pg, bad)
    assert row["status"] == "hash_error" and row["process_status"] == "error" and row["agreed_at"] is None
    with pytest.raises(
        AirflowException, match=rf"1 of 2 days not reconciled with İYS: {bad} hash_error: İYS's hash job ended in error"
    ):
        IysReconciliationReportOperator(task_id="report", report_dates=[bad.isoformat(), good.isoformat()]).execute(
            context
        )
    assert not [r for r in iys_requests(sim) if r["method"] == "PUT" and bad.isoformat() in r["path"]]


def test_the_hash_job_is_waited_for_and_a_stuck_day_is_left_pending_without_holding_the_others(world, pg):
    sim = world
    day = days_ago(3)
    stuck = days_ago(2)
    movements_on(sim, day)
    movements_on(sim, stuck)
    pull_both()
    sim_control(
        sim,
        "config",
        {
            "reconciliation_queue_seconds": 30,
            "reconciliation_hash_seconds": 90,
            "reconciliation_job_modes": {stuck.isoformat(): "stuck_queued"},
        },
    )
    planned = IysPlanReconciliationOperator(task_id="plan_days").execute({"run_id": "night-5"})
    assert {day.isoformat(), stuck.isoformat()} <= set(planned)
    # Each planned day records its position, its map index in the run's "day" task group (the İYS
    # page links a day to that task instance).
    assert [reconciliation(pg, date.fromisoformat(d))["map_index"] for d in planned] == list(range(len(planned)))
    context = {"run_id": "night-5"}
    started = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # our clock, injected: 05:00 in Turkey
    clock = [started]

    def sensor(report_date: date) -> IysReconciliationHashSensor:
        return IysReconciliationHashSensor(
            task_id="wait_for_hash", report_date=report_date.isoformat(), max_wait_minutes=15, clock=lambda: clock[0]
        )

    # A job that finishes within the wait: queued, inprogress (İYS's simulated clock), completed.
    assert not sensor(day).poke(context).is_done
    assert reconciliation(pg, day)["process_status"] == "queued"
    sim_control(sim, "clock", {"advance_seconds": 45})
    clock[0] = started + timedelta(minutes=1)
    assert not sensor(day).poke(context).is_done
    assert reconciliation(pg, day)["process_status"] == "inprogress"
    sim_control(sim, "clock", {"advance_seconds": 60})
    clock[0] = started + timedelta(minutes=2)
    assert sensor(day).poke(context).is_done
    assert reconciliation(pg, day)["hash_iys"] and reconciliation(pg, day)["hash_waiting_since"] is None

    # A job stuck in queued: waited for up to the limit, then the day is left pending with the reason.
    clock[0] = started
    assert not sensor(stuck).poke(context).is_done
    clock[0] = started + timedelta(minutes=14, seconds=59)
    assert not sensor(stuck).poke(context).is_done
    clock[0] = started + timedelta(minutes=15)
    with pytest.raises(AirflowSkipException, match="past the 15 min wait"):
        sensor(stuck).poke(context)
    row = reconciliation(pg, stuck)
    assert row["status"] == "pending" and row["process_status"] == "queued" and row["hash_iys"] is None
    assert row["detail"].startswith("İYS's hash job was 'queued' since 2026-11-28 05:00 Turkey time")

    # The other day finishes; the report names the stuck day as waiting and does not fail the run.
    assert IysReconcileDayOperator(task_id="reconcile_day", report_date=day.isoformat()).execute(context)["status"] == (
        "agreed"
    )
    report = IysReconciliationReportOperator(
        task_id="report", report_dates=[day.isoformat(), stuck.isoformat()]
    ).execute(context)
    assert report["agreed"] == [day.isoformat()] and report["failed"] == []
    assert len(report["waiting"]) == 1 and report["waiting"][0].startswith(f"{stuck} İYS's hash job was 'queued'")

    # A later run, once İYS's job completes, agrees the day.
    sim_control(sim, "config", {"reconciliation_job_modes": {}, "reconciliation_queue_seconds": 0})
    sim_control(sim, "config", {"reconciliation_hash_seconds": 0})
    later = {"run_id": "night-6"}
    assert stuck.isoformat() in IysPlanReconciliationOperator(task_id="plan_days").execute(later)
    assert run_day(stuck, context=later)["status"] == "agreed"
    assert reconciliation(pg, stuck)["status"] == "agreed"


def test_a_day_still_waiting_on_its_last_day_in_the_window_fails_the_report(world, pg):
    oldest = reconciliation_window(datetime.now(UTC))[-1]
    IysPlanReconciliationOperator(task_id="plan_days", report_date=oldest.isoformat()).execute({"run_id": "n"})
    pg.execute(
        "UPDATE iys.reconciliations SET hash_waiting_since = now(), detail = %s WHERE report_date = %s",
        ("İYS's hash job was 'queued' since …", oldest),
    )
    with pytest.raises(AirflowException, match=f"{oldest} pending on its last day in İYS's window"):
        IysReconciliationReportOperator(task_id="report", report_dates=[oldest.isoformat()]).execute({"run_id": "n"})


def test_a_date_older_than_the_window_is_never_requested(world, pg):
    sim = world
    too_old = turkey_today() - timedelta(days=8)
    with pytest.raises(AirflowFailException, match="older than İYS's 7-day reconciliation window"):
        IysPlanReconciliationOperator(task_id="plan_days", report_date=too_old.isoformat()).execute({})
    with pytest.raises(AirflowFailException, match="not a completed day"):
        IysPlanReconciliationOperator(task_id="plan_days", report_date=turkey_today().isoformat()).execute({})

    window_before = reconciliation_window(datetime.now(UTC))
    planned = IysPlanReconciliationOperator(task_id="plan_days").execute({"run_id": "night-3"})
    windows = (window_before, reconciliation_window(datetime.now(UTC)))  # equal but across a margin's edge
    assert planned in [[d.isoformat() for d in window] for window in windows], (planned, windows)
    for report_date in planned:
        IysCompareSummaryOperator(task_id="compare_summary", report_date=report_date).execute({})
        IysReconciliationHashSensor(task_id="wait_for_hash", report_date=report_date).poke({})
    logged = iys_requests(sim)
    asked = {r["path"].split("/")[6] for r in logged if r["endpoint"] != "token"}
    oldest = turkey_today() - timedelta(days=7)
    assert asked and all(oldest <= date.fromisoformat(d) < turkey_today() for d in asked), asked
    assert too_old.isoformat() not in asked and all(r["status"] != 422 for r in logged)
    # Days without any movement: İYS answers 204 and both summaries are empty, so they are agreed as such.
    for report_date in planned:
        assert (
            IysReconcileDayOperator(task_id="reconcile_day", report_date=report_date).execute({})["status"] == "agreed"
        )


def test_the_simulator_refuses_dates_outside_its_window_with_h502(world):
    """What the client avoids: İYS's answer for a day older than 7 days."""
    sim = world
    token = requests.post(
        f"{sim.url}/oauth2/token",
        data={"grant_type": "password", "username": sim.config.username, "password": sim.config.password},
        timeout=10,
    ).json()["access_token"]
    old = turkey_today() - timedelta(days=8)
    answer = requests.get(
        f"{sim.url}/sps/700001/brands/{SIM_BRAND_CODE}/agreements/{old}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 422 and answer.json()["errors"][0]["code"] == "H502"


def test_reconciliation_dag_end_to_end(airflow_db, world, pg, tmp_path):
    """The DAG over İYS's whole window: a repaired day, a clean day, a hash error, five empty days."""
    from tests_support import load_dag, task_states

    sim = world
    repaired, clean, broken = (days_ago(n) for n in (2, 3, 6))
    lost = movements_on(sim, repaired)[0]
    movements_on(sim, clean)
    movements_on(sim, broken)
    sim_control(sim, "faults", {"feed_omits_transactions": [lost]})
    sim_control(sim, "config", {"reconciliation_job_modes": {broken.isoformat(): "error"}})
    pull_both()

    window_before = reconciliation_window(datetime.now(UTC))
    run = load_dag("iys_reconciliation").test(run_conf={"archive_location": tmp_path.as_uri()})
    window_after = reconciliation_window(datetime.now(UTC))

    assert run.state == "failed"  # the hash error, reported once every other day was done
    statuses = dict(pg.execute("SELECT report_date, status FROM iys.reconciliations").fetchall())
    # The window the run planned: the same before and after it, but for a run across a margin's edge.
    window = window_before if set(statuses) == set(window_before) else window_after
    assert set(statuses) == set(window), (window_before, window_after)
    assert statuses[repaired] == "repaired_and_agreed" and statuses[clean] == "agreed"
    assert statuses[broken] == "hash_error"
    assert {statuses[d] for d in window if d not in (repaired, clean, broken)} == {"agreed"}
    states = task_states(run)
    assert states["report"] == ["failed(try 1)"]
    assert states["announce_consent_changes"] == ["upstream_failed(try 0)"]  # announced by successful runs
    # The repair changed consents, so the İYS page's sendable count was taken again, failed run or not.
    assert pg.execute("SELECT count(*) FROM iys.sendable_counts").fetchone()[0] == 3
    for day in (repaired, clean):
        assert (ObjectStoragePath(tmp_path.as_uri()) / str(SIM_BRAND_CODE) / day.isoformat()).exists()
    # A second run works only on the day still open, and never asks about an agreed day again.
    sim_control(sim, "config", {"reconciliation_job_modes": {}})
    sim_control(sim, "requests/reset")
    assert load_dag("iys_reconciliation").test(run_conf={"archive_location": tmp_path.as_uri()}).state == "success"
    asked = {r["path"].split("/")[6] for r in iys_requests(sim) if r["endpoint"] != "token"}
    assert asked == {broken.isoformat()}


def test_a_day_that_left_the_window_since_the_plan_is_not_asked_about(world):
    sim = world
    gone = (turkey_today() - timedelta(days=8)).isoformat()
    for task in (
        IysCompareSummaryOperator(task_id="compare_summary", report_date=gone),
        IysReconcileDayOperator(task_id="reconcile_day", report_date=gone),
    ):
        with pytest.raises(AirflowFailException, match=f"Not asking İYS about {gone}"):
            task.execute({})
    with pytest.raises(AirflowFailException, match=f"Not asking İYS about {gone}"):
        IysReconciliationHashSensor(task_id="wait_for_hash", report_date=gone).poke({})
    assert iys_requests(sim) == []


READINGS = [
    (header, line_end, bom, columns)
    for header in (True, False)
    for line_end in ("\n", "\r\n")
    for bom in (False, True)
    for columns in ("eight", "faq_seven_with_comma", "seven")
]


def reading_id(header: bool, line_end: str, bom: bool, columns: str) -> str:
    return "-".join(
        [
            "header" if header else "no_header",
            "crlf" if line_end == "\r\n" else "lf",
            "bom" if bom else "no_bom",
            columns,
        ]
    )


def expected_layout(header: bool, line_end: str, bom: bool, columns: str) -> str:
    """The reading's name as documented (docs/reconciliation.md), spelled out here independently."""
    parts = [] if header else ["no_header"]
    parts += ["crlf"] if line_end == "\r\n" else []
    parts += ["utf8_bom"] if bom else []
    parts += {"eight": [], "faq_seven_with_comma": ["faq_seven_columns"], "seven": ["seven_columns"]}[columns]
    return "+".join(parts) or "literal"


def sendable(pg, recipient: str, type_: str = "MESAJ") -> int:
    return pg.execute(
        "SELECT count(*) FROM iys.sendable WHERE recipient = %s AND type = %s", (recipient, type_)
    ).fetchone()[0]


@pytest.mark.parametrize(
    ("header", "line_end", "bom", "columns"), READINGS, ids=[reading_id(*reading) for reading in READINGS]
)
def test_every_reading_of_the_file_with_default_settings_repairs_a_dropped_ret_and_agrees_a_clean_day(
    world, pg, header, line_end, bom, columns
):
    sim = world
    # Half the readings with İYS's 64-hex example hash (SHA-256 length, hashMethod SHA384), half SHA-384.
    sixty_four = READINGS.index((header, line_end, bom, columns)) % 2 == 1
    sim_control(
        sim,
        "config",
        {
            "reconciliation_file_header": header,
            "reconciliation_file_line_end": line_end,
            "reconciliation_file_bom": bom,
            "reconciliation_file_columns": 8 if columns == "eight" else 7,
            "reconciliation_file_trailing_comma": columns == "faq_seven_with_comma",
            "reconciliation_hash_algorithm": "sha256" if sixty_four else "sha384",
            "reconciliation_hash_method": "SHA384",
        },
    )
    dropped, clean = days_ago(2), days_ago(3)
    lost = movements_on(sim, dropped)[1]  # PHONE_A's RET on the dropped day
    movements_on(sim, clean)
    sim_control(sim, "faults", {"feed_omits_transactions": [lost]})
    pull_both()
    pg.execute(
        "INSERT INTO iys.user_recipients (brand_code, user_id, kind, recipient) VALUES (%s, 'user-a', 'phone', %s)",
        (SIM_BRAND_CODE, PHONE_A),
    )
    assert sendable(pg, PHONE_A) == 1  # the feed lost the RET: we would still message PHONE_A

    context = {"run_id": "night-7"}
    planned = IysPlanReconciliationOperator(task_id="plan_days").execute(context)
    assert {dropped.isoformat(), clean.isoformat()} <= set(planned)
    repaired = run_day(dropped, context=context)
    sim_control(sim, "requests/reset")
    agreed = run_day(clean, context=context)

    assert repaired == {
        "report_date": dropped.isoformat(),
        "status": "repaired_and_agreed",
        "movements_ours": 5,
        "repaired": 1,
        "archived": True,
    }
    row = reconciliation(pg, dropped)
    served = sim_daily_file(sim, dropped)
    algorithm = hashlib.sha256 if sixty_four else hashlib.sha384
    assert row["hash_ours"] == row["hash_iys"] == row["hash_file"] == algorithm(served).hexdigest()
    assert row["file_layout"] == expected_layout(header, line_end, bom, columns)
    # Nothing swallowed: every line of İYS's file read, the first movement included.
    assert row["difference"]["file"] == {"rows": 5, "unreadable": 0, "unreadable_lines": []}
    assert row["difference"]["missing"] == {"MESAJ": {"IYS": 1}} and row["difference"]["extra_total"] == 0
    status_from = "file" if columns == "eight" else "multi_status"
    assert row["repair"]["status_from"] == status_from and row["repair"]["by_status"] == {"RET": 1}
    assert pg.execute(
        "SELECT kind, status, status_from, repaired FROM iys.reconciliation_movements WHERE transaction_id = %s",
        (lost,),
    ).fetchone() == ("missing", "RET", status_from, True)
    assert consent(pg, PHONE_A)[0] == "RET" and sendable(pg, PHONE_A) == 0
    # The evidence, by default: the bytes İYS served and its timestamp of them.
    assert archived(dropped, "csv").read_bytes() == served
    assert archived(dropped, "tsr").read_bytes().endswith(hashlib.sha384(served).digest())

    assert agreed["status"] == "agreed" and agreed["archived"] and agreed["repaired"] == 0
    assert archived(clean, "csv").read_bytes() == sim_daily_file(sim, clean)
    # The clean day is written in the reading the repaired day showed: agreed without a download.
    assert not [r for r in iys_requests(sim) if r["endpoint"] == "reconciliation_file"]


def test_a_file_without_status_is_repaired_through_multi_status_in_calls_of_at_most_1000(world, pg):
    sim = world
    sim_control(sim, "config", {"reconciliation_file_columns": 7, "reconciliation_file_trailing_comma": True})
    day = days_ago(2)
    phones = [f"+90532{n:07d}" for n in range(2000001, 2001201)]  # 1,200 addresses, one call would not hold them
    events = [
        {
            "recipient": phone,
            "type": "MESAJ",
            "status": "ONAY" if n % 12 == 0 else "RET",
            "source": "IYS_WEB",
            "stream": "IYS",
            "consentDate": f"{day} 10:00:00",
            "creationDate": f"{day} 10:{n // 60 % 60:02d}:{n % 60:02d}",
            "apply": True,
        }
        for n, phone in enumerate(phones)
    ]
    injected = sim_control(sim, "inject_events", {"events": events})["events"]
    sim_control(sim, "faults", {"feed_omits_transactions": [event["transactionId"] for event in injected]})
    pull_both()
    assert pg.execute("SELECT count(*) FROM iys.consent_events").fetchone()[0] == 0
    sim_control(sim, "requests/reset")

    result = run_day(day)

    assert result["status"] == "repaired_and_agreed" and result["repaired"] == 1200
    row = reconciliation(pg, day)
    assert row["file_layout"] == "faq_seven_columns"
    assert row["repair"] == {
        "status_from": "multi_status",
        "stored": 1200,
        "applied": 1200,
        "by_status": {"ONAY": 100, "RET": 1100},
        "unresolved": 0,
        "status_calls": 2,
        "addresses_asked": 1200,
    }
    # Each movement has İYS's status of its address, as the simulator holds it.
    statuses = dict(pg.execute("SELECT recipient, status FROM iys.consents").fetchall())
    assert statuses == {phone: ("ONAY" if n % 12 == 0 else "RET") for n, phone in enumerate(phones)}
    logged = iys_requests(sim)
    assert [r["endpoint"] for r in logged if "status" in r["endpoint"]] == ["multi_status", "multi_status"]
    assert all(r["status"] < 400 for r in logged)  # no client error, no single-status call


def test_a_file_format_override_still_reads_the_file_by_its_content(world, pg):
    """An override says what our file is written in; İYS's file is still read line by line as it is."""
    sim = world
    sim_control(sim, "config", {"reconciliation_file_header": False, "reconciliation_file_line_end": "\r\n"})
    day = days_ago(2)
    lost = movements_on(sim, day)[0]  # the day's first movement
    sim_control(sim, "faults", {"feed_omits_transactions": [lost]})
    pull_both()
    result = run_day(day, file_format="no_header+crlf")
    assert result["status"] == "repaired_and_agreed" and result["repaired"] == 1
    assert reconciliation(pg, day)["file_layout"] == "no_header+crlf"


def test_a_movement_only_we_hold_is_a_mismatch_with_the_reason(world, pg):
    sim = world
    day = days_ago(2)
    movements_on(sim, day)
    pull_both()
    pg.execute(
        "INSERT INTO iys.consent_events (transaction_id, brand_code, recipient, recipient_type, type, status, "
        "consent_date, creation_date, source, stream) VALUES (%s, %s, '+905321110199', 'BIREYSEL', 'MESAJ', 'ONAY', "
        "%s, %s, 'HS_WEB', 'HS')",
        ("7" * 64, SIM_BRAND_CODE, f"{day} 12:00:00+03", f"{day} 12:00:00+03"),
    )
    with pytest.raises(AirflowFailException, match=rf"{day} not agreed with İYS \(mismatch\)"):
        run_day(day)
    row = reconciliation(pg, day)
    assert row["status"] == "mismatch" and row["agreed_at"] is None
    assert row["difference"]["extra"] == {"MESAJ": {"HS": 1}} and row["difference"]["missing_total"] == 0
    assert row["hash_file"] == row["hash_iys"] != row["hash_ours"]
    assert row["detail"] == (
        "our hash still differs from İYS's (sha384); 1 ours, not in İYS's file (MESAJ/HS 1; first: 777777…7777)"
    )  # İYS's file hashes to its value, yet we hold a movement it lacks: not a matter of the format
    assert not [r for r in iys_requests(sim) if r["method"] == "PUT"]  # never agreed on a mismatch


def test_a_stuck_day_does_not_hold_the_dag_run_and_a_later_run_agrees_it(airflow_db, world, pg):
    """Through Airflow with the default archive: a day stuck in queued is left pending, the run succeeds."""
    from tests_support import load_dag, task_states

    sim = world
    stuck, repaired = days_ago(2), days_ago(4)
    movements_on(sim, stuck)
    lost = movements_on(sim, repaired)[1]
    sim_control(sim, "faults", {"feed_omits_transactions": [lost]})
    sim_control(sim, "config", {"reconciliation_job_modes": {stuck.isoformat(): "stuck_queued"}})
    pull_both()

    run = load_dag("iys_reconciliation").test(run_conf={"hash_wait_minutes": 0})

    assert run.state == "success"
    statuses = dict(pg.execute("SELECT report_date, status FROM iys.reconciliations").fetchall())
    assert statuses[stuck] == "pending" and statuses[repaired] == "repaired_and_agreed"
    assert {statuses[d] for d in statuses if d != stuck} == {"agreed", "repaired_and_agreed"}
    assert "past the 0 min wait" in reconciliation(pg, stuck)["detail"]
    states = task_states(run)
    assert states["report"] == ["success(try 1)"]
    assert "skipped(try 1)" in states["day.wait_for_hash"] and "skipped(try 0)" in states["day.reconcile_day"]
    assert archived(repaired, "csv").exists() and archived(repaired, "tsr").exists()
    assert consent(pg, PHONE_A)[0] == "RET"

    sim_control(sim, "config", {"reconciliation_job_modes": {}})
    sim_control(sim, "requests/reset")
    assert load_dag("iys_reconciliation").test().state == "success"
    assert reconciliation(pg, stuck)["status"] == "agreed"
    assert archived(stuck, "csv").read_bytes() == sim_daily_file(sim, stuck)
    asked = {r["path"].split("/")[6] for r in iys_requests(sim) if r["endpoint"] != "token"}
    assert asked == {stuck.isoformat()}


def test_a_deferred_hash_wait_ends_on_the_triggerer_as_the_sensor_would(world, pg):
    sim = world
    day = days_ago(3)
    movements_on(sim, day)
    pull_both()
    sim_control(sim, "config", {"reconciliation_queue_seconds": 30, "reconciliation_hash_seconds": 90})
    context = {"run_id": "night-6"}
    IysCompareSummaryOperator(task_id="compare_summary", report_date=day.isoformat()).execute(context)
    sensor = IysReconciliationHashSensor(
        task_id="wait_for_hash", report_date=day.isoformat(), deferrable=True, poke_interval=0.05
    )

    # The worker's look starts İYS's job (queued); the wait moves to the triggerer.
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    assert reconciliation(pg, day)["process_status"] == "queued"
    trigger = rebuilt_trigger(deferred.value.trigger)
    assert isinstance(trigger, IysReconciliationHashTrigger) and trigger.report_date == day.isoformat()

    def looks() -> int:
        return sum(r["method"] == "GET" and f"agreements/{day}" in r["path"] for r in iys_requests(sim))

    # The trigger looks again while the job runs; İYS's clock then passes the job's end.
    event = first_event_after(
        trigger, looked=lambda: looks() >= 3, then=lambda: sim_control(sim, "clock", {"advance_seconds": 200})
    )
    assert event.payload["status"] == "done"
    assert sensor.execute_complete(context, event.payload) == {"report_date": day.isoformat(), "process": "completed"}
    row = reconciliation(pg, day)
    assert row["process_status"] == "completed" and row["hash_iys"] and row["hash_waiting_since"] is None
    assert run_day(day, context=context)["status"] == "agreed"


def test_a_deferred_hash_wait_that_ends_in_error_fails_the_day(world, pg):
    sim = world
    day = days_ago(4)
    movements_on(sim, day)
    pull_both()
    sim_control(
        sim,
        "config",
        {"reconciliation_queue_seconds": 30, "reconciliation_job_modes": {day.isoformat(): "error"}},
    )
    context = {"run_id": "night-7"}
    IysCompareSummaryOperator(task_id="compare_summary", report_date=day.isoformat()).execute(context)
    sensor = IysReconciliationHashSensor(
        task_id="wait_for_hash", report_date=day.isoformat(), deferrable=True, poke_interval=0.05
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    event = first_event_after(
        rebuilt_trigger(deferred.value.trigger),
        looked=lambda: True,
        then=lambda: sim_control(sim, "clock", {"advance_seconds": 200}),
    )
    with pytest.raises(AirflowFailException, match="hash job ended in error"):
        sensor.execute_complete(context, event.payload)
    assert reconciliation(pg, day)["status"] == "hash_error"
