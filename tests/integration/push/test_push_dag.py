"""The push DAG and its event trigger: leftovers applied, pushed movements announced once."""

from __future__ import annotations

import asyncio

import pytest

from iys_provider.push.rules import ItemVerdict, PushedMovement, Verdict
from iys_provider.push.store import store_pushed
from iys_provider.triggers.push_inbox import IysPushInboxTrigger
from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE, load_dag

from .conftest import rows


def accepted(transaction_id: str, status: str, at: str, recipient: str = "+905321110001") -> ItemVerdict:
    movement = PushedMovement.model_validate(
        {
            "iysCode": SIM_IYS_CODE,
            "brandCode": SIM_BRAND_CODE,
            "consentDate": at,
            "creationDate": at,
            "source": "IYS_WEB",
            "recipient": recipient,
            "recipientType": "BIREYSEL",
            "status": status,
            "type": "MESAJ",
            "transactionId": transaction_id,
        }
    )
    return ItemVerdict(0, Verdict.ACCEPT, movement=movement)


def keep(db, *items: ItemVerdict):
    return store_pushed(
        db, brand_code=SIM_BRAND_CODE, channel="MESAJ", accepted=list(items), quarantined=[], test_records=0
    )


def refuse_consent_writes(db):
    db.execute(
        """
        CREATE FUNCTION iys.refuse_consents() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'maintenance'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON iys.consents FOR EACH ROW EXECUTE FUNCTION iys.refuse_consents();
        """
    )


def consent_events_of_run(run) -> list[dict]:
    """The asset events the run's apply task emitted (read from Airflow's metadata database)."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(AssetEvent.source_run_id == run.run_id, AssetEvent.source_dag_id == run.dag_id)
        ).all()
        return [dict(event.extra) for event in events]


def test_the_push_dag_applies_leftovers_and_announces_every_pushed_movement_once(airflow_db, sim, push_db):
    keep(push_db, accepted("t-1", "RET", "2026-12-04 10:00:00"))  # applied by the receiver's transaction
    refuse_consent_writes(push_db)
    stored = keep(push_db, accepted("t-2", "RET", "2026-12-04 10:01:00", recipient="+905321110002"))
    assert stored.apply_failed == 1
    push_db.execute("DROP TRIGGER refuse ON iys.consents")

    run = load_dag("iys_push").test()
    assert run.state == "success"
    assert rows(push_db, "SELECT recipient, status FROM iys.consents ORDER BY recipient") == [
        ("+905321110001", "RET"),
        ("+905321110002", "RET"),
    ]
    assert rows(push_db, "SELECT count(*) FROM iys.push_inbox WHERE announced_at IS NULL OR applied_at IS NULL") == [
        (0,)
    ]
    [extra] = consent_events_of_run(run)
    assert {k: extra[k] for k in ("brand_code", "consent_changes", "rets", "source")} == {
        "brand_code": SIM_BRAND_CODE,
        "consent_changes": 2,
        "rets": 2,
        "source": "push",
    }

    # Nothing new pushed: the next run announces nothing and emits no event.
    again = load_dag("iys_push").test()
    assert again.get_task_instance("apply_push_inbox").state == "skipped"
    assert consent_events_of_run(again) == []


def test_a_movement_that_still_cannot_be_applied_fails_the_run_and_stays(airflow_db, sim, push_db):
    refuse_consent_writes(push_db)
    keep(push_db, accepted("t-1", "RET", "2026-12-04 10:00:00"))
    dag = load_dag("iys_push")
    dag.get_task("apply_push_inbox").retries = 0  # dag.test() would wait out the retry delay
    run = dag.test()
    assert run.get_task_instance("apply_push_inbox").state == "failed"
    assert rows(push_db, "SELECT applied_at IS NULL, apply_error LIKE '%%maintenance%%' FROM iys.push_inbox") == [
        (True, True)
    ]


async def first_events(trigger: IysPushInboxTrigger, count: int, timeout: float = 30.0) -> list:
    events = []

    async def collect():
        async for event in trigger.run():
            events.append(event.payload)
            if len(events) == count:
                return

    await asyncio.wait_for(collect(), timeout)
    return events


def trigger() -> IysPushInboxTrigger:
    return IysPushInboxTrigger(iys_conn_id="iys_default", postgres_conn_id="iys_postgres", poll_seconds=0.05)


def test_the_trigger_fires_for_new_movements_and_not_again_for_the_same(sim, push_db):
    keep(
        push_db,
        accepted("t-1", "RET", "2026-12-04 10:00:00"),
        accepted("t-2", "ONAY", "2026-12-04 10:00:00", "+905321110002"),
    )
    newest = rows(push_db, "SELECT max(id) FROM iys.push_inbox")[0][0]

    async def scenario():
        watching = trigger().run()
        first = await asyncio.wait_for(anext(watching), 30)
        # a later movement fires once more, for itself only
        keep(push_db, accepted("t-3", "RET", "2026-12-04 10:02:00", "+905321110003"))
        second = await asyncio.wait_for(anext(watching), 30)
        await watching.aclose()
        return first.payload, second.payload

    first, second = asyncio.run(scenario())
    assert first == {"brand_code": SIM_BRAND_CODE, "pushed_movements": 2, "up_to_inbox_id": newest}
    assert second["pushed_movements"] == 1 and second["up_to_inbox_id"] > newest


def test_a_restarted_trigger_fires_again_only_for_what_no_run_announced(sim, push_db):
    keep(push_db, accepted("t-1", "RET", "2026-12-04 10:00:00"))
    push_db.execute("UPDATE iys.push_inbox SET announced_at = now()")
    keep(push_db, accepted("t-2", "RET", "2026-12-04 10:01:00", "+905321110002"))
    [payload] = asyncio.run(first_events(trigger(), 1))
    assert payload["pushed_movements"] == 1


@pytest.mark.parametrize("poll_seconds", [0.5])
def test_the_trigger_serialises_to_what_rebuilds_it(poll_seconds):
    original = IysPushInboxTrigger(iys_conn_id="iys_brand_a", postgres_conn_id="pg", poll_seconds=poll_seconds)
    path, kwargs = original.serialize()
    module, name = path.rsplit(".", 1)
    import importlib

    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
