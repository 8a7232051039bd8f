"""Check users that are new, or whose phone, e-mail or recipient type changed, since the last sync."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from airflow.sdk import Variable
from airflow.sdk.exceptions import AirflowSkipException

from iys_provider.consent_store import write_checked_users
from iys_provider.operators.base import IysBaseOperator
from iys_provider.recipients import prepare_users
from iys_provider.user_source import DEFAULT_RECIPIENTS_SQL, RECIPIENTS_SQL_VARIABLE, SourceUser, UserSource

INITIAL_SYNC_DONE_SQL = """
SELECT EXISTS (SELECT 1 FROM iys.initial_sync_scans WHERE brand_code = %s AND finished_at IS NOT NULL AND NOT abandoned)
"""


def _chunks(users: Iterator[SourceUser], size: int) -> Iterator[list[SourceUser]]:
    while chunk := list(islice(users, size)):
        yield chunk


class IysCheckNewUsersOperator(IysBaseOperator):
    """Link and check (multi status) the users the last sync has not seen in their current form.

    A fingerprint of each user's source row is kept in ``iys.user_sources``; users whose
    fingerprint is missing or different (new sign-ups, a changed phone or e-mail) are normalised,
    quarantined if invalid, and checked in chunks, each written in its own transaction.
    Skipped until the initial sync has completed once.

    :param recipients_sql: source query; default: the ``iys_recipients_sql`` Variable.
    :param chunk_size: users per transaction.
    """

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "recipients_sql")

    def __init__(self, *, recipients_sql: str | None = None, chunk_size: int = 5000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recipients_sql = recipients_sql
        self.chunk_size = chunk_size

    def execute(self, context) -> dict[str, Any]:
        brand_code = self.iys_hook.brand_code
        reader, writer = self.connect(), self.connect()
        try:
            if not writer.execute(INITIAL_SYNC_DONE_SQL, (brand_code,)).fetchone()[0]:
                raise AirflowSkipException(
                    "The initial sync has not completed yet; it checks every user. Run iys_initial_sync first."
                )
            source = UserSource(
                self.recipients_sql or Variable.get(RECIPIENTS_SQL_VARIABLE, default=DEFAULT_RECIPIENTS_SQL)
            )
            totals = {"users_checked": 0, "quarantined": 0, "status_changes": 0, "requests": 0}
            requests_before = self.iys_hook.stats.requests
            for chunk in _chunks(source.read_changed(reader, brand_code), self.chunk_size):
                prepared = prepare_users(chunk)
                checked_at = datetime.now(UTC)
                onay = {
                    key: self.iys_hook.get_onay_recipients(sorted(recipients), key[1], key[0])
                    for key, recipients in prepared.to_check.items()
                }
                outcome = write_checked_users(
                    writer, brand_code=brand_code, prepared=prepared, onay=onay, checked_at=checked_at
                )
                totals["users_checked"] += prepared.users
                totals["quarantined"] += outcome.quarantined
                totals["status_changes"] += outcome.status_changes
            totals["requests"] = self.iys_hook.stats.requests - requests_before
            self.log.info(
                "New or changed users: %d checked with %d İYS requests, %d addresses quarantined, %d consent "
                "status changes",
                totals["users_checked"], totals["requests"], totals["quarantined"], totals["status_changes"],
            )
            return totals
        finally:
            reader.close()
            writer.close()
            self.iys_hook.close()
