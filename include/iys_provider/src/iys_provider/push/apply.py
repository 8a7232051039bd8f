"""One pass of the push DAG: apply what the receiver kept but could not apply, then tell consumers.

The receiver applies each movement in the transaction that stores it, so this pass usually finds
nothing to apply; it exists for the movements whose apply failed (kept in the inbox with the
error) and to mark the movements the consents asset event is about, so that a later event does
not count them again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg

from iys_provider.models import StepKind
from iys_provider.push.store import announce, apply_pending, inbox_counts, newest_inbox_id

#: Movements applied per transaction; a long backlog is applied in several.
APPLY_CHUNK = 1000


@dataclass(frozen=True)
class PushSweep:
    applied_movements: int  # inbox movements applied in this pass (left over by the receiver)
    consent_changes: int  # consents those changed
    still_failing: int  # movements whose apply failed again: kept for the next pass
    announced: int  # applied movements this pass tells the consents asset's consumers about
    announced_rets: int
    unapplied: int  # left in the inbox unapplied after the pass

    def result(self) -> dict[str, object]:
        return {"step": StepKind.PUSH_INBOX.value, **asdict(self)}


class PushInboxSweep:
    """Apply the brand's leftover inbox movements, then mark those up to ``up_to_id`` announced."""

    def __init__(self, conn: psycopg.Connection, *, brand_code: int) -> None:
        self.conn = conn
        self.brand_code = brand_code

    def run(self, up_to_id: int | None = None) -> PushSweep:
        up_to = newest_inbox_id(self.conn, brand_code=self.brand_code) if up_to_id is None else up_to_id
        applied = changed = failing = 0
        while True:
            movements, consents, failed = apply_pending(self.conn, brand_code=self.brand_code, limit=APPLY_CHUNK)
            applied += movements - failed
            changed += consents
            failing += failed
            # A chunk that only failed would be picked again at once: stop, the next pass tries again.
            if movements < APPLY_CHUNK or failed == movements:
                break
        told = announce(self.conn, brand_code=self.brand_code, up_to_id=up_to)
        return PushSweep(
            applied_movements=applied,
            consent_changes=changed,
            still_failing=failing,
            announced=told.movements,
            announced_rets=told.rets,
            unapplied=inbox_counts(self.conn, brand_code=self.brand_code)["unapplied"],
        )
