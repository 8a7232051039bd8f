"""Hold an unusual volume of outbox updates until a person approves it, in Airflow's ``awaiting_input`` state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypedDict

from airflow.providers.standard.exceptions import HITLTimeoutError
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from iys_provider.lineage import TaskLineage
from iys_provider.models import StepKind
from iys_provider.operators.base import IysBaseOperator
from iys_provider.outbox.approval import (
    DEFAULT_MAX_SHARE,
    DEFAULT_MAX_UPDATES,
    SAMPLE_SIZE,
    ApprovalThresholds,
    approval_request,
    unusual_volume,
)
from iys_provider.outbox.store import (
    held_sample,
    hold_unapproved,
    mark_not_approved,
    release_held,
    unapproved_volume,
)
from iys_provider.templating import as_float, as_int

APPROVE = "Approve"
REJECT = "Reject"
#: Shorter than a day, so a question nobody answers fails the run before the next night's.
DEFAULT_APPROVAL_TIMEOUT_HOURS = 12.0


class ApprovalResult(TypedDict):
    """``held``: updates held for a person this run (0: the volume was usual, nobody was asked);
    ``released``: of those, approved and back in the queue."""

    step: str
    held: int
    released: int
    responded_by: str | None


class IysApproveUnusualVolumeOperator(IysBaseOperator, HITLOperator):
    """Before the push: when the outbox holds an unusual volume, hold it and wait for a person.

    The pending updates nobody approved yet (and those an earlier run held) are counted against
    ``max_updates`` and ``max_share`` of the brand's ONAY consents (the rules and defaults are in
    :mod:`iys_provider.outbox.approval`). A usual volume passes at once: nobody is asked. An
    unusual one is held (state ``held``: the push never reads it) and the task waits in
    ``awaiting_input`` with the counts, the share and a masked sample. **Approve** puts the rows
    back in the queue, marked approved, and the push downstream sends them; **Reject** leaves
    them held with the code ``NOT_APPROVED`` and fails the task; no answer within
    ``response_timeout`` fails it too. Either way nothing is lost, and the next run asks again.

    Put it right before :class:`~iys_provider.operators.consent_updates.IysPushConsentUpdatesOperator`
    with ``retries=0``: the push runs whatever the answer (``trigger_rule="all_done"``) and finds
    only what may be sent.

    :param max_updates: more pending updates than this wait for a person. (templated)
    :param max_share: more than this share of the brand's ONAY consents waits for a person. (templated)
    :param approval_timeout_hours: how long to wait for an answer (default 12). (templated)
    """

    lineage = TaskLineage(reads=("consent_updates", "consents"), writes=("consent_updates",))

    template_fields: Sequence[str] = (
        *IysBaseOperator.template_fields,
        *HITLOperator.template_fields,
        "max_updates",
        "max_share",
        "approval_timeout_hours",
    )

    def __init__(
        self,
        *,
        max_updates: int | str = DEFAULT_MAX_UPDATES,
        max_share: float | str = DEFAULT_MAX_SHARE,
        approval_timeout_hours: float | str = DEFAULT_APPROVAL_TIMEOUT_HOURS,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", "İYS: approve an unusual volume of consent updates")
        super().__init__(options=[APPROVE, REJECT], multiple=False, **kwargs)
        self.max_updates = max_updates
        self.max_share = max_share
        self.approval_timeout_hours = approval_timeout_hours

    def execute(self, context: Context) -> ApprovalResult:
        thresholds = ApprovalThresholds(
            max_updates=as_int(self.max_updates, "max_updates"), max_share=as_float(self.max_share, "max_share")
        )
        brand_code = self.iys_hook.brand_code
        run_id = context["run_id"]
        with self.database() as conn:
            volume = unapproved_volume(conn, brand_code)
            reason = unusual_volume(volume, thresholds)
            if reason is None:
                self.log.info("Outbox: %d updates to send, within the approval thresholds", volume.updates)
                return ApprovalResult(step=StepKind.APPROVAL.value, held=0, released=0, responded_by=None)
            held = hold_unapproved(conn, brand_code, run_id)
            sample = held_sample(conn, brand_code, run_id, SAMPLE_SIZE)
        self.subject, self.body = approval_request(volume, reason, sample, brand_code)
        self.response_timeout = timedelta(hours=as_float(self.approval_timeout_hours, "approval_timeout_hours"))
        self.log.warning("Outbox: %s; %d updates held until a person approves them", reason, held)
        return super().execute(context)  # parks the task in awaiting_input

    def execute_complete(self, context: Context, event: dict[str, Any]) -> ApprovalResult:
        try:
            answer = super().execute_complete(context, event)
        except HITLTimeoutError:
            hours = as_float(self.approval_timeout_hours, "approval_timeout_hours")
            raise AirflowFailException(
                f"Nobody answered within {hours:g} h: the unusual volume of outbox "
                "updates stays held and unsent (state held); the next run asks again."
            ) from None
        responder = answer["responded_by_user"] or {}
        by = str(responder.get("name") or responder.get("id") or "unknown")
        brand_code = self.iys_hook.brand_code
        run_id = context["run_id"]
        with self.database() as conn:
            if answer["chosen_options"] == [APPROVE]:
                released = release_held(conn, brand_code, run_id, approved_by=by)
                self.log.info("%s approved: %d held updates go to İYS in this run", by, released)
                return ApprovalResult(step=StepKind.APPROVAL.value, held=released, released=released, responded_by=by)
            kept = mark_not_approved(conn, brand_code, run_id, detail=f"{by} rejected the volume in run {run_id}"[:500])
        raise AirflowFailException(
            f"{by} rejected sending the outbox: {kept} updates stay held (code NOT_APPROVED) and unsent; the next "
            "run asks again. Their users stay out of iys.sendable; held RETs count in the opt-out deadline watch."
        )
