"""The ``iys_push`` DAG: started by İYS pushes, it applies the inbox's leftovers and tells the consents' consumers."""

from __future__ import annotations

from airflow.sdk import DAG, Asset, AssetWatcher, Param

from iys_provider.config import IysSettings, load_settings
from iys_provider.dags.common import CONNECTION_ARGS, IysBrand, connection_params, iys_brands
from iys_provider.operators.push_inbox import IysApplyPushInboxOperator
from iys_provider.triggers.push_inbox import IysPushInboxTrigger

DOC = """
### İYS Push: a citizen's movement in the brand's database in seconds

İYS posts every citizen-side movement (the 3338 SMS line, e-Devlet, the İYS app) to the brand's
push receiver (`iys-push-receiver`), which stores it in `iys.push_inbox` and applies it to
`iys.consents` by the change feed's rules before it answers İYS. This DAG is started by an event
trigger on the inbox (on the triggerer, every `[iys] push_poll_seconds`): it applies what the
receiver could not apply and announces the pushed movements on the brand's consents asset, so
campaign DAGs scheduled on it run with fresh opt-outs.

Push is best-effort: the nightly incremental sync and the daily reconciliation remain the
guarantee. Set-up: docs/push.md.
"""

DAG_ID = "iys_push"


def inbox_asset(brand: IysBrand) -> Asset:
    """The asset the inbox's event trigger updates, one per brand (its own, not the consents asset)."""
    return Asset(
        name=f"iys_push_inbox__{brand.iys_conn_id}",
        uri=f"iys://push-inbox/{brand.iys_conn_id}",
        group="iys",
    )


def _params(brand: IysBrand, settings: IysSettings) -> dict[str, Param]:
    params = connection_params(brand.iys_conn_id)
    params["postgres_conn_id"] = Param(
        settings.push_postgres_conn_id,
        type="string",
        minLength=1,
        title="Postgres connection",
        description="Database holding the iys schema and the push inbox ([iys] push_postgres_conn_id).",
    )
    return params


def build_push_dags(*, settings: IysSettings | None = None) -> list[DAG]:
    """One push DAG per connection in ``[iys] connections``."""
    settings = settings or load_settings()
    return [build_push_dag(brand=brand, settings=settings) for brand in iys_brands(settings=settings)]


def build_push_dag(brand: IysBrand | None = None, *, settings: IysSettings | None = None) -> DAG:
    settings = settings or load_settings()
    brand = brand or IysBrand()
    trigger = IysPushInboxTrigger(
        iys_conn_id=brand.iys_conn_id,
        postgres_conn_id=settings.push_postgres_conn_id,
        poll_seconds=settings.push_poll_seconds,
    )
    watched = Asset(
        name=inbox_asset(brand).name,
        uri=inbox_asset(brand).uri,
        group="iys",
        watchers=[AssetWatcher(name=f"iys_push_inbox_watcher__{brand.iys_conn_id}", trigger=trigger)],
    )
    with DAG(
        dag_id=brand.dag_id(DAG_ID),
        description="Apply İYS's pushed movements left over by the receiver; announce them on the consents asset",
        doc_md=brand.doc_md(DOC),
        schedule=[watched],
        catchup=False,
        # Events that arrive during a run are queued and start one more run: nothing is announced twice.
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=brand.tags,
        params=_params(brand, settings),
    ) as dag:
        IysApplyPushInboxOperator(
            task_id="apply_push_inbox",
            asset=brand.asset,
            retries=3,
            **CONNECTION_ARGS,
        )
    return dag
