"""SQL of forgetting leavers: their links, quarantine rows, fingerprints and queued snapshot rows, per brand.

What goes and why, and the safety rule, are in :mod:`iys_provider.people.leavers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from iys_provider.people.leavers import DEFAULT_LEAVER_CHUNK_SIZE, Forgotten, check_leavers

KNOWN_USERS_SQL = "SELECT count(*) FROM iys.user_sources WHERE brand_code = %s"

# One statement, so a chunk is forgotten whole or not at all: a fingerprint never goes without
# the links (the user would not be found again, its links would stay for good).
FORGET_USERS_SQL = """
WITH links AS (
    DELETE FROM iys.user_recipients WHERE brand_code = %(brand)s AND user_id = ANY(%(users)s) RETURNING 1
), quarantine AS (
    DELETE FROM iys.rejected_recipients WHERE brand_code = %(brand)s AND user_id = ANY(%(users)s) RETURNING 1
), fingerprints AS (
    DELETE FROM iys.user_sources WHERE brand_code = %(brand)s AND user_id = ANY(%(users)s) RETURNING 1
)
SELECT (SELECT count(*) FROM fingerprints), (SELECT count(*) FROM links), (SELECT count(*) FROM quarantine)
"""

# A scan still open holds a snapshot of the user (raw phone and e-mail included), and its pending
# batch would link the user again.
FORGET_QUEUED_USERS_SQL = """
DELETE FROM iys.initial_sync_queue q
 USING iys.initial_sync_scans s
 WHERE s.brand_code = %(brand)s AND s.finished_at IS NULL
   AND q.scan_id = s.scan_id AND q.user_id = ANY(%(users)s)
"""


def known_users(conn: psycopg.Connection, brand_code: int) -> int:
    """Users of the brand the package has processed (and not forgotten)."""
    return conn.execute(KNOWN_USERS_SQL, (brand_code,)).fetchone()[0]


def forget_users(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    user_ids: Sequence[str],
    chunk_size: int = DEFAULT_LEAVER_CHUNK_SIZE,
    open_scan_queue: bool = True,
) -> Forgotten:
    """Forget ``user_ids`` of the brand, one transaction per chunk (a savepoint inside a caller's transaction).

    ``open_scan_queue``: also drop their rows from the queue of the brand's open scan; the plan of
    a new scan passes False (its snapshot holds no leaver, and a million-row queue would be read
    for nothing).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size!r}")
    total = Forgotten()
    for start in range(0, len(user_ids), chunk_size):
        params = {"brand": brand_code, "users": list(user_ids[start : start + chunk_size])}
        with conn.transaction():
            leavers, links, quarantine = conn.execute(FORGET_USERS_SQL, params).fetchone()
            queued = conn.execute(FORGET_QUEUED_USERS_SQL, params).rowcount if open_scan_queue else 0
        total += Forgotten(leavers, links, quarantine, queued)
    return total


def forget_leavers(
    conn: psycopg.Connection,
    *,
    brand_code: int,
    user_ids: Sequence[str],
    max_share: float,
    chunk_size: int = DEFAULT_LEAVER_CHUNK_SIZE,
    open_scan_queue: bool = True,
) -> Forgotten:
    """The safety rule (:func:`~iys_provider.people.leavers.check_leavers`), then :func:`forget_users`.

    Raises :class:`~iys_provider.people.leavers.TooManyLeaversError` before anything is deleted.
    """
    if not user_ids:
        return Forgotten()
    check_leavers(leavers=len(user_ids), known_users=known_users(conn, brand_code), max_share=max_share)
    return forget_users(
        conn, brand_code=brand_code, user_ids=user_ids, chunk_size=chunk_size, open_scan_queue=open_scan_queue
    )
