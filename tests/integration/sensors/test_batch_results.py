"""The batch-result sensor over several pokes: its counts come from the database, per DAG run."""

from __future__ import annotations

from incremental_support import add_update, outbox, push

from iys_provider.sensors.batch_results import IysBatchResultSensor
from tests_support import sim_control


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
