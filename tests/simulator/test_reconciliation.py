"""The simulator's reconciliation endpoints over real HTTP: window and H-codes, hash job states, file, agreement."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import pytest
import requests
from iys_simulator import SimulatorServer

BRAND_PATH = "/sps/700001/brands/700001"
PHONE, EMAIL = "+905321112233", "ayse@example.com"


@pytest.fixture
def sim():
    with SimulatorServer(port=0, seed=7, rate_limit_per_second=1000) as server:
        yield server


@pytest.fixture
def http(sim):
    with requests.Session() as session:
        token = session.post(
            f"{sim.url}/oauth2/token", json={"username": "demo", "password": "demo-secret", "grant_type": "password"}
        ).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        yield session


def yesterday(sim) -> date:
    return sim.app.clock.now().date() - timedelta(days=1)


def day_with_movements(sim, day: date) -> list[str]:
    ids = [
        sim.citizen_change(recipient=PHONE, type="MESAJ", status="RET", creationDate=f"{day} 10:00:00")[
            "transactionId"
        ],
        sim.citizen_change(
            recipient=EMAIL, type="EPOSTA", status="ONAY", source="IYS_MOBIL", creationDate=f"{day} 10:00:00"
        )["transactionId"],
    ]
    injected = sim.inject_events(
        [
            {
                "recipient": "+905321112244",
                "type": "ARAMA",
                "status": "ONAY",
                "source": "HS_WEB",
                "stream": "HS",
                "recipientType": "TACIR",
                "creationDate": f"{day} 08:00:00",
            }
        ]
    )
    return ids + [injected["events"][0]["transactionId"]]


def test_report_dates_outside_the_window_get_h501_and_h502(sim, http):
    too_old = sim.app.clock.now().date() - timedelta(days=8)
    oldest = sim.app.clock.now().date() - timedelta(days=7)
    for path in (f"agreements/{too_old}", f"changes/{too_old}/file", f"agreements/{too_old}/timestamp"):
        answer = http.get(f"{sim.url}{BRAND_PATH}/{path}")
        assert (answer.status_code, answer.json()["errors"][0]["code"]) == (422, "H502"), path
    answer = http.get(f"{sim.url}{BRAND_PATH}/changes/{too_old}/recipients/BIREYSEL")
    assert answer.json()["errors"][0]["code"] == "H502"
    answer = http.put(f"{sim.url}{BRAND_PATH}/agreements/{too_old}", json={"agreementStatus": True})
    assert answer.json()["errors"][0]["code"] == "H502"
    answer = http.get(f"{sim.url}{BRAND_PATH}/agreements/27.11.2026")
    assert (answer.status_code, answer.json()["errors"][0]["code"]) == (422, "H501")
    assert http.get(f"{sim.url}{BRAND_PATH}/agreements/{oldest}").status_code == 204  # in the window, nothing there
    assert http.get(f"{sim.url}{BRAND_PATH}/changes/{oldest}/recipients/KURUM").json()["errors"][0]["code"] == "H116"


def test_the_hash_job_goes_queued_inprogress_completed_on_the_simulated_clock(sim, http):
    day = yesterday(sim)
    day_with_movements(sim, day)
    url = f"{sim.url}{BRAND_PATH}/agreements/{day}"
    assert http.get(url).json() == {"processStatus": "queued", "agreementStatus": False}
    sim.advance_clock(40)
    assert http.get(url).json()["processStatus"] == "inprogress"
    sim.advance_clock(60)
    job = http.get(url).json()
    file_bytes = http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/file").content
    assert job == {
        "processStatus": "completed",
        "agreementStatus": False,
        "hashValue": hashlib.sha384(file_bytes).hexdigest(),
        "hashMethod": "SHA384",
    }
    answer = http.put(url, json={"agreementStatus": True})
    assert answer.json() == {"agreementCaptured": True}
    assert http.get(url).json()["agreementStatus"] is True
    assert http.put(url, json={"agreementStatus": False}).json()["errors"][0]["code"] == "H512"


def test_error_and_stuck_jobs_and_the_documented_variants(sim, http):
    day, other = yesterday(sim), yesterday(sim) - timedelta(days=1)
    day_with_movements(sim, day)
    day_with_movements(sim, other)
    sim.configure(
        reconciliation_job_modes={day.isoformat(): "error", other.isoformat(): "stuck_queued"},
        reconciliation_hash_algorithm="sha256",
        reconciliation_hash_method="SHA-384",
        reconciliation_captured_field="aggrementCaptured",
    )
    for job_day in (day, other):  # the first query starts the job
        assert http.get(f"{sim.url}{BRAND_PATH}/agreements/{job_day}").json()["processStatus"] == "queued"
    sim.advance_clock(3600)
    assert http.get(f"{sim.url}{BRAND_PATH}/agreements/{day}").json() == {
        "processStatus": "error",
        "agreementStatus": False,
    }
    assert http.get(f"{sim.url}{BRAND_PATH}/agreements/{other}").json()["processStatus"] == "queued"
    sim.advance_clock(1800)  # (tokens live 2 h)
    assert http.get(f"{sim.url}{BRAND_PATH}/agreements/{other}").json()["processStatus"] == "queued"
    sim.configure(reconciliation_job_modes={})
    url = f"{sim.url}{BRAND_PATH}/agreements/{day}"
    http.get(url)
    sim.advance_clock(100)
    job = http.get(url).json()
    assert len(job["hashValue"]) == 64 and job["hashMethod"] == "SHA-384"  # İYS's own examples
    assert http.put(url, json={"agreementStatus": True}).json() == {"aggrementCaptured": True}


def test_the_day_file_holds_every_movement_of_the_day_in_order_with_a_header(sim, http):
    day = yesterday(sim)
    phone_id, email_id, tacir_id = day_with_movements(sim, day)
    sim.citizen_change(recipient=PHONE, type="MESAJ", status="ONAY", creationDate=f"{day + timedelta(days=1)} 00:00:00")
    content = http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/file")
    assert content.headers["Content-Type"].startswith("text/csv")
    lines = content.content.decode("utf-8").split("\n")
    assert lines[0] == "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source"
    assert lines[-1] == ""  # the file ends with \n
    first_two = sorted([phone_id, email_id])
    assert [line.split(",")[1] for line in lines[1:-1]] == [tacir_id, *first_two]
    assert lines[1] == f"{day} 08:00:00,{tacir_id},+905321112244,TACIR,ARAMA,ONAY,,HS_WEB"  # no consentDate: empty
    sim.configure(reconciliation_file_header=False)
    assert http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/file").content.decode().count("\n") == 3


def test_the_summary_counts_per_type_and_source_for_one_recipient_type(sim, http):
    day = yesterday(sim)
    day_with_movements(sim, day)
    bireysel = http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/recipients/BIREYSEL").json()
    assert sorted(bireysel["changeStats"], key=lambda s: s["type"]) == [
        {"type": "EPOSTA", "consents": [{"source": "IYS", "approval": 1, "rejection": 0, "pending": 0, "total": 1}]},
        {"type": "MESAJ", "consents": [{"source": "IYS", "approval": 0, "rejection": 1, "pending": 0, "total": 1}]},
    ]
    tacir = http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/recipients/TACIR").json()
    assert tacir == {
        "changeStats": [
            {"type": "ARAMA", "consents": [{"source": "HS", "approval": 1, "rejection": 0, "pending": 0, "total": 1}]}
        ]
    }


def test_the_timestamp_is_binary_and_stamps_the_file(sim, http):
    day = yesterday(sim)
    day_with_movements(sim, day)
    file_bytes = http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/file").content
    stamp = http.get(f"{sim.url}{BRAND_PATH}/agreements/{day}/timestamp")
    assert stamp.headers["Content-Type"] == "text/plain"
    assert stamp.content.endswith(hashlib.sha384(file_bytes).digest())


def test_a_movement_omitted_from_the_feed_stays_in_the_file(sim, http):
    day = yesterday(sim)
    phone_id, email_id, _ = day_with_movements(sim, day)
    sim.set_faults(feed_omits_transactions=[phone_id])
    feed = http.get(f"{sim.url}{BRAND_PATH}/consents/changes", params={"source": "IYS", "limit": 1})
    assert [m["transactionId"] for m in feed.json()["list"]] != [phone_id]
    listed = []
    after = None
    while True:
        params = {"source": "IYS", "limit": 1, **({"after": after} if after else {})}
        page = http.get(f"{sim.url}{BRAND_PATH}/consents/changes", params=params)
        if page.status_code == 204:
            break
        listed += [m["transactionId"] for m in page.json()["list"]]
        after = page.json()["after"]
    assert listed == [email_id]
    assert phone_id in http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/file").text


def test_the_request_log_lists_every_iys_request_and_no_control_call(sim, http):
    day = yesterday(sim)
    http.get(f"{sim.url}{BRAND_PATH}/agreements/{day}")
    sim.counters()
    logged = requests.get(f"{sim.url}/__sim/requests", timeout=10).json()["requests"]
    assert logged[-1] == {
        "method": "GET",
        "path": f"{BRAND_PATH}/agreements/{day}",
        "endpoint": "agreement",
        "status": 204,
    }
    assert not [r for r in logged if r["path"].startswith("/__sim/")]
    requests.post(f"{sim.url}/__sim/requests/reset", timeout=10)
    assert sim.requests() == []
    assert http.post(f"{sim.url}{BRAND_PATH}/agreements/{day}").status_code == 405


def test_the_day_file_is_served_in_every_documented_reading_and_hashed_as_served(sim, http):
    day = yesterday(sim)
    phone_id, _, tacir_id = day_with_movements(sim, day)
    tacir_line = f"{day} 08:00:00,{tacir_id},+905321112244,TACIR,ARAMA,ONAY,,HS_WEB"
    sim.configure(reconciliation_queue_seconds=0, reconciliation_hash_seconds=0)
    sim.configure(
        reconciliation_file_header=False,
        reconciliation_file_line_end="\r\n",
        reconciliation_file_bom=True,
        reconciliation_file_columns=7,
        reconciliation_file_trailing_comma=True,
    )
    served = http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/file").content
    seven = tacir_line.replace(",ONAY,", ",")  # FAQ Q1: no status column
    assert served.startswith(b"\xef\xbb\xbf" + f"{seven},\r\n".encode())
    assert served.endswith(b",\r\n") and served.count(b"\r\n") == 3 and b"\n" not in served.replace(b"\r\n", b"")
    assert http.get(f"{sim.url}{BRAND_PATH}/agreements/{day}").json()["hashValue"] == hashlib.sha384(served).hexdigest()
    sim.configure(reconciliation_file_header=True, reconciliation_file_bom=False, reconciliation_file_line_end="\n")
    served = http.get(f"{sim.url}{BRAND_PATH}/changes/{day}/file").content
    assert served.split(b"\n")[0] == b"creationDate,transactionId,recipient,recipientType,type,consentDate,source,"
    with pytest.raises(ValueError, match="reconciliation_file_columns must be 7"):
        sim.configure(reconciliation_file_columns=6)
    with pytest.raises(ValueError, match="reconciliation_file_line_end"):
        sim.configure(reconciliation_file_line_end="\r")
