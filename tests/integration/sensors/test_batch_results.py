"""The batch-result sensor over several pokes: its counts come from the database, per DAG run."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from airflow.sdk.exceptions import TaskDeferred
from incremental_support import add_update, outbox, push

from iys_provider.exceptions import IysApiError
from iys_provider.limits.retry_policy import RetryVerdict, retry_advice
from iys_provider.sensors.batch_results import IysBatchResultSensor
from iys_provider.triggers.batch_results import IysBatchResultsTrigger
from tests_support import first_event_after, rebuilt_trigger, sim_control


def _opt_outs(sim, pg, prefix: str, count: int = 25) -> list[int]:
    phones = [f"+90535{prefix}{i:04d}" for i in range(count)]
    sim_control(
        sim,
        "seed",
        {
            "consents": [
                {
                    "recipient": p,
                    "type": "MESAJ",
                    "status": "ONAY",
                    "consentDate": "2024-03-01 10:00:00",
                    "source": "HS_WEB",
                }
                for p in phones
            ]
        },
    )
    return [add_update(pg, p, "RET") for p in phones]


def test_counts_cover_every_poke_of_the_run(synced, pg):
    sim = synced
    sensor = IysBatchResultSensor(task_id="wait_for_batch_results")
    first = _opt_outs(sim, pg, "601")
    assert push()["submitted"] == 25
    poke = sensor.poke(context={"run_id": "night-1"})
    assert poke.is_done and poke.xcom_value == {
        "step": "outbox_settlement",
        "sent": 25,
        "skipped": 0,
        "rejected": 0,
        "reopened": 0,
    }

    # More rows settle on a later poke (a batch submitted by a retry of the push): the run's
    # figure grows; it is not just the last poke's.
    second = _opt_outs(sim, pg, "602")
    assert push()["submitted"] == 25
    sim_control(sim, "faults", {"batch_item_status": "processing"})
    assert not sensor.poke(context={"run_id": "night-1"}).is_done
    sim_control(sim, "faults", {"batch_item_status": None})
    poke = sensor.poke(context={"run_id": "night-1"})
    assert poke.is_done and poke.xcom_value["sent"] == 50
    assert {outbox(pg, i)[0] for i in first + second} == {"sent"}

    # Another run's sensor reports only what it settled itself.
    assert IysBatchResultSensor(task_id="wait_for_batch_results").poke(context={"run_id": "night-2"}).xcom_value == {
        "step": "outbox_settlement",
        "sent": 0,
        "skipped": 0,
        "rejected": 0,
        "reopened": 0,
    }


def test_a_deferred_wait_settles_on_the_triggerer_as_a_poke_would(synced, pg):
    sim = synced
    rows = _opt_outs(sim, pg, "603")
    assert push()["submitted"] == 25
    sim_control(sim, "faults", {"batch_item_status": "processing"})
    sim_control(sim, "requests/reset")
    sensor = IysBatchResultSensor(task_id="wait_for_batch_results", deferrable=True, poke_interval=0.05)
    context = {"run_id": "night-3"}

    # The worker looks once; results still processing: the wait moves to the triggerer.
    before = time.monotonic()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    looked_for = time.monotonic() - before
    assert deferred.value.method_name == "execute_complete"
    # The sensor's timeout counts from the first look (as in reschedule mode): the trigger gets what is left.
    left = deferred.value.timeout.total_seconds()
    assert sensor.timeout - looked_for <= left < sensor.timeout
    trigger = rebuilt_trigger(deferred.value.trigger)
    assert isinstance(trigger, IysBatchResultsTrigger) and trigger.run_id == "night-3"

    def result_queries() -> int:
        return sum(r.get("endpoint") == "batch_result" for r in sim_control(sim, "requests", method="GET")["requests"])

    # The trigger asks İYS again (the worker's look was the first) before the results come.
    event = first_event_after(
        trigger,
        looked=lambda: result_queries() >= 3,
        then=lambda: sim_control(sim, "faults", {"batch_item_status": None}),
    )
    assert event.payload["status"] == "done"
    summary = sensor.execute_complete(context, event.payload)
    assert summary == {"step": "outbox_settlement", "sent": 25, "skipped": 0, "rejected": 0, "reopened": 0}
    assert {outbox(pg, i)[0] for i in rows} == {"sent"}


def test_a_deferred_wait_fails_the_task_with_the_error_the_trigger_met(synced, pg):
    sim = synced
    _opt_outs(sim, pg, "604")
    assert push()["submitted"] == 25
    sim_control(sim, "faults", {"batch_item_status": "processing"})
    sensor = IysBatchResultSensor(task_id="wait_for_batch_results", deferrable=True, poke_interval=0.05)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"run_id": "night-4"})
    trigger = rebuilt_trigger(deferred.value.trigger)
    # İYS then refuses the account's permission on the results: a refusal, not worth a retry.
    refuse = {"path_contains": "/consents/request/", "status": 403, "code": "H003", "count": 50}
    event = first_event_after(
        trigger, looked=lambda: True, then=lambda: sim_control(sim, "faults", {"fail_next": [refuse]})
    )
    assert event.payload["status"] == "error"
    with pytest.raises(IysApiError) as failed:
        sensor.execute_complete({"run_id": "night-4"}, event.payload)
    assert failed.value.status_code == 403 and failed.value.code == "H003"
    assert retry_advice(failed.value, datetime.now(UTC)).verdict is RetryVerdict.FAIL
