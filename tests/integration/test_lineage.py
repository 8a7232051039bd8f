"""OpenLineage of an incremental run: every İYS task's COMPLETE event names its tables and İYS, and no person.

The run is ``dag.test()`` in a fresh Python process configured the way a deployment configures
OpenLineage (``AIRFLOW__OPENLINEAGE__TRANSPORT``, here the file transport): OpenLineage reads its
configuration and registers its listener once per process, when Airflow loads the plugins, so it
cannot be switched on inside a test session that has loaded them already.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from urllib.parse import urlsplit

from incremental_support import ALICE, DAVE, OLD, add_update, make_feed_visible
from psycopg import conninfo

from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE, SIM_PASSWORD, sim_control

TESTS = pathlib.Path(__file__).resolve().parents[1]
DAG_ID = "iys_incremental_sync"
IYS = "İYS"  # stands for the İYS dataset in EXPECTED
USERS = "public.users"  # the source query's table (the default query: SELECT … FROM public.users)

#: task id → (inputs, outputs): tables of schema iys by name, the user table, İYS; from what each step
#: does (docs/architecture.md and the DAG's documentation), not from the operators' declarations.
EXPECTED = {
    "pull_iys_changes": ({"iys.sync_state", IYS}, {"iys.consent_events", "iys.consents", "iys.sync_state"}),
    "pull_hs_changes": ({"iys.sync_state", IYS}, {"iys.consent_events", "iys.consents", "iys.sync_state"}),
    "check_new_users": (
        {USERS, "iys.user_sources", IYS},
        {"iys.consents", "iys.user_recipients", "iys.rejected_recipients", "iys.user_sources"},
    ),
    "forget_leavers": (
        {USERS, "iys.user_sources"},
        {"iys.user_recipients", "iys.rejected_recipients", "iys.user_sources", "iys.initial_sync_queue"},
    ),
    "approve_unusual_volume": ({"iys.consent_updates", "iys.consents"}, {"iys.consent_updates"}),
    "push_consent_updates": (
        {"iys.consent_updates", "iys.consents", IYS},
        {"iys.consent_updates", "iys.consents", IYS},
    ),
    "wait_for_batch_results": ({"iys.consent_updates", IYS}, {"iys.consent_updates", "iys.consents"}),
    "apply_retention": (
        set(),
        {"iys.consent_events", "iys.consent_updates", "iys.push_inbox", "iys.push_quarantine"},
    ),
    "report": ({"iys.consent_updates", "iys.consents"}, {"iys.sync_runs", "iys.sendable_counts"}),
    "announce_consent_changes": ({"iys.sync_runs"}, {"iys://consents iys_default"}),
}

# A Turkish mobile number however it is spelt (+90 532 111 00 01, 05321110001, 532-111-0001 …), and an e-mail.
PHONE = re.compile(r"(?<!\d)(?:\+?90|0)?[\s-]?5\d{2}[\s-]?\d{3}[\s-]?\d{2}[\s-]?\d{2}(?!\d)")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def run_with_openlineage(events_file: pathlib.Path) -> str:
    """``dag.test()`` of the incremental sync in a new process with OpenLineage's file transport; the run's state."""
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "iys_tests",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    # The state goes to a file of its own: OpenLineage's client logs to stdout from its own thread, and a
    # log line can land in the middle of a printed one.
    state_file = events_file.parent / "run_state"
    script = (
        "import pathlib; from tests_support import load_dag; "
        f"pathlib.Path({str(state_file)!r}).write_text(str(load_dag({DAG_ID!r}).test().state))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    # The run's log stays next to the events, for whoever reads a failure.
    (events_file.parent / "run.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, done.stderr[-4000:]
    return state_file.read_text(encoding="utf-8")


def test_each_task_of_an_incremental_run_reports_its_datasets_and_no_person(airflow_db, synced, pg, pg_dsn, tmp_path):
    sim = synced
    # Work for every step: a citizen's change to pull, a new user to check, an opt-out and a no-op to push.
    sim_control(sim, "citizen_change", {"recipient": ALICE, "type": "MESAJ", "status": "RET", "source": "IYS_WEB"})
    pg.execute("INSERT INTO public.users VALUES ('dave', '0532 111 00 04', 'dave@example.com')")
    sim_control(
        sim,
        "seed",
        {"consents": [{"recipient": DAVE, "type": "ARAMA", "status": "ONAY", "consentDate": OLD, "source": "HS_WEB"}]},
    )
    make_feed_visible(sim)
    add_update(pg, ALICE, "ONAY", type_="ARAMA")
    add_update(pg, DAVE, "RET", type_="ARAMA")

    events_file = tmp_path / "openlineage.jsonl"
    assert run_with_openlineage(events_file) == "success"

    text = events_file.read_text(encoding="utf-8")
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    db = conninfo.conninfo_to_dict(pg_dsn)
    postgres = f"postgres://{db.get('host', '127.0.0.1')}:{db.get('port', 5432)}"
    iys = (f"iys://{urlsplit(sim.url).netloc}", f"{SIM_IYS_CODE}/{SIM_BRAND_CODE}")

    def named(datasets: list[dict]) -> set[str]:
        found = set()
        for dataset in datasets:
            if (dataset["namespace"], dataset["name"]) == iys:
                found.add(IYS)
            elif dataset["namespace"] == postgres and dataset["name"].startswith(f"{db['dbname']}."):
                found.add(dataset["name"].removeprefix(f"{db['dbname']}."))
            else:
                found.add(f"{dataset['namespace']} {dataset['name']}")
        return found

    complete = {
        event["job"]["name"].removeprefix(f"{DAG_ID}."): event
        for event in events
        if event.get("eventType") == "COMPLETE" and event["job"]["name"].startswith(f"{DAG_ID}.")
    }
    for task_id, (inputs, outputs) in EXPECTED.items():
        assert task_id in complete, f"no COMPLETE event for {task_id}; events for {sorted(complete)}"
        event = complete[task_id]
        assert (named(event["inputs"]), named(event["outputs"])) == (inputs, outputs), task_id

    # The START events name the same datasets (a lineage backend shows them while the task runs).
    started = {
        event["job"]["name"].removeprefix(f"{DAG_ID}.")
        for event in events
        if event.get("eventType") == "START" and named(event.get("inputs", []) + event.get("outputs", []))
    }
    assert set(EXPECTED) <= started

    # No person and no secret anywhere in what OpenLineage sent: not in a dataset, not in a facet.
    assert not PHONE.findall(text)
    assert not EMAIL.findall(text)
    for raw in ("0532 111 00 04", "5321110001", "dave@example.com", "alice@example.com", SIM_PASSWORD):
        assert raw.lower() not in text.lower()
