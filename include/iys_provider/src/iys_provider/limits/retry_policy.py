"""Whether a failed İYS task is tried again, and when: the pure part of the tasks' retry policy.

İYS counts every 400, 401, 403, 404 and 422 against the client IP's success ratio (below 70 % over
20,000 calls or more in 24 hours, the IP leaves the whitelist), so a task retry that repeats a
refusal only adds client errors. Its H084 token block lasts an hour and any call during it restarts
the hour, so a retry must wait for the block's end. Its per-second limit and its server faults pass.
The Airflow face, :class:`iys_provider.operators.base.IysRetryPolicy`, turns each verdict into a
``RetryDecision``; the task's ``retries`` still bounds the tries (a policy cannot add any).

================================================  ========  =================================================
Failure                                           Verdict   Delay
================================================  ========  =================================================
token block (H084) or own token budget used up    retry     until ``blocked_until`` + :data:`BLOCK_MARGIN`
                                                            (one hour when the end is unknown)
an H084 answer outside the token call             retry     one hour (the block's end is not known)
hourly quota (H086 single status, H089 history)   retry     :data:`HOURLY_QUOTA_WAIT` + :data:`BLOCK_MARGIN`
per-second limit (429, H124, H083), 5xx and the   retry     İYS's ``Retry-After`` if it sent one, else
  H-codes İYS documents as "try again later"                :data:`SHORT_RETRY_DELAY`
a malformed answer with a 5xx status              retry     as a 5xx (a proxy's or maintenance page)
a malformed answer otherwise                      fail      the same answer would come back
business refusal (``BUSINESS_H_CODES``)           fail      final outcomes; a retry only adds client errors
credentials or permissions (``IysAuthError``)     fail      a person has to fix the connection
any other 4xx                                     fail      the same request is refused again
success-ratio guard                               fail      the ratio recovers over hours, not minutes
a step that cannot succeed (``IysStepFailure``)   fail      it would repeat
anything else (database, network, a bug)          default   the task's own ``retries`` and ``retry_delay``
================================================  ========  =================================================

No database, no Airflow: :func:`retry_advice` takes the exception and the current time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from iys_provider.exceptions import (
    BUSINESS_H_CODES,
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysStepFailure,
    IysSuccessRatioGuardError,
    IysTokenBlockedError,
)

#: Added to a known block end: ``blocked_until`` is read on the database's clock, the retry is timed
#: from the worker's, and a try that starts a moment early would find the block still recorded.
BLOCK_MARGIN = timedelta(seconds=15)
#: A block whose end the error does not say: İYS's block lasts an hour from its refusal.
UNKNOWN_BLOCK_WAIT = timedelta(hours=1)
#: İYS's single-status and history quotas are per hour; whether a clock hour or the last 60 minutes
#: is not documented, and an hour from the refusal covers both.
HOURLY_QUOTA_WAIT = timedelta(hours=1)
#: A per-second limit or a server fault without ``Retry-After``: the hook has already tried again
#: within the task (seconds apart), so the task waits a little longer before its next try.
SHORT_RETRY_DELAY = timedelta(seconds=60)

HOURLY_QUOTA_CODES = frozenset({"H086", "H089"})


class RetryVerdict(StrEnum):
    RETRY = "retry"
    FAIL = "fail"
    #: Not this policy's call: the task's ``retries`` and ``retry_delay`` apply.
    DEFAULT = "default"


@dataclass(frozen=True)
class RetryAdvice:
    verdict: RetryVerdict
    #: For ``retry``: how long after this failure the next try may start.
    delay: timedelta | None = None
    reason: str = ""


def retry_advice(exc: BaseException, now: datetime) -> RetryAdvice:
    """What to do about a task that failed with ``exc`` at ``now`` (timezone-aware)."""
    if isinstance(exc, IysTokenBlockedError):
        return _wait_for_block(exc.blocked_until, now)
    if isinstance(exc, IysSuccessRatioGuardError):
        return _fail("İYS's success ratio is under the guard's floor; it recovers over hours, a retry would not")
    if isinstance(exc, IysStepFailure):
        return _fail("the step cannot succeed by being tried again")
    if not isinstance(exc, IysApiError):
        return RetryAdvice(RetryVerdict.DEFAULT, reason=f"{type(exc).__name__} is not an İYS answer")
    return _api_error_advice(exc)


def _api_error_advice(exc: IysApiError) -> RetryAdvice:
    what = f"İYS {exc.code or '-'} (HTTP {exc.status_code if exc.status_code is not None else '-'})"
    if exc.code == "H084":
        # Only the token call's H084 is turned into IysTokenBlockedError (with the recorded end).
        return RetryAdvice(RetryVerdict.RETRY, UNKNOWN_BLOCK_WAIT, f"{what}: token block, end unknown; wait an hour")
    if isinstance(exc, IysQuotaExceededError) or exc.code in HOURLY_QUOTA_CODES:
        return RetryAdvice(
            RetryVerdict.RETRY, HOURLY_QUOTA_WAIT + BLOCK_MARGIN, f"{what}: hourly quota used up; wait the hour"
        )
    if isinstance(exc, IysAuthError):
        return _fail(f"{what}: credentials or permissions refused; fix the connection")
    if exc.code in BUSINESS_H_CODES:
        return _fail(f"{what}: a final business refusal; a retry only adds a client error")
    if isinstance(exc, IysMalformedResponseError) and not _server_fault(exc.status_code):
        return _fail(f"{what}: the answer is not the documented shape; the same answer would come back")
    if exc.retryable or _server_fault(exc.status_code):
        delay = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else SHORT_RETRY_DELAY
        return RetryAdvice(RetryVerdict.RETRY, delay, f"{what}: İYS is busy or failing; a short retry")
    if exc.status_code is not None and 400 <= exc.status_code < 500:
        return _fail(f"{what}: a client error; the same request is refused again")
    # No status: the call did not get an answer (a transport failure the hook wrapped).
    return RetryAdvice(RetryVerdict.DEFAULT, reason=f"{what}: no answer from İYS")


def _wait_for_block(blocked_until: datetime | None, now: datetime) -> RetryAdvice:
    if blocked_until is None:
        return RetryAdvice(RetryVerdict.RETRY, UNKNOWN_BLOCK_WAIT, "İYS token block (H084), end unknown; wait an hour")
    delay = max(blocked_until - now, timedelta(0)) + BLOCK_MARGIN
    return RetryAdvice(
        RetryVerdict.RETRY,
        delay,
        f"İYS token calls blocked until {blocked_until:%Y-%m-%d %H:%M:%S %Z}; the next try starts after it",
    )


def _server_fault(status: int | None) -> bool:
    return status is not None and status >= 500


def _fail(reason: str) -> RetryAdvice:
    return RetryAdvice(RetryVerdict.FAIL, reason=reason)
