"""Bad input: malformed İYS answers and a hostile source query.

Malformed answers must give a clear typed error and either a retry or a visible failure, and
never a partial write. Bad source rows are quarantined with reasons, in bounded memory.
"""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from chaos.chaos_support import fresh_world, synced_world_with_traffic

from iys_provider.exceptions import IysMalformedResponseError
from iys_provider.operators.changes import IysPullChangesOperator
from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator
from iys_provider.operators.initial_sync import IysInitialSyncBatchOperator, IysPlanInitialSyncOperator
from tests_support import sim_control

HTML = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def _db_footprint(pg):
    return pg.execute(
        "SELECT (SELECT count(*) FROM iys.consents), (SELECT count(*) FROM iys.user_recipients), "
        "(SELECT count(*) FROM iys.rejected_recipients), (SELECT count(finished_at) FROM iys.initial_sync_batches)"
    ).fetchone()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """The hook's backoff (up to 30 s between attempts) shortened: the attempts are what is tested."""
    from iys_provider.hooks import base

    monkeypatch.setattr(base, "_backoff", lambda state: 0.01)


MALFORMED_MULTI_STATUS = {
    "invalid JSON": {"status": 200, "body": '{"requestId": "r1", "list": ["+9053'},
    "HTML page with 200": {"status": 200, "body": HTML},
    "missing list field": {"status": 200, "body": '{"requestId": "r1"}'},
    "empty object": {"status": 200, "body": "{}"},
    "array instead of object": {"status": 200, "body": "[]"},
    "list of numbers": {"status": 200, "body": '{"requestId": "r1", "list": [905321112233]}'},
    "persistent HTML 502 from a proxy": {"status": 502, "body": HTML, "count": 50},
}


@pytest.mark.parametrize("case", list(MALFORMED_MULTI_STATUS))
def test_malformed_multi_status_answer_fails_the_batch_without_partial_writes(airflow_db, chaos_sim, pg, case):
    people = fresh_world(chaos_sim, pg, users=150)
    batches = IysPlanInitialSyncOperator(task_id="plan_batches", batch_size=100).execute(context={})
    IysInitialSyncBatchOperator(task_id="sync_batch", batch=batches[0]).execute(context={})
    before = _db_footprint(pg)
    rule = {"path_contains": "/status/", "count": 1, **MALFORMED_MULTI_STATUS[case]}
    sim_control(chaos_sim, "faults", {"fail_next": [rule]})
    with pytest.raises(IysMalformedResponseError) as excinfo:
        IysInitialSyncBatchOperator(task_id="sync_batch", batch=batches[1]).execute(context={})
    assert "multi_status" in str(excinfo.value)
    assert _db_footprint(pg) == before, "a malformed answer left a partial write"
    sim_control(chaos_sim, "faults", {"reset": True})
    IysInitialSyncBatchOperator(task_id="sync_batch", batch=batches[1]).execute(context={})  # the retry
    assert _db_footprint(pg)[3] == 2
    assert len(people) == 150


def test_transient_html_proxy_page_is_retried(airflow_db, chaos_sim, pg):
    fresh_world(chaos_sim, pg, users=120)
    batches = IysPlanInitialSyncOperator(task_id="plan_batches", batch_size=100).execute(context={})
    sim_control(
        chaos_sim, "faults", {"fail_next": [{"path_contains": "/status/", "status": 502, "body": HTML, "count": 2}]}
    )
    result = IysInitialSyncBatchOperator(task_id="sync_batch", batch=batches[0]).execute(context={})
    assert result["retries"] == 2


MALFORMED_CHANGES = {
    "missing recipient": lambda c: {k: v for k, v in c.items() if k != "recipient"},
    "missing transactionId": lambda c: {k: v for k, v in c.items() if k != "transactionId"},
    "unparseable creationDate": lambda c: {**c, "creationDate": "yesterday"},
}


def _next_page_with_fourth_movement_changed(sim, pg, change):
    """A synced world whose next change-feed page is İYS's real one with its 4th movement changed."""
    synced_world_with_traffic(sim, pg, users=120, outbox_rows=0, new_users=0)
    events = [e for e in sim_control(sim, "events", method="GET")["events"] if e["stream"] == "IYS"]
    body = [{k: v for k, v in e.items() if k not in ("brandCode", "stream", "cursor")} for e in events]
    body[3] = change(body[3])
    page = json.dumps({"after": events[-1]["cursor"], "list": body})
    sim_control(sim, "faults", {"fail_next": [{"path_contains": "/consents/changes", "status": 200, "body": page}]})
    return events, body


@pytest.mark.parametrize("case", list(MALFORMED_CHANGES))
def test_malformed_change_page_stores_nothing_and_keeps_the_cursor(airflow_db, chaos_sim, pg, case):
    events, _ = _next_page_with_fourth_movement_changed(chaos_sim, pg, MALFORMED_CHANGES[case])
    consents = pg.execute("SELECT * FROM iys.consents ORDER BY 1, 2, 3, 4").fetchall()
    with pytest.raises(IysMalformedResponseError, match="changes"):
        IysPullChangesOperator(task_id="pull_iys_changes", stream="IYS").execute(context={})
    assert pg.execute("SELECT count(*) FROM iys.consent_events").fetchone()[0] == 0
    assert pg.execute("SELECT cursor FROM iys.sync_state WHERE stream = 'changes:IYS'").fetchone() in (None, (None,))
    assert pg.execute("SELECT * FROM iys.consents ORDER BY 1, 2, 3, 4").fetchall() == consents
    # The next try pulls İYS's real page.
    assert IysPullChangesOperator(task_id="pull_iys_changes", stream="IYS").execute(context={})["new"] == len(events)


UNDOCUMENTED_VALUES = {
    "unknown status enum": lambda c: {**c, "status": "BELKI"},
    "unknown type enum": lambda c: {**c, "type": "FAKS"},
    "unknown recipient type": lambda c: {**c, "recipientType": "KAMU"},
}


@pytest.mark.parametrize("case", list(UNDOCUMENTED_VALUES))
def test_a_value_iys_never_documented_is_kept_but_never_applied(airflow_db, chaos_sim, pg, case):
    """İYS adds enum values over time: the page is stored, the odd movement held back, the rest applied."""
    events, body = _next_page_with_fourth_movement_changed(chaos_sim, pg, UNDOCUMENTED_VALUES[case])

    result = IysPullChangesOperator(task_id="pull_iys_changes", stream="IYS").execute(context={})

    assert (result["new"], result["held"]) == (len(events), 1)
    held = pg.execute(
        "SELECT status, type, recipient_type FROM iys.consent_events WHERE transaction_id = %s",
        (body[3]["transactionId"],),
    ).fetchone()
    assert "BELKI" in held or "FAKS" in held or "KAMU" in held
    assert (
        pg.execute(
            "SELECT count(*) FROM iys.consents WHERE transaction_id = %s", (body[3]["transactionId"],)
        ).fetchone()[0]
        == 0
    )
    assert (
        pg.execute("SELECT cursor FROM iys.sync_state WHERE stream = 'changes:IYS'").fetchone()[0]
        == events[-1]["cursor"]
    )


@pytest.mark.parametrize(
    "body",
    ['{"ok": true}', "<html>maintenance</html>", '{"transactionId": null}', ""],
    ids=["unexpected object", "html", "null transaction id", "empty"],
)
def test_unexpected_200_to_a_write_leaves_the_row_pending_then_sends_it_once(airflow_db, chaos_sim, pg, body):
    people, traffic = synced_world_with_traffic(chaos_sim, pg, feed_visible=False, outbox_rows=8, new_users=0)
    writes = sim_control(chaos_sim, "counters", method="GET")["writes"]
    sim_control(
        chaos_sim, "faults", {"fail_next": [{"path_contains": "/v2/", "status": 200, "body": body, "count": 1}]}
    )
    IysPushConsentUpdatesOperator(task_id="push_consent_updates").execute(context={})
    states = dict(pg.execute("SELECT id, state FROM iys.consent_updates").fetchall())
    assert sorted(states.values()).count("pending") == 1, states  # the one with the odd answer: visibly pending
    IysPushConsentUpdatesOperator(task_id="push_consent_updates").execute(context={})
    states = dict(pg.execute("SELECT id, state FROM iys.consent_updates").fetchall())
    assert states == traffic.expected_outbox
    sent = sum(1 for s in states.values() if s == "sent")
    assert sim_control(chaos_sim, "counters", method="GET")["writes"] - writes == sent


# --------------------------------------------------------------------------- the source query


def test_source_nulls_duplicates_and_very_long_strings_are_quarantined(airflow_db, chaos_sim, pg):
    fresh_world(chaos_sim, pg, users=50)
    long_phone = "0532" + "1" * 100_000
    long_email = "a" * 100_000 + "@example.com"
    pg.execute(
        "INSERT INTO public.users VALUES ('x-long-phone', %s, NULL), ('x-long-email', NULL, %s), "
        "('x-nul', E'0532\\\\x00111 22 33', 'nul@example.com'), ('x-null', NULL, NULL), ('x-sql', %s, %s)",
        (long_phone, long_email, "'); DROP TABLE public.users; --", "x'; DELETE FROM iys.consents; --@example.com"),
    )
    source = (
        "SELECT id AS user_id, phone, email FROM public.users "
        "UNION ALL SELECT id, phone, email FROM public.users WHERE id < 'u00010' "  # duplicates
        "UNION ALL SELECT NULL, '05321112233', NULL"  # a NULL user id
    )
    plan = IysPlanInitialSyncOperator(task_id="plan_batches", recipients_sql=source, batch_size=100)
    for batch in plan.execute(context={}):
        IysInitialSyncBatchOperator(task_id="sync_batch", batch=batch).execute(context={})
    rejected = {
        (u, f): (len(raw or ""), reason)
        for u, f, raw, reason in pg.execute(
            "SELECT user_id, field, raw_value, reason FROM iys.rejected_recipients"
        ).fetchall()
    }
    assert rejected[("x-long-phone", "phone")][1] and rejected[("x-long-phone", "phone")][0] <= 1000
    assert rejected[("x-long-email", "email")][1] and rejected[("x-long-email", "email")][0] <= 1000
    assert rejected[("x-sql", "phone")][1] and rejected[("x-sql", "email")][1]
    assert all(reason for _, reason in rejected.values())
    assert pg.execute("SELECT count(*) FROM public.users").fetchone()[0] == 55  # the injection stayed data
    links = pg.execute("SELECT user_id, count(*) FROM iys.user_recipients GROUP BY 1 HAVING count(*) > 2").fetchall()
    assert links == []  # duplicates linked once per kind


def _scan_all_invalid(rows: int, queue) -> None:
    import resource

    from iys_provider.operators.initial_sync import IysInitialSyncBatchOperator, IysPlanInitialSyncOperator

    try:
        source = "SELECT id AS user_id, phone, email FROM public.junk_users"
        batches = IysPlanInitialSyncOperator(task_id="plan_batches", recipients_sql=source, batch_size=5000).execute(
            context={}
        )
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for batch in batches:
            IysInitialSyncBatchOperator(task_id="sync_batch", batch=batch).execute(context={})
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        queue.put(("ok", len(batches), baseline // 1024, peak // 1024))
    except Exception as exc:
        queue.put(("error", repr(exc), 0, 0))


def test_many_rows_with_only_invalid_values_are_quarantined_in_bounded_memory(airflow_db, chaos_sim, pg):
    rows = int(os.environ.get("CHAOS_JUNK_ROWS", "200000"))
    fresh_world(chaos_sim, pg, users=0)
    pg.execute("DROP TABLE IF EXISTS public.junk_users")
    pg.execute(
        "CREATE TABLE public.junk_users AS SELECT lpad(g::text, 8, '0') AS id, 'tel:' || g AS phone, "
        "'user' || g || '-at-example.com' AS email FROM generate_series(1, %s) g",
        (rows,),
    )
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_scan_all_invalid, args=(rows, queue))
    proc.start()
    status, batches, baseline_mb, peak_mb = queue.get(timeout=600)
    proc.join(timeout=60)
    assert status == "ok", batches
    assert sim_control(chaos_sim, "counters", method="GET")["multi_status_calls"] == 0  # nothing valid to ask about
    quarantined = pg.execute(
        "SELECT count(*), count(DISTINCT reason), bool_and(reason IS NOT NULL) FROM iys.rejected_recipients"
    ).fetchone()
    assert quarantined[0] == 2 * rows and quarantined[2]
    # Memory is bounded by the batch, not the table: the scan adds little to the process's peak.
    assert peak_mb - baseline_mb < 150, (baseline_mb, peak_mb)
