"""Pushing the outbox to İYS: validate, verify with İYS's current status, send, record each verdict.

The rules (what each row deserves) are in :mod:`iys_provider.outbox.rules`, their SQL in
:mod:`iys_provider.outbox.store`; this module runs one push over the pending rows with them.
:class:`~iys_provider.operators.consent_updates.IysPushConsentUpdatesOperator` is its Airflow face.

* every valid row's address is verified with multi status (≤1000 per call) right before sending;
* sends go one by one through the idempotent single add for a few rows, otherwise as async
  batches of ≤1000; when İYS refuses items of a batch by index, only those are settled and the
  rest is resubmitted at once;
* one row's trouble never stops the others: a failed check or send leaves that row pending (after
  ``max_attempts`` tries it ends ``failed``); only errors that would hit every row alike
  (credentials, İYS's token block) are raised;
* a row that ended ``failed`` for a passing reason (5xx, network, an unreadable answer) goes back
  to the queue at the start of a push while İYS would still accept it, at most ``max_requeues``
  times; a refusal İYS gave a reason for stays final;
* rows whose consent date is a little ahead of our clock wait, within the push, until due.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import psycopg
import requests

from iys_provider.exceptions import (
    ItemError,
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysTokenBlockedError,
)
from iys_provider.hooks.iys import MAX_CONSENTS_PER_BATCH, MAX_RECIPIENTS_PER_STATUS_CALL, IysHook
from iys_provider.models import Consent, StepKind
from iys_provider.normalize import mask_recipient
from iys_provider.outbox.rules import (
    ASK_SINGLE_STATUS,
    DEFAULT_CLOCK_SKEW,
    DEFAULT_FUTURE_TOLERANCE,
    DEFAULT_MAX_BATCH_AGE,
    DEFAULT_MAX_REQUEUES,
    SYNC_MODE,
    KnownConsent,
    NotYetDue,
    OutboxRow,
    OutboxState,
    Verdict,
    WritePolicy,
    decide_after_status_check,
    decide_with_fresh_status,
    may_requeue,
    validate_row,
    verdict_for_iys_error,
)
from iys_provider.outbox.store import (
    apply_confirmed,
    consent_key,
    count_attempt,
    expire_submissions,
    fetch_pending,
    fetch_pending_by_id,
    finalise,
    known_consents,
    mark_submitted,
    record_status_answer,
    record_transient_failure,
    requeue,
    retryable_failures,
)

DEFAULT_MAX_ATTEMPTS = 5

Key = tuple[str, str, str]
Candidate = tuple[OutboxRow, Consent]


class PushResult(TypedDict):
    """Rows of one push by outcome (``pending``: left for the next run; ``deferred``: waiting for the
    single-status quota; ``expired_batches``: submitted rows reopened; ``waited``: sent after waiting
    for a consent date a little ahead of our clock; ``requeued``: failed rows put back in the queue)."""

    step: str
    pending: int
    submitted: int
    sent: int
    skipped: int
    rejected: int
    failed: int
    deferred: int
    expired_batches: int
    waited: int
    requeued: int


@dataclass(frozen=True)
class PushSettings:
    """How one push behaves; see :class:`~iys_provider.operators.consent_updates.IysPushConsentUpdatesOperator`."""

    policy: WritePolicy = SYNC_MODE
    max_rows: int = 50_000
    single_add_threshold: int = 20
    max_status_checks: int = 500
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    max_batch_age: timedelta = DEFAULT_MAX_BATCH_AGE
    max_requeues: int = DEFAULT_MAX_REQUEUES


@dataclass
class OutboxPush:
    """One push of the pending outbox rows over ``conn`` (autocommit) through ``hook``."""

    hook: IysHook
    conn: psycopg.Connection
    settings: PushSettings = field(default_factory=PushSettings)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))

    def run(self) -> PushResult:
        conn, settings = self.conn, self.settings
        counts = PushResult(**{**dict.fromkeys(PushResult.__annotations__, 0), "step": StepKind.OUTBOX_PUSH.value})
        self._checks_left = settings.max_status_checks
        brand_code = self.hook.brand_code
        counts["expired_batches"] = expire_submissions(
            conn,
            brand_code,
            code="BATCH_EXPIRED",
            detail=f"no batch result {settings.max_batch_age} after submission; verified again before any resend",
            submitted_before=datetime.now(UTC) - settings.max_batch_age,
        )
        counts["requeued"] = self._requeue_passing_failures(conn, brand_code)
        rows = fetch_pending(conn, brand_code, settings.max_rows)
        waiting = self._push(conn, rows, counts)
        if waiting:
            due_at = max(item.due_at for _, item in waiting)
            pause = max((due_at - datetime.now(UTC)).total_seconds(), 0.0)
            self.log.info(
                "%d updates carry a consent date a little ahead of our clock; sending them in %.0f s",
                len(waiting),
                pause,
            )
            time.sleep(pause)  # bounded by future_tolerance + clock_skew: the row is due then
            counts["waited"] = len(waiting)
            left = self._push(conn, fetch_pending_by_id(conn, brand_code, [row.id for row, _ in waiting]), counts)
            counts["pending"] += len(left)
        self.log.info(
            "Outbox: %d rows read; sent %d, submitted in batches %d, skipped %d, rejected %d, failed %d, "
            "left pending %d, waiting for the status-check quota %d, expired batches reopened %d, failed rows "
            "requeued %d",
            len(rows),
            counts["sent"],
            counts["submitted"],
            counts["skipped"],
            counts["rejected"],
            counts["failed"],
            counts["pending"],
            counts["deferred"],
            counts["expired_batches"],
            counts["requeued"],
        )
        return counts

    def _requeue_passing_failures(self, conn, brand_code: int) -> int:
        now = datetime.now(UTC)
        ids = [
            row_id
            for row_id, consent_date, requeues in retryable_failures(conn, brand_code)
            if may_requeue(consent_date, now, requeues=requeues, max_requeues=self.settings.max_requeues)
        ]
        return requeue(conn, ids) if ids else 0

    # ------------------------------------------------------------------ one pass over rows

    def _push(self, conn, rows: Sequence[OutboxRow], counts: PushResult) -> list[tuple[OutboxRow, NotYetDue]]:
        """Validate, verify and send ``rows``; returns the rows whose consent date is not due yet."""
        now = datetime.now(UTC)  # after reading the rows: a row written just now is not "future"
        verdicts: list[tuple[int, Verdict]] = []
        latest: dict[Key, tuple[OutboxRow, Consent | NotYetDue]] = {}
        for row in rows:
            result = validate_row(
                row, now, future_tolerance=self.settings.future_tolerance, clock_skew=self.settings.clock_skew
            )
            if isinstance(result, Verdict):
                verdicts.append((row.id, result))
                continue
            consent = result.consent if isinstance(result, NotYetDue) else result
            key = consent_key(consent)
            previous = latest.get(key)
            if previous is not None:
                kept, superseded = _newer_first((row, result), previous)
                verdicts.append((superseded[0].id, _superseded()))
                latest[key] = kept
            else:
                latest[key] = (row, result)
        waiting = [(row, item) for row, item in latest.values() if isinstance(item, NotYetDue)]
        due = {key: (row, item) for key, (row, item) in latest.items() if isinstance(item, Consent)}
        # Settled before İYS is asked: a task that dies (or is stopped) while checking keeps them.
        self._settle(conn, verdicts, counts)
        verdicts = []
        to_send = self._decide(conn, due, verdicts, counts)
        self._settle(conn, verdicts, counts)
        if len(to_send) <= self.settings.single_add_threshold:
            self._send_one_by_one(conn, to_send, counts)
        else:
            self._submit_batches(conn, to_send, counts)
        return waiting

    def _decide(self, conn, due: dict[Key, Candidate], verdicts, counts) -> list[Candidate]:
        """Verify each due candidate with İYS; returns what to send, appends the other verdicts."""
        policy = self.settings.policy
        brand_code = self.hook.brand_code
        known = known_consents(conn, brand_code, [consent for _, consent in due.values()])
        onay = self._verify_onay(conn, due, verdicts, counts)
        to_send: list[Candidate] = []
        for key, (row, consent) in due.items():
            if key not in onay:
                continue  # its verification failed or İYS refused the address: already settled
            decision = decide_with_fresh_status(
                consent, onay_in_iys=onay[key], known=known.get(key), policy=policy, attempts=row.attempts
            )
            if decision == ASK_SINGLE_STATUS:
                record = self._single_status(conn, row, consent, counts)
                if record is _UNANSWERED:
                    continue
                decision = decide_after_status_check(consent, record, policy, attempts=row.attempts)
            if decision is None:
                to_send.append((row, consent))
            else:
                verdicts.append((row.id, decision))
        return to_send

    # ------------------------------------------------------------------ asking İYS

    def _verify_onay(self, conn, due: dict[Key, Candidate], verdicts, counts) -> dict[Key, bool]:
        """Multi status for every due address, ≤1000 per call; one call's trouble stays with its rows."""
        groups: dict[tuple, list[Key]] = defaultdict(list)
        for key, (_, consent) in due.items():
            groups[(consent.recipient_type, consent.type)].append(key)
        onay: dict[Key, bool] = {}
        for (recipient_type, consent_type), keys in groups.items():
            for start in range(0, len(keys), MAX_RECIPIENTS_PER_STATUS_CALL):
                chunk = keys[start : start + MAX_RECIPIENTS_PER_STATUS_CALL]
                onay.update(self._verify_chunk(conn, due, chunk, recipient_type, consent_type, verdicts, counts))
        return onay

    def _verify_chunk(
        self, conn, due, chunk: list[Key], recipient_type, consent_type, verdicts, counts
    ) -> dict[Key, bool]:
        """One ≤1000-address multi-status call; addresses İYS refuses by index are settled and the rest asked again."""
        remaining = chunk
        while remaining:
            try:
                answer = self.hook.get_onay_recipients([key[0] for key in remaining], consent_type, recipient_type)
            except (IysAuthError, IysTokenBlockedError):
                raise  # every row would fail alike
            except IysApiError as exc:
                refused = _refused_items(exc, len(remaining))
                if not refused:
                    self._transient(
                        conn,
                        [due[key][0].id for key in remaining],
                        exc.code or "STATUS_CHECK",
                        str(exc),
                        counts,
                        retryable=_may_pass(exc),
                    )
                    return {}
                for index, item in refused.items():
                    row_id = due[remaining[index]][0].id
                    verdicts.append((row_id, Verdict(OutboxState.REJECTED, item.code or "IYS_ERROR", item.message)))
                remaining = [key for i, key in enumerate(remaining) if i not in refused]
            except requests.RequestException as exc:
                self._transient(conn, [due[key][0].id for key in remaining], "NETWORK", type(exc).__name__, counts)
                return {}
            else:
                return {key: key[0] in answer for key in remaining}
        return {}

    def _single_status(self, conn, row: OutboxRow, consent: Consent, counts) -> KnownConsent | None | object:
        """İYS's full record of one address (``None``: it holds none), or :data:`_UNANSWERED`."""
        if self._checks_left <= 0:
            counts["deferred"] += 1
            return _UNANSWERED
        self._checks_left -= 1
        try:
            record = self.hook.get_consent_status(consent.recipient, consent.type, consent.recipient_type)
        except IysQuotaExceededError:
            self.log.warning("Single-status hourly quota reached; the remaining rows wait for the next run")
            self._checks_left = 0
            counts["deferred"] += 1
            return _UNANSWERED
        except (IysAuthError, IysTokenBlockedError):
            raise
        except IysApiError as exc:
            if _delivery_unknown(exc):
                self._transient(conn, [row.id], exc.code or "STATUS_CHECK", str(exc), counts)
            else:  # a refusal, not a hiccup: asking again would only add a client error
                self._fail(conn, [row.id], exc.code or "STATUS_CHECK", str(exc), counts)
            return _UNANSWERED
        except requests.RequestException as exc:
            self._transient(conn, [row.id], "NETWORK", type(exc).__name__, counts)
            return _UNANSWERED
        if record is None:
            return None
        record_status_answer(conn, self.hook.brand_code, record)
        return KnownConsent(record.status.value, record.consent_date, record.transaction_id)

    # ------------------------------------------------------------------ sending

    def _send_one_by_one(self, conn, to_send: Sequence[Candidate], counts) -> None:
        brand_code = self.hook.brand_code
        for row, consent in to_send:
            count_attempt(conn, [row.id])
            try:
                result = self.hook.add_consent(consent)
            except (IysTokenBlockedError, IysAuthError):
                count_attempt(conn, [row.id], delta=-1)  # refused before İYS looked at the update
                raise  # no token, or credentials/permissions: every update would fail alike
            except IysApiError as exc:
                if _delivery_unknown(exc):
                    self._transient(conn, [row.id], exc.code, str(exc), counts)
                    continue
                self._settle(conn, [(row.id, verdict_for_iys_error(exc.code, exc.iys_message))], counts)
                continue
            except requests.RequestException as exc:
                self._transient(conn, [row.id], "NETWORK", type(exc).__name__, counts)
                continue
            with conn.transaction():
                finalise(conn, [(row.id, Verdict(OutboxState.SENT, transaction_id=result.transaction_id))])
                apply_confirmed(conn, brand_code, consent, result.transaction_id, result.creation_date)
            counts["sent"] += 1
            self.log.info("Sent %s %s %s", consent.type.value, consent.status.value, mask_recipient(consent.recipient))

    def _submit_batches(self, conn, to_send: Sequence[Candidate], counts) -> None:
        for start in range(0, len(to_send), MAX_CONSENTS_PER_BATCH):
            chunk = list(to_send[start : start + MAX_CONSENTS_PER_BATCH])
            while chunk:
                chunk = self._submit_batch(conn, chunk, counts)

    def _submit_batch(self, conn, chunk: list[Candidate], counts) -> list[Candidate]:
        """Submit one batch; returns what must be resubmitted now (İYS refused other items by index)."""
        ids = [row.id for row, _ in chunk]
        count_attempt(conn, ids)
        try:
            submission = self.hook.submit_consent_batch([consent for _, consent in chunk])
        except (IysTokenBlockedError, IysAuthError):
            count_attempt(conn, ids, delta=-1)
            raise
        except IysApiError as exc:
            if _delivery_unknown(exc):
                self._transient(conn, ids, exc.code, str(exc), counts)
                return []
            count_attempt(conn, ids, delta=-1)  # a refused request processed nothing
            refused = _refused_items(exc, len(chunk))
            if not refused:  # refused as a whole, for no item's sake: tried again, then failed for good
                self._transient(conn, ids, exc.code or "IYS_ERROR", str(exc), counts, retryable=False)
                return []
            self._settle(
                conn,
                [(ids[index], verdict_for_iys_error(item.code, item.message)) for index, item in refused.items()],
                counts,
            )
            self.log.warning(
                "İYS refused %d items of a batch; resubmitting the other %d now",
                len(refused),
                len(chunk) - len(refused),
            )
            return [candidate for index, candidate in enumerate(chunk) if index not in refused]
        except requests.RequestException as exc:
            self._transient(conn, ids, "NETWORK", type(exc).__name__, counts)
            return []
        mark_submitted(conn, submission.request_id, ids)
        counts["submitted"] += len(ids)
        self.log.info("Submitted a batch of %d updates (request %s)", len(ids), submission.request_id)
        return []

    # ------------------------------------------------------------------ recording outcomes

    def _settle(self, conn, verdicts: Sequence[tuple[int, Verdict]], counts) -> None:
        """Store final verdicts; a ``pending`` verdict (İYS asks us to try again) is a transient failure."""
        final = [(row_id, v) for row_id, v in verdicts if v.state is not OutboxState.PENDING]
        finalise(conn, final)
        for _, verdict in final:
            counts[verdict.state.value] += 1
        for row_id, verdict in verdicts:
            if verdict.state is OutboxState.PENDING:
                self._transient(conn, [row_id], verdict.error_code, verdict.detail or "", counts)

    def _transient(self, conn, ids, code, detail, counts, *, retryable: bool = True) -> None:
        failed = record_transient_failure(
            conn, ids, max_attempts=self.settings.max_attempts, code=code, detail=detail[:500], retryable=retryable
        )
        counts["failed"] += failed
        counts["pending"] += len(ids) - failed
        self.log.warning("%d updates not settled (%s); they are tried again next run", len(ids), detail[:200])

    def _fail(self, conn, ids, code, detail, counts) -> None:
        failed = record_transient_failure(conn, ids, max_attempts=1, code=code, detail=detail[:500], retryable=False)
        counts["failed"] += failed
        self.log.warning("%d updates failed for good (%s)", failed, detail[:200])


#: :meth:`OutboxPush._single_status` got no usable answer; the row is recorded.
_UNANSWERED = object()


def _newer_first(a: tuple[OutboxRow, Any], b: tuple[OutboxRow, Any]) -> tuple[tuple, tuple]:
    """Of two updates for one address and channel, (the one that wins, the superseded one)."""

    def order(item):
        row, result = item
        consent = result.consent if isinstance(result, NotYetDue) else result
        return consent.consent_date, row.id

    return (a, b) if order(a) > order(b) else (b, a)


def _refused_items(exc: IysApiError, size: int) -> dict[int, ItemError]:
    """The items İYS refused by index in a request-level refusal (a 4xx that is not transient)."""
    if exc.retryable or exc.status_code is None or not 400 <= exc.status_code < 500:
        return {}
    items = {item.index: item for item in exc.item_errors if 0 <= item.index < size}
    if not items and exc.index is not None and 0 <= exc.index < size:
        items = {exc.index: ItemError(exc.index, exc.code, exc.iys_message)}
    return items


def _delivery_unknown(exc: IysApiError) -> bool:
    """İYS may have applied the write: a transient error, or an answer we could not read.

    Such rows stay pending; the next run verifies them with İYS before sending again.
    """
    return exc.retryable or exc.status_code is None or isinstance(exc, IysMalformedResponseError)


def _may_pass(exc: IysApiError) -> bool:
    """A failure that says nothing about the update itself: İYS's side or the way there (5xx,
    no answer, an unreadable one). A 4xx is İYS's word on the request: retrying earns client errors."""
    return _delivery_unknown(exc) or (exc.status_code is not None and exc.status_code >= 500)


def _superseded() -> Verdict:
    return Verdict(OutboxState.SKIPPED, "SUPERSEDED", "a newer pending update for the same address and channel exists")
