"""The batch-result sensor's defaults: it never holds a worker slot and gives up on a batch before it times out."""

from __future__ import annotations

from iys_provider.sensors.batch_results import IysBatchResultSensor


def test_reschedules_and_reopens_old_batches_before_its_own_timeout():
    sensor = IysBatchResultSensor(task_id="wait")
    assert sensor.mode == "reschedule"
    assert sensor.max_batch_age.total_seconds() < sensor.timeout  # a lost batch cannot time the sensor out
    assert {"iys_conn_id", "postgres_conn_id"} <= set(sensor.template_fields)


def test_hook_params_reach_the_hook_without_io():
    sensor = IysBatchResultSensor(task_id="wait", iys_conn_id="my_iys", hook_params={"max_attempts": 3})
    hook = sensor.iys_hook
    assert (hook.iys_conn_id, hook.max_attempts) == ("my_iys", 3)
    assert "connection" not in hook.__dict__
