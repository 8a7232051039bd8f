"""The push DAG's task: apply the inbox's leftovers, announce pushed movements on the consents asset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from iys_provider.assets import CONSENTS_ASSET
from iys_provider.lineage import TaskLineage
from iys_provider.operators.base import IysBaseOperator
from iys_provider.push.apply import PushInboxSweep

if TYPE_CHECKING:
    from airflow.sdk import Context


class IysApplyPushInboxOperator(IysBaseOperator):
    """Apply what the push receiver kept but could not apply, and tell ``asset``'s consumers.

    Started by the push inbox's event trigger: the triggering events name the newest inbox row
    they saw, and the movements up to it are announced on ``asset`` (the brand's consents) with
    their counts. Run by hand (no triggering event), it sweeps the whole inbox. Skips, with no
    asset event, when nothing new was pushed.

    :param asset: the asset to update, e.g. the brand's :func:`~iys_provider.assets.consents_asset`.
    """

    lineage = TaskLineage(reads=("push_inbox",), writes=("push_inbox", "consent_events", "consents"))

    def __init__(self, *, asset: Asset = CONSENTS_ASSET, **kwargs: Any) -> None:
        outlets = list(kwargs.pop("outlets", None) or [])
        # Airflow records an event only for an asset among the task's outlets.
        kwargs["outlets"] = outlets if asset in outlets else [*outlets, asset]
        super().__init__(**kwargs)
        self.asset = asset

    def execute(self, context: Context) -> dict[str, Any]:
        brand_code = self.iys_hook.brand_code
        with self.database() as conn:
            sweep = PushInboxSweep(conn, brand_code=brand_code).run(up_to_id=_newest_triggering_id(context))
        result = sweep.result()
        self.log.info(
            "Push inbox: %d leftover movements applied (%d consents changed), %d still failing, "
            "%d movements announced (%d RET), %d unapplied",
            sweep.applied_movements,
            sweep.consent_changes,
            sweep.still_failing,
            sweep.announced,
            sweep.announced_rets,
            sweep.unapplied,
        )
        if sweep.still_failing:
            raise RuntimeError(
                f"{sweep.still_failing} pushed movements could not be applied (iys.push_inbox.apply_error "
                "says why); they stay in the inbox and the next run tries again"
            )
        if not sweep.announced and not sweep.applied_movements:
            raise AirflowSkipException("No pushed movement to announce")
        context["outlet_events"][self.asset].extra = {
            "brand_code": brand_code,
            "consent_changes": sweep.announced,
            "source": "push",
            "rets": sweep.announced_rets,
            "run_id": context["dag_run"].run_id,
        }
        return result


def _newest_triggering_id(context: Context) -> int | None:
    """The newest inbox id the triggering asset events name; None for a run without them."""
    ids = [
        event.extra.get("payload", {}).get("up_to_inbox_id")
        for events in (context.get("triggering_asset_events") or {}).values()
        for event in events
    ]
    ids = [i for i in ids if isinstance(i, int)]
    return max(ids) if ids else None
