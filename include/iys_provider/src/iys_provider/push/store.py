"""The push inbox: each movement kept once, applied by the change feed's rules, in one transaction.

A movement is written to ``iys.push_inbox`` (unique on brand and ``transactionId``) and, in a
savepoint of the same transaction, applied to ``iys.consents`` through
:func:`iys_provider.change_feed.store.store_change_page` — the same rules as the nightly pull,
so a movement that arrives by push and again by the pull or the reconciliation file is applied
once. If applying fails, the savepoint is rolled back, the movement stays in the inbox with the
error, and the push DAG applies it later (:func:`apply_pending`): a movement answered 2xx is
never lost.

A redelivery adds no row: it counts. Two different movements under one transaction id (İYS
gives movements of one address in the same second one id) keep the later, as the feed does.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from iys_provider.change_feed.store import store_change_page
from iys_provider.models import ChangePage, ChangeStream
from iys_provider.push.rules import ItemVerdict, PushedMovement, quarantine_text, text_hash

# Sorted by transaction id so concurrent lists lock inbox rows in one order.
UPSERT_INBOX_SQL = """
INSERT INTO iys.push_inbox AS i (brand_code, transaction_id, channel, movement, creation_date)
SELECT %(brand)s, t.transaction_id, %(channel)s, t.movement, t.creation_date
  FROM unnest(%(ids)s::text[], %(movements)s::jsonb[], %(creation_dates)s::timestamptz[])
       AS t(transaction_id, movement, creation_date)
 ORDER BY t.transaction_id
ON CONFLICT (brand_code, transaction_id) DO UPDATE
   SET deliveries = i.deliveries + 1,
       last_delivery_at = now(),
       movement = CASE WHEN EXCLUDED.movement IS DISTINCT FROM i.movement
                        AND EXCLUDED.creation_date >= i.creation_date THEN EXCLUDED.movement ELSE i.movement END,
       creation_date = greatest(i.creation_date, EXCLUDED.creation_date),
       applied_at = CASE WHEN EXCLUDED.movement IS DISTINCT FROM i.movement
                          AND EXCLUDED.creation_date >= i.creation_date THEN NULL ELSE i.applied_at END
RETURNING i.id, i.transaction_id, (xmax = 0) AS inserted, i.applied_at IS NULL AS to_apply
"""

MARK_APPLIED_SQL = """
UPDATE iys.push_inbox SET applied_at = now(), apply_error = NULL, announced_at = NULL WHERE id = ANY(%(ids)s)
"""

MARK_APPLY_FAILED_SQL = """
UPDATE iys.push_inbox SET apply_error = %(error)s WHERE id = ANY(%(ids)s)
"""

UPSERT_QUARANTINE_SQL = """
INSERT INTO iys.push_quarantine AS q (brand_code, channel, position, reason, item, item_hash)
VALUES (%(brand)s, %(channel)s, %(position)s, %(reason)s, %(item)s, %(item_hash)s)
ON CONFLICT (brand_code, channel, item_hash) DO UPDATE
   SET deliveries = q.deliveries + 1, received_at = now()
"""

TOUCH_CHANNEL_SQL = """
INSERT INTO iys.push_channels AS c (brand_code, channel, last_push_at, last_test_at)
VALUES (%(brand)s, %(channel)s, CASE WHEN %(pushed)s THEN now() END, CASE WHEN %(tested)s THEN now() END)
ON CONFLICT (brand_code, channel) DO UPDATE
   SET last_push_at = coalesce(EXCLUDED.last_push_at, c.last_push_at),
       last_test_at = coalesce(EXCLUDED.last_test_at, c.last_test_at)
"""

PENDING_SQL = """
SELECT id, movement FROM iys.push_inbox
 WHERE brand_code = %(brand)s AND applied_at IS NULL
 ORDER BY id
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED
"""

ANNOUNCE_SQL = """
WITH told AS (
    UPDATE iys.push_inbox SET announced_at = now()
     WHERE brand_code = %(brand)s AND announced_at IS NULL AND applied_at IS NOT NULL AND id <= %(up_to)s
    RETURNING movement->>'type' AS channel, movement->>'status' AS status
)
SELECT count(*), count(*) FILTER (WHERE status = 'RET') FROM told
"""

#: One statement for the trigger (sync or async): the newest unannounced movement after ``after``.
UNANNOUNCED_SQL = """
SELECT count(*), max(id) FROM iys.push_inbox
 WHERE brand_code = %(brand)s AND announced_at IS NULL AND id > %(after)s
"""


@dataclass(frozen=True)
class PushStored:
    """What one pushed body changed."""

    received: int  # movements accepted from the body
    new: int  # first deliveries
    redelivered: int  # already in the inbox: counted, nothing stored again
    applied: int  # consents changed
    held: int  # stored with a value İYS never documented, not applied
    apply_failed: int  # kept in the inbox for the push DAG
    quarantined: int
    test_records: int


@dataclass(frozen=True)
class Announced:
    movements: int
    rets: int


def store_pushed(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    channel: str,
    accepted: list[ItemVerdict],
    quarantined: list[ItemVerdict],
    test_records: int,
    unreadable: tuple[str, str] | None = None,
) -> PushStored:
    """Keep one pushed body: inbox, consents (by the feed's rules), quarantine and channel health.

    Commits before returning: the receiver answers 2xx only after this returns. ``unreadable``
    is ``(reason, body text)`` for a body that could not be read at all.
    """
    movements = _newest_per_transaction(accepted)
    with conn.transaction():
        rows = []
        if movements:
            rows = conn.execute(
                UPSERT_INBOX_SQL,
                {
                    "brand": brand_code,
                    "channel": channel,
                    "ids": [m.transaction_id for m in movements],
                    "movements": [Jsonb(m.model_dump(mode="json", by_alias=True)) for m in movements],
                    "creation_dates": [m.creation_date for m in movements],
                },
            ).fetchall()
        to_apply = {transaction_id: row_id for row_id, transaction_id, _, pending in rows if pending}
        applied = held = failed = 0
        if to_apply:
            page = [m for m in movements if m.transaction_id in to_apply]
            applied, held, failed = _apply(conn, brand_code, page, list(to_apply.values()))
        for item in quarantined:
            _quarantine(conn, brand_code, channel, item.position, item.reason or "unreadable", item.raw)
        if unreadable is not None:
            reason, text = unreadable
            _quarantine(conn, brand_code, channel, None, reason, text)
        conn.execute(
            TOUCH_CHANNEL_SQL,
            {
                "brand": brand_code,
                "channel": channel,
                "pushed": bool(movements or quarantined or unreadable),
                "tested": test_records > 0,
            },
        )
    new = sum(1 for _, _, inserted, _ in rows if inserted)
    return PushStored(
        received=len(accepted),
        new=new,
        redelivered=len(rows) - new,
        applied=applied,
        held=held,
        apply_failed=failed,
        quarantined=len(quarantined) + (unreadable is not None),
        test_records=test_records,
    )


def apply_pending(conn: psycopg.Connection, *, brand_code: int, limit: int = 1000) -> tuple[int, int, int]:
    """Apply inbox movements left unapplied; returns (movements, consents changed, still failing)."""
    with conn.transaction():
        rows = conn.execute(PENDING_SQL, {"brand": brand_code, "limit": limit}).fetchall()
        if not rows:
            return 0, 0, 0
        page = [PushedMovement.model_validate(movement) for _, movement in rows]
        applied, _, failed = _apply(conn, brand_code, page, [row_id for row_id, _ in rows])
    return len(rows), applied, failed


def announce(conn: psycopg.Connection, *, brand_code: int, up_to_id: int) -> Announced:
    """Mark applied movements up to ``up_to_id`` as told to the consents asset's consumers."""
    movements, rets = conn.execute(ANNOUNCE_SQL, {"brand": brand_code, "up_to": up_to_id}).fetchone()
    return Announced(movements=movements, rets=rets)


def newest_inbox_id(conn: psycopg.Connection, *, brand_code: int) -> int:
    row = conn.execute("SELECT max(id) FROM iys.push_inbox WHERE brand_code = %s", (brand_code,)).fetchone()
    return row[0] or 0


def _apply(
    conn: psycopg.Connection, brand_code: int, movements: list[PushedMovement], row_ids: list[int]
) -> tuple[int, int, int]:
    """Apply in a savepoint: a failure leaves the movements in the inbox, with the error, for later."""
    try:
        outcome = store_change_page(
            conn,
            brand_code=brand_code,
            stream=ChangeStream.IYS,
            page=ChangePage.model_validate({"list": movements}),
            advance_cursor=False,
        )
    except (psycopg.Error, ValueError) as exc:
        # Also a lock held past the statement timeout: the movement is kept, the push DAG applies it.
        conn.execute(MARK_APPLY_FAILED_SQL, {"ids": row_ids, "error": f"{type(exc).__name__}: {exc}"[:500]})
        return 0, 0, len(row_ids)
    conn.execute(MARK_APPLIED_SQL, {"ids": row_ids})
    return outcome.applied, outcome.held, 0


def _newest_per_transaction(accepted: list[ItemVerdict]) -> list[PushedMovement]:
    """One movement per transaction id: the later creation date, at equal dates the later in the list."""
    newest: dict[str, PushedMovement] = {}
    for item in accepted:
        movement = item.movement
        assert movement is not None and movement.transaction_id and movement.creation_date
        kept = newest.get(movement.transaction_id)
        if kept is None or movement.creation_date >= kept.creation_date:
            newest[movement.transaction_id] = movement
    return list(newest.values())


def _quarantine(
    conn: psycopg.Connection, brand_code: int, channel: str, position: int | None, reason: str, raw: str
) -> None:
    conn.execute(
        UPSERT_QUARANTINE_SQL,
        {
            "brand": brand_code,
            "channel": channel,
            "position": position,
            "reason": reason,
            "item": quarantine_text(raw),
            "item_hash": text_hash(raw),
        },
    )


def inbox_counts(conn: psycopg.Connection, *, brand_code: int) -> dict[str, int]:
    """How many inbox movements are unapplied and unannounced (for the push DAG's result)."""
    unapplied, unannounced = conn.execute(
        "SELECT count(*) FILTER (WHERE applied_at IS NULL), count(*) FILTER (WHERE announced_at IS NULL) "
        "FROM iys.push_inbox WHERE brand_code = %s",
        (brand_code,),
    ).fetchone()
    return {"unapplied": unapplied, "unannounced": unannounced}
