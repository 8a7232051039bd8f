"""SQL of the success-ratio ledger, ``iys.api_responses``: İYS's answers per API host, hour and status.

The rules (which status counts how, the 24-hour reading, the guard) are in
:mod:`iys_provider.limits.success_ratio`; the hook feeds the ledger through the shared state
(:mod:`iys_provider.limits.shared_state`), in batches. One row per API host, hour and status: a few
dozen rows a day, so the table is never pruned.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import psycopg

from iys_provider.limits.success_ratio import RatioReading, classify

ADD_COUNTS_SQL = """
INSERT INTO iys.api_responses AS r (budget_key, hour, status, response_class, responses)
SELECT %(key)s, hour, status, response_class, responses
  FROM unnest(%(hours)s::timestamptz[], %(statuses)s::int[], %(classes)s::text[], %(counts)s::bigint[])
       AS t(hour, status, response_class, responses)
ON CONFLICT (budget_key, hour, status) DO UPDATE SET responses = r.responses + EXCLUDED.responses
"""
# Every hour bucket overlapping the last 24 hours (a bucket starting after now − 25 h ends after now − 24 h).
READ_24H_SQL = """
SELECT status, sum(responses)::bigint
  FROM iys.api_responses
 WHERE budget_key = %s AND hour > now() - interval '25 hours'
 GROUP BY status
"""


def add_response_counts(conn: psycopg.Connection, budget_key: str, counts: Mapping[tuple[datetime, int], int]) -> None:
    """Add ``{(hour, status): answers}`` to the ledger in one statement."""
    if not counts:
        return
    keys = sorted(counts)  # a stable order, so concurrent flushes lock the rows in the same order
    conn.execute(
        ADD_COUNTS_SQL,
        {
            "key": budget_key,
            "hours": [hour for hour, _ in keys],
            "statuses": [status for _, status in keys],
            "classes": [str(classify(status)) for _, status in keys],
            "counts": [counts[key] for key in keys],
        },
    )


def success_ratio_24h(conn: psycopg.Connection, budget_key: str) -> RatioReading:
    """The answers of the API host ``budget_key`` (``settings.ip_budget_key``) over the last 24 hours."""
    return RatioReading({status: n for status, n in conn.execute(READ_24H_SQL, (budget_key,))})
