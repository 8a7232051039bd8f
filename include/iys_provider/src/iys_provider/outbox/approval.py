"""When a night's outbox is too large to send without a person's approval, and what the person is shown.

A broken export in the brand's application (a bad migration, a wrong ``WHERE``) can write a
hundred thousand RETs into the outbox in one afternoon. İYS's write rules make each costly to
undo: a new ONAY needs a fresh consent from the citizen. So before the push, the pending updates
that nobody approved yet are counted; when they are unusual, every one of them is **held** and
the run waits in Airflow's ``awaiting_input`` state for a person (the SQL is in
:mod:`iys_provider.outbox.store`, the Airflow face in
:mod:`iys_provider.operators.outbox_approval`):

==========  ===============================================================================
answer      what happens to the held rows
==========  ===============================================================================
Approve     back to ``pending``, marked approved (by whom, when): this run's push sends them
Reject      stay ``held``, code ``NOT_APPROVED``; the run fails; the next run asks again
timeout     stay ``held``; the run fails; the next run asks again
==========  ===============================================================================

Held RETs keep their users out of ``iys.sendable`` meanwhile, and count in the opt-out deadline
watch: a RET nobody approves still fails the runs before its legal deadline.

The defaults, and why:

* ``max_updates`` 10,000: a large brand's normal night (opt-outs after a campaign, a call
  centre's opt-ins) stays below it, while an export that runs away over one table does not.
* ``max_share`` 5 % of the brand's ONAY consents (address × channel, what a RET can withdraw): a
  campaign's unsubscribes are a fraction of a percent of its audience; a wrong ``WHERE`` is a
  segment. Counted only from :data:`MIN_UPDATES_FOR_SHARE` updates on, so a small brand's few
  opt-outs never wait for a person.

A false alarm costs a click; a mass opt-out sent by mistake cannot be taken back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from iys_provider.normalize import mask_recipient

DEFAULT_MAX_UPDATES = 10_000
DEFAULT_MAX_SHARE = 0.05
#: Below this many updates the share rule is not applied (a brand of 40 users, 3 opt-outs).
MIN_UPDATES_FOR_SHARE = 100
#: How many held addresses the approval request shows, masked.
SAMPLE_SIZE = 10


@dataclass(frozen=True)
class ApprovalThresholds:
    """Above either, the push waits for a person: ``max_updates`` pending updates, or ``max_share``
    of the brand's ONAY consents (from :data:`MIN_UPDATES_FOR_SHARE` updates on)."""

    max_updates: int = DEFAULT_MAX_UPDATES
    max_share: float = DEFAULT_MAX_SHARE

    def __post_init__(self) -> None:
        if self.max_updates < 0:
            raise ValueError(f"max_updates must be 0 or more, not {self.max_updates!r}")
        if not 0 < self.max_share <= 1:
            raise ValueError(f"max_share must be above 0 and at most 1, not {self.max_share!r}")


@dataclass(frozen=True)
class OutboxVolume:
    """The pending updates nobody approved yet, by status, against the brand's ONAY consents."""

    by_status: Mapping[str, int]
    onay_consents: int

    @property
    def updates(self) -> int:
        return sum(self.by_status.values())

    @property
    def share(self) -> float | None:
        """Updates per ONAY consent; ``None`` while the brand has none (nothing synced yet)."""
        return self.updates / self.onay_consents if self.onay_consents else None


def unusual_volume(volume: OutboxVolume, thresholds: ApprovalThresholds) -> str | None:
    """Why ``volume`` needs a person's approval, or ``None`` when the push may send it."""
    updates = volume.updates
    if updates > thresholds.max_updates:
        return f"{updates:,} updates are more than {thresholds.max_updates:,}"
    if updates >= MIN_UPDATES_FOR_SHARE:
        share = volume.share
        if share is None:
            return f"{updates:,} updates while no ONAY consent of the brand is synced yet"
        if share > thresholds.max_share:
            return f"{updates:,} updates are {share:.2%} of the brand's {volume.onay_consents:,} ONAY consents, more than {thresholds.max_share:.1%}"
    return None


def approval_request(
    volume: OutboxVolume, reason: str, sample: Sequence[tuple[str, str, str]], brand_code: int
) -> tuple[str, str]:
    """The subject and Markdown body a person sees; ``sample`` holds ``(type, status, recipient)``, masked here."""
    by_status = ", ".join(f"{count:,} {status}" for status, count in sorted(volume.by_status.items()))
    share = f"{volume.share:.2%}" if volume.share is not None else "n/a (no ONAY consent synced yet)"
    lines = [
        f"The outbox of brand {brand_code} holds **{volume.updates:,}** updates to send to İYS ({by_status}): "
        f"{reason}.",
        "",
        f"* Share of the brand's ONAY consents: **{share}** of {volume.onay_consents:,}",
        "* A RET sent to İYS cannot be taken back: a new ONAY needs a fresh consent from each citizen.",
        "* Until you answer, the rows are held and the users with a held RET are not in `iys.sendable`.",
        "",
        "**Approve** sends them in this run. **Reject** keeps them unsent (state `held`, code "
        "`NOT_APPROVED`) and fails the run; the next run asks again. To drop them for good, see the "
        "README (outbox, approval).",
        "",
        f"A sample ({len(sample)} of {volume.updates:,}):",
        "",
        "| type | status | recipient |",
        "|---|---|---|",
        *(f"| {type_} | {status} | {mask_recipient(recipient)} |" for type_, status, recipient in sample),
    ]
    subject = f"İYS brand {brand_code}: approve sending {volume.updates:,} consent updates?"
    return subject, "\n".join(lines)
