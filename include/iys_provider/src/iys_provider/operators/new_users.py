"""Check users that are new, or whose phone, e-mail or recipient type changed, since the last sync."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from iys_provider.initial_sync.consent_checks import check_users_in_chunks
from iys_provider.initial_sync.scan_ledger_store import initial_sync_done
from iys_provider.lineage import TaskLineage
from iys_provider.models import StepKind
from iys_provider.operators.base import IysBaseOperator
from iys_provider.people.user_source import DEFAULT_STATEMENT_TIMEOUT_SECONDS, configured_user_source, second_connection

__all__ = ["IysCheckNewUsersOperator", "NewUsersResult"]


class NewUsersResult(TypedDict):
    """Users checked in this run, addresses quarantined, consents whose status changed, İYS requests made."""

    step: str
    users_checked: int
    quarantined: int
    status_changes: int
    requests: int


class IysCheckNewUsersOperator(IysBaseOperator):
    """Link and check (multi status) the users the last sync has not seen in their current form.

    A fingerprint of each user's source row is kept in ``iys.user_sources``; users whose
    fingerprint is missing or different (new sign-ups, a changed phone or e-mail) are normalised,
    quarantined if invalid, and checked in chunks, each written in its own transaction.
    Skipped until the initial sync has completed once.

    :param recipients_sql: source query, or the path of a ``.sql`` file holding it (relative to
        the DAG's folder or its ``template_searchpath``); default: the ``iys_recipients_sql``
        Variable. (templated)
    :param chunk_size: users per transaction.
    :param request_concurrency: status calls in flight at once (see
        :class:`~iys_provider.operators.initial_sync.IysInitialSyncBatchOperator`).
    :param source_statement_timeout: seconds each statement running the source query may take
        (read-only, see :mod:`iys_provider.people.user_source`); default 15 minutes.
    """

    lineage = TaskLineage(
        reads=("user_sources",),
        writes=("consents", "user_recipients", "rejected_recipients", "user_sources"),
        iys_reads=True,
        user_source=True,
    )

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "recipients_sql")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"recipients_sql": "sql"}

    def __init__(
        self,
        *,
        recipients_sql: str | None = None,
        chunk_size: int = 5000,
        request_concurrency: int = 1,
        source_statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recipients_sql = recipients_sql
        self.source_statement_timeout = source_statement_timeout
        self.chunk_size = chunk_size
        self.request_concurrency = request_concurrency

    def execute(self, context: Context) -> NewUsersResult:
        brand_code = self.iys_hook.brand_code
        with self.database() as writer:
            if not initial_sync_done(writer, brand_code):
                raise AirflowSkipException(
                    "The initial sync has not completed yet; it checks every user. Run the brand's initial sync "
                    "first (iys_initial_sync, or iys_initial_sync__<conn_id> with several brands)."
                )
            source = configured_user_source(
                self.recipients_sql, iys_conn_id=self.iys_conn_id, statement_timeout=self.source_statement_timeout
            )
            self._lineage_source_sql = source.recipients_sql  # OpenLineage reads it after the task
            # The changed users stream through a server-side cursor in a read-only transaction, which
            # stays open while each chunk is committed: that takes a second connection.
            with second_connection(writer) as reader:
                outcome = check_users_in_chunks(
                    self.iys_hook,
                    writer,
                    brand_code=brand_code,
                    users=source.read_changed(reader, brand_code),
                    chunk_size=self.chunk_size,
                    concurrency=self.request_concurrency,
                )
        self.log.info(
            "New or changed users: %d checked with %d İYS requests, %d addresses quarantined, %d consent "
            "status changes",
            outcome.users,
            outcome.requests,
            outcome.quarantined,
            outcome.status_changes,
        )
        return NewUsersResult(
            step=StepKind.NEW_USERS.value,
            users_checked=outcome.users,
            quarantined=outcome.quarantined,
            status_changes=outcome.status_changes,
            requests=outcome.requests,
        )
