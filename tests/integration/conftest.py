"""The synced world of the incremental-sync tests: three users, İYS knowing Alice (ONAY) and Bob (RET)."""

from __future__ import annotations

import pytest
from incremental_support import ALICE, BOB, OLD, USERS_SQL

from iys_provider.operators.initial_sync import (
    IysFinishInitialSyncOperator,
    IysInitialSyncBatchOperator,
    IysPlanInitialSyncOperator,
)
from tests_support import iys_connection_json_with, sim_control


@pytest.fixture
def synced(sim, pg, monkeypatch):
    """Users linked and checked by a completed initial sync; the simulator knows Alice (ONAY) and Bob (RET)."""
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, batch_result_delay_seconds=0))
    sim_control(sim, "config", {"batch_result_delay": 0})
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    pg.execute("DROP TABLE IF EXISTS public.users")
    pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text)")
    pg.execute(
        "INSERT INTO public.users VALUES ('alice', '0532 111 00 01', 'Alice@Example.com'), "
        "('bob', '5321110002', NULL), ('carol', '+90 532 111 0003', NULL)"
    )
    seed = [
        {"recipient": ALICE, "type": t, "status": "ONAY", "consentDate": OLD, "source": "HS_WEB"}
        for t in ("MESAJ", "ARAMA")
    ] + [{"recipient": BOB, "type": "MESAJ", "status": "RET", "consentDate": OLD, "source": "HS_WEB"}]
    sim_control(sim, "seed", {"consents": seed})
    plan = IysPlanInitialSyncOperator(task_id="plan", recipients_sql=USERS_SQL)
    for batch in plan.execute(context={}):
        IysInitialSyncBatchOperator(task_id="batch", batch=batch).execute(context={})
    IysFinishInitialSyncOperator(task_id="finish").execute(context={})
    return sim
