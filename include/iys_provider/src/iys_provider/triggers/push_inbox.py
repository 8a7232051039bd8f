"""An event trigger on the push inbox: starts the push DAG when İYS has pushed movements.

The receiver has already applied each movement to ``iys.consents`` when it answered İYS; this
trigger only turns "new movements in the inbox" into an Airflow asset event, so that the push
DAG runs (applies leftovers, tells the consents asset's consumers) and the run is visible in
the Airflow UI. It polls one cheap indexed query every ``poll_seconds`` on the triggerer.

At least once: the watermark lives in memory; after a triggerer restart the movements no push
DAG run has announced yet fire again, and the run finds them announced or not by the inbox's
``announced_at``. The event's payload holds counts and an inbox id, never personal data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from iys_provider.push.store import UNANNOUNCED_SQL

log = logging.getLogger(__name__)


class IysPushInboxTrigger(BaseEventTrigger):
    """Fires when the brand of ``iys_conn_id`` has unannounced movements in ``iys.push_inbox``.

    :param iys_conn_id: the brand's ``iys`` connection (its brand code selects the inbox rows).
    :param postgres_conn_id: the database holding schema ``iys``.
    :param poll_seconds: how often the inbox is looked at.
    """

    def __init__(self, *, iys_conn_id: str, postgres_conn_id: str, poll_seconds: float = 30.0) -> None:
        super().__init__()
        self.iys_conn_id = iys_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.poll_seconds = float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "iys_conn_id": self.iys_conn_id,
                "postgres_conn_id": self.postgres_conn_id,
                "poll_seconds": self.poll_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import psycopg

        brand_code, conninfo = await self._brand_and_database()
        after = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    while True:
                        cursor = await conn.execute(UNANNOUNCED_SQL, {"brand": brand_code, "after": after})
                        count, newest = await cursor.fetchone()
                        if count:
                            yield TriggerEvent(
                                {"brand_code": brand_code, "pushed_movements": count, "up_to_inbox_id": newest}
                            )
                            after = newest
                        await asyncio.sleep(self.poll_seconds)
            except psycopg.OperationalError as exc:
                # The database restarting must not end the watch: the receiver keeps the movements.
                log.warning("Push inbox not readable (%s); trying again in %s s", type(exc).__name__, self.poll_seconds)
                await asyncio.sleep(self.poll_seconds)

    async def _brand_and_database(self) -> tuple[int, str]:
        from airflow.sdk import BaseHook
        from psycopg.conninfo import make_conninfo

        from iys_provider.hooks.settings import IysConnectionSettings

        iys = await BaseHook.aget_connection(self.iys_conn_id)
        brand_code = IysConnectionSettings.from_connection(iys).brand_code
        pg = await BaseHook.aget_connection(self.postgres_conn_id)
        params = {
            "host": pg.host,
            "port": pg.port,
            "user": pg.login,
            "password": pg.password,
            "dbname": pg.schema,
            **{k: v for k, v in pg.extra_dejson.items() if k in ("sslmode", "sslrootcert", "sslcert", "sslkey")},
        }
        return brand_code, make_conninfo(**{k: v for k, v in params.items() if v not in (None, "")})
