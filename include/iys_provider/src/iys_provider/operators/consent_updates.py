"""Push the brand's pending consent updates (the outbox) to İYS, for recipients İYS already holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import requests
from airflow.sdk.exceptions import AirflowException

from iys_provider.exceptions import (
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysTokenBlockedError,
)
from iys_provider.hooks.iys import MAX_CONSENTS_PER_BATCH
from iys_provider.models import Consent
from iys_provider.normalize import mask_recipient
from iys_provider.operators.base import IysBaseOperator
from iys_provider.outbox import (
    WRITE_POLICIES,
    KnownConsent,
    OutboxRow,
    OutboxState,
    Verdict,
    decide_against_iys,
    validate_row,
    verdict_for_iys_error,
)
from iys_provider.outbox_store import (
    apply_confirmed,
    consent_key,
    count_attempt,
    fetch_pending,
    finalise,
    known_consents,
    mark_submitted,
    record_status_answer,
    record_transient_failure,
)

DEFAULT_MAX_ATTEMPTS = 5


class IysPushConsentUpdatesOperator(IysBaseOperator):
    """Send pending rows of ``iys.consent_updates`` to İYS — never creating a recipient.

    Each row is validated (recipient, enums, source, 3-business-day age), superseded rows are
    skipped, and the rest is compared with what İYS holds (``iys.consents``; when unknown, one
    single-status query — its quota is 1000 per hour, so at most ``max_status_checks`` per run).
    What remains is sent: one by one through the idempotent single add when there are at most
    ``single_add_threshold`` rows, otherwise as async batches of ≤1000 whose results
    :class:`~iys_provider.sensors.batch_results.IysBatchResultSensor` collects.

    Transient failures leave a row pending for the next run; after ``max_attempts`` it ends
    ``failed``. Rows are never deleted. Returns the counts per outcome.

    :param mode: write policy; only ``"sync"`` (İYS Sync Mode) exists.
    """

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "mode")

    def __init__(
        self,
        *,
        mode: str = "sync",
        max_rows: int = 50_000,
        single_add_threshold: int = 20,
        max_status_checks: int = 500,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.max_rows = max_rows
        self.single_add_threshold = single_add_threshold
        self.max_status_checks = max_status_checks
        self.max_attempts = max_attempts

    def execute(self, context) -> dict[str, int]:
        if self.mode not in WRITE_POLICIES:
            raise AirflowException(f"unknown mode {self.mode!r}; this release ships only {sorted(WRITE_POLICIES)}")
        policy = WRITE_POLICIES[self.mode]
        brand_code = self.iys_hook.brand_code
        conn = self.connect()
        counts = {state.value: 0 for state in OutboxState}
        try:
            now = datetime.now(UTC)
            rows = fetch_pending(conn, self.max_rows)
            verdicts: list[tuple[int, Verdict]] = []
            candidates: dict[tuple[str, str, str], tuple[OutboxRow, Consent]] = {}
            for row in rows:
                result = validate_row(row, now)
                if isinstance(result, Verdict):
                    verdicts.append((row.id, result))
                    continue
                key = consent_key(result)
                previous = candidates.get(key)
                if previous and (previous[1].consent_date, previous[0].id) > (result.consent_date, row.id):
                    verdicts.append((row.id, _superseded()))
                    continue
                if previous:
                    verdicts.append((previous[0].id, _superseded()))
                candidates[key] = (row, result)

            to_send, deferred = self._decide(conn, brand_code, policy, candidates, verdicts)
            finalise(conn, verdicts)
            for _, verdict in verdicts:
                counts[verdict.state.value] += 1
            if len(to_send) <= self.single_add_threshold:
                self._send_one_by_one(conn, brand_code, to_send, counts)
            else:
                self._submit_batches(conn, to_send, counts)
            counts["deferred"] = deferred
            self.log.info(
                "Outbox: %d rows read; sent %d, submitted in batches %d, skipped %d, rejected %d, failed %d, "
                "left pending %d (status-check budget)",
                len(rows), counts["sent"], counts["submitted"], counts["skipped"], counts["rejected"],
                counts["failed"], deferred,
            )
            return counts
        finally:
            conn.close()
            self.iys_hook.close()

    def _decide(self, conn, brand_code, policy, candidates, verdicts):
        """Compare each candidate with İYS's state; returns what to send and how many wait for quota."""
        known = known_consents(conn, brand_code, [consent for _, consent in candidates.values()])
        to_send: list[tuple[OutboxRow, Consent]] = []
        checks_left, deferred = self.max_status_checks, 0
        for key, (row, consent) in candidates.items():
            state = known.get(key)
            # Unknown status, or a row an earlier run may have delivered: ask İYS itself.
            if state is None or state.status is None or row.attempts:
                if checks_left <= 0:
                    deferred += 1
                    continue
                checks_left -= 1
                try:
                    record = self.iys_hook.get_consent_status(consent.recipient, consent.type, consent.recipient_type)
                except IysQuotaExceededError:
                    self.log.warning("Single-status hourly quota reached; remaining rows wait for the next run")
                    checks_left, deferred = 0, deferred + 1
                    continue
                if record is not None:
                    record_status_answer(conn, brand_code, record)
                state = KnownConsent(record.status.value, record.consent_date, record.transaction_id) if record else None
            verdict = decide_against_iys(consent, state, policy, attempts=row.attempts)
            if verdict is None:
                to_send.append((row, consent))
            else:
                verdicts.append((row.id, verdict))
        return to_send, deferred

    def _send_one_by_one(self, conn, brand_code, to_send, counts) -> None:
        for row, consent in to_send:
            count_attempt(conn, [row.id])
            try:
                result = self.iys_hook.add_consent(consent)
            except IysTokenBlockedError:
                count_attempt(conn, [row.id], delta=-1)  # no token, so the update never reached İYS
                raise
            except IysAuthError:
                count_attempt(conn, [row.id], delta=-1)
                raise  # credentials or partnership permissions: every update would fail alike
            except IysApiError as exc:
                if _delivery_unknown(exc):
                    self._transient(conn, [row.id], exc.code, str(exc), counts)
                    continue
                verdict = verdict_for_iys_error(exc.code, exc.iys_message)
                finalise(conn, [(row.id, verdict)])
                counts[verdict.state.value] += 1
                continue
            except requests.RequestException as exc:
                self._transient(conn, [row.id], "NETWORK", type(exc).__name__, counts)
                continue
            with conn.transaction():
                finalise(conn, [(row.id, Verdict(OutboxState.SENT, transaction_id=result.transaction_id))])
                apply_confirmed(conn, brand_code, consent, result.transaction_id, result.creation_date)
            counts["sent"] += 1
            self.log.info("Sent %s %s %s", consent.type.value, consent.status.value, mask_recipient(consent.recipient))

    def _submit_batches(self, conn, to_send, counts) -> None:
        for start in range(0, len(to_send), MAX_CONSENTS_PER_BATCH):
            chunk = to_send[start : start + MAX_CONSENTS_PER_BATCH]
            ids = [row.id for row, _ in chunk]
            count_attempt(conn, ids)
            try:
                submission = self.iys_hook.submit_consent_batch([consent for _, consent in chunk])
            except IysTokenBlockedError:
                count_attempt(conn, ids, delta=-1)
                raise
            except IysApiError as exc:
                if _delivery_unknown(exc):
                    self._transient(conn, ids, exc.code, str(exc), counts)
                    continue
                count_attempt(conn, ids, delta=-1)  # a refused request processed nothing
                if exc.index is None or not 0 <= exc.index < len(ids):
                    raise
                # One item failed validation: reject it; the others are sent by the next run.
                verdict = verdict_for_iys_error(exc.code, exc.iys_message)
                finalise(conn, [(ids[exc.index], verdict)])
                counts[verdict.state.value] += 1
                continue
            except requests.RequestException as exc:
                self._transient(conn, ids, "NETWORK", type(exc).__name__, counts)
                continue
            mark_submitted(conn, submission.request_id, ids)
            counts["submitted"] += len(ids)
            self.log.info("Submitted a batch of %d updates (request %s)", len(ids), submission.request_id)

    def _transient(self, conn, ids, code, detail, counts) -> None:
        record_transient_failure(conn, ids, max_attempts=self.max_attempts, code=code, detail=detail[:500])
        failed = conn.execute(
            "SELECT count(*) FROM iys.consent_updates WHERE id = ANY(%s) AND state = 'failed'", (list(ids),)
        ).fetchone()[0]
        counts["failed"] += failed
        counts["pending"] += len(ids) - failed
        self.log.warning("%d updates not delivered (%s); they are retried next run", len(ids), detail[:200])


def _delivery_unknown(exc: IysApiError) -> bool:
    """İYS may have applied the write: a transient error, or an answer we could not read.

    Such rows stay pending; the next run asks İYS (single status) before sending again.
    """
    return exc.retryable or exc.status_code is None or isinstance(exc, IysMalformedResponseError)


def _superseded() -> Verdict:
    return Verdict(OutboxState.SKIPPED, "SUPERSEDED", "a newer pending update for the same address and channel exists")
