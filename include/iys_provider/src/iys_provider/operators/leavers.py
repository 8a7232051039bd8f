"""Forget the users the source query no longer returns (deleted, erased under KVKK, filtered out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from iys_provider.initial_sync.scan_ledger_store import initial_sync_done
from iys_provider.lineage import TaskLineage
from iys_provider.operators.base import IysBaseOperator
from iys_provider.people.leavers import (
    DEFAULT_LEAVER_CHUNK_SIZE,
    DEFAULT_MAX_LEAVER_SHARE,
    LeaversResult,
    TooManyLeaversError,
    leavers_result,
    parse_max_leaver_share,
)
from iys_provider.people.leavers_store import forget_leavers
from iys_provider.people.user_source import DEFAULT_STATEMENT_TIMEOUT_SECONDS, configured_user_source, second_connection

__all__ = ["IysForgetLeaversOperator", "LeaversResult"]


class IysForgetLeaversOperator(IysBaseOperator):
    """Forget the users of the brand that the source query no longer returns.

    A user the package processed (it has a fingerprint in ``iys.user_sources``) and the source
    query does not return any more is a leaver: its links (``iys.user_recipients``, hence its rows
    of ``iys.sendable``), its quarantined raw values (``iys.rejected_recipients``), its fingerprint,
    and its snapshot row in a scan still open are deleted, one transaction per chunk. Consents stay:
    they are İYS's record of an address and hold no user. See :mod:`iys_provider.people.leavers`.

    Fails, forgetting nobody, when the source query returns none of the known users or more than
    ``max_leaver_share`` of them would leave: a broken source query must not unlink the user base.
    Skipped until the initial sync has completed once.

    :param recipients_sql: source query, or the path of a ``.sql`` file holding it (relative to
        the DAG's folder or its ``template_searchpath``); default: as
        :func:`~iys_provider.people.user_source.configured_user_source` finds it. (templated)
    :param max_leaver_share: the largest share of the known users that may leave in one run;
        1 lets any departure through. Default 0.5. (templated)
    :param chunk_size: users forgotten per transaction.
    :param source_statement_timeout: seconds each statement running the source query may take
        (read-only, see :mod:`iys_provider.people.user_source`); default 15 minutes.
    """

    lineage = TaskLineage(
        reads=("user_sources",),
        writes=("user_recipients", "rejected_recipients", "user_sources", "initial_sync_queue"),
        user_source=True,
    )

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "recipients_sql", "max_leaver_share")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"recipients_sql": "sql"}

    def __init__(
        self,
        *,
        recipients_sql: str | None = None,
        max_leaver_share: float | str = DEFAULT_MAX_LEAVER_SHARE,
        chunk_size: int = DEFAULT_LEAVER_CHUNK_SIZE,
        source_statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recipients_sql = recipients_sql
        self.max_leaver_share = max_leaver_share
        self.chunk_size = chunk_size
        self.source_statement_timeout = source_statement_timeout

    def execute(self, context: Context) -> LeaversResult:
        brand_code = self.iys_hook.brand_code
        max_share = parse_max_leaver_share(self.max_leaver_share)
        with self.database() as writer:
            if not initial_sync_done(writer, brand_code):
                raise AirflowSkipException(
                    "The initial sync has not completed yet; until it has, nobody is known to leave. "
                    "Run the brand's initial sync first (iys_initial_sync, or iys_initial_sync__<conn_id> with "
                    "several brands)."
                )
            source = configured_user_source(
                self.recipients_sql, iys_conn_id=self.iys_conn_id, statement_timeout=self.source_statement_timeout
            )
            self._lineage_source_sql = source.recipients_sql  # OpenLineage reads it after the task
            # The source query never shares a session with the deletes: whatever it may set for its
            # session stays on a connection that writes nothing.
            with second_connection(writer) as reader:
                departed = source.read_departed(reader, brand_code)
            try:
                forgotten = forget_leavers(
                    writer, brand_code=brand_code, user_ids=departed, max_share=max_share, chunk_size=self.chunk_size
                )
            except TooManyLeaversError as exc:
                # Not retried: the source query would say the same until someone looks at it.
                raise AirflowFailException(f"Forgetting leavers refused: {exc}") from None
        self.log.info(
            "Leavers: %d users no longer returned by the source query were forgotten: %d links to addresses and "
            "%d quarantined values removed%s",
            forgotten.leavers,
            forgotten.links_removed,
            forgotten.quarantine_rows_removed,
            f", and {forgotten.queued_rows_removed} rows of the open scan's queue"
            if forgotten.queued_rows_removed
            else "",
        )
        return leavers_result(forgotten)
