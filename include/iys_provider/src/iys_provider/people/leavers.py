"""Users who leave: forgetting what the package kept about a user the source query no longer returns.

A user deleted from the brand's database (a KVKK erasure request, a closed account) or filtered
out by the source query is a *leaver*. Its rows go, per brand, in one transaction per chunk of
users (the SQL is in :mod:`iys_provider.people.leavers_store`):

=========================  ====================================================================
table                      what goes
=========================  ====================================================================
``user_recipients``        the user's links to its phone and e-mail: ``iys.sendable`` stops
                           listing the user at once, and an address no other user holds leaves
                           the view with it
``rejected_recipients``    the raw phone, e-mail or recipient type that could not be used
``user_sources``           the fingerprint: the user is no longer known, and comes back as a new
                           user if the source returns it again
``initial_sync_queue``     the user's snapshot row in a scan still open (incremental run only),
                           so a pending batch cannot link the user again
``consents``               nothing: a consent row is İYS's record of an address, not the user's,
                           and holds no user id; the outbox needs it to know what İYS holds
=========================  ====================================================================

Leavers are found twice: by the incremental run (users in ``user_sources`` that the source query
does not return, :meth:`~iys_provider.people.user_source.UserSource.read_departed`) and when the initial
sync plans a scan (users in ``user_sources`` that the new snapshot does not hold).

The safety rule. A broken source query (an empty table after a failed restore, a wrong schema, a
filter gone wrong, user ids in a new format) looks exactly like everybody leaving; forgetting
then would unlink the whole user base and leave nothing sendable. So forgetting is refused,
before anything is deleted, when it looks implausible:

============================================  ================================================
leavers of the ``known`` users                verdict
============================================  ================================================
none                                          nothing to do
all of them (the source returns none of the   refused, unless ``max_leaver_share`` is 1
known users, e.g. it returns no user at all)
more than ``max_leaver_share`` × ``known``    refused
(default 0.5)
otherwise                                     forgotten
============================================  ================================================

A refusal names the numbers and the operator argument (``max_leaver_share``) that lets a
deliberate mass departure through; a run after the source is fixed simply finds fewer leavers.
"""

from __future__ import annotations

import math
from typing import TypedDict

# Shared with the initial sync, so they live in models; imported from here too.
from iys_provider.models import DEFAULT_MAX_LEAVER_SHARE as DEFAULT_MAX_LEAVER_SHARE
from iys_provider.models import Forgotten as Forgotten
from iys_provider.models import StepKind

#: Leavers forgotten per transaction.
DEFAULT_LEAVER_CHUNK_SIZE = 5000


class TooManyLeaversError(ValueError):
    """Forgetting was refused by the safety rule; the message names the numbers and the override."""


class LeaversResult(TypedDict):
    """Users forgotten, their links to addresses and their quarantined values removed."""

    step: str
    leavers: int
    links_removed: int
    quarantine_rows_removed: int


def leavers_result(forgotten: Forgotten) -> LeaversResult:
    return LeaversResult(
        step=StepKind.LEAVERS.value,
        leavers=forgotten.leavers,
        links_removed=forgotten.links_removed,
        quarantine_rows_removed=forgotten.quarantine_rows_removed,
    )


def parse_max_leaver_share(value: object) -> float:
    """``max_leaver_share`` as given to an operator (templated fields arrive as text)."""
    try:
        share = float(str(value).strip()) if not isinstance(value, bool) else math.nan
    except ValueError:
        share = math.nan
    if not 0 < share <= 1:
        raise ValueError(
            f"max_leaver_share must be a share of the known users above 0 and at most 1 (1 turns the "
            f"safety rule off), not {value!r}"
        )
    return share


def refusal(*, leavers: int, known_users: int, max_share: float) -> str | None:
    """Why forgetting ``leavers`` of ``known_users`` is refused (see the table above), or None."""
    if leavers <= 0 or max_share >= 1:
        return None
    if leavers >= known_users:
        return (
            f"the source query returns none of the {known_users} users synced so far: it looks broken (an empty "
            "or wrong table, a filter, changed user ids), so nobody was forgotten. Fix the source query; if every "
            f"user really left, rerun with max_leaver_share=1 {_OVERRIDE}"
        )
    if leavers / known_users > max_share:
        return (
            f"{leavers} of the {known_users} users synced so far ({leavers / known_users:.0%}) are no longer "
            f"returned by the source query, more than max_leaver_share={max_share:g} allows in one run; nobody "
            f"was forgotten. Check the source query; if they really left, rerun with "
            f"max_leaver_share={_share_that_allows(leavers, known_users):g} or more {_OVERRIDE}"
        )
    return None


def check_leavers(*, leavers: int, known_users: int, max_share: float) -> None:
    """Raise :class:`TooManyLeaversError` when :func:`refusal` refuses."""
    reason = refusal(leavers=leavers, known_users=known_users, max_share=max_share)
    if reason is not None:
        raise TooManyLeaversError(reason)


_OVERRIDE = "(an argument of IysForgetLeaversOperator in the incremental run, of IysPlanInitialSyncOperator for a scan)"


def _share_that_allows(leavers: int, known_users: int) -> float:
    # Rounded up to whole percent (in integers: no float rounding), so the value suggested lets this departure through.
    return min(1.0, -(-leavers * 100 // known_users) / 100)
