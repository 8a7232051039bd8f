"""Typed errors raised by the İYS hook.

Every error carries what a data engineer needs to act: the HTTP status, the İYS H-code, İYS's
message, the field location and, for batch calls, the index of the offending item. Recipient
values that İYS echoes back (``value``) are deliberately not kept, so an exception message
never carries personal data into a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from airflow.sdk.exceptions import AirflowException

#: H-codes İYS documents as "try again later" (service busy, timeouts, per-second limit, server faults).
RETRYABLE_H_CODES = frozenset(
    {"H015", "H101", "H102", "H103", "H123", "H124", "H179", "H192", "H412", "H470", "H476", "H083"}
)
#: Final business outcomes: retrying them only burns the success ratio İYS watches.
BUSINESS_H_CODES = frozenset({"H174", "H175", "H178", "H467", "H408", "H155", "H156", "H157", "H162"})
#: Hourly quotas: retrying within the hour is pointless (and for H084 it restarts the block).
HOURLY_QUOTA_H_CODES = frozenset({"H084", "H086", "H089"})


@dataclass(frozen=True)
class ItemError:
    """İYS's refusal of one item of a list it was sent (a batch of consents, a recipients list)."""

    index: int
    code: str | None
    message: str


class IysError(AirflowException):
    """Base class of every error this package raises about İYS."""


class IysApiError(IysError):
    """İYS answered with an error (or with something that is not a valid answer)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        location: Sequence[object] | None = None,
        index: int | None = None,
        endpoint: str | None = None,
        item_errors: Sequence[ItemError] = (),
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.iys_message = message
        self.location = list(location) if location else None
        self.index = index
        self.endpoint = endpoint
        #: Every error İYS tied to an item of the request by its ``index`` (it may list several).
        self.item_errors = tuple(item_errors)
        #: Seconds İYS asked us to wait (``Retry-After``), when it said.
        self.retry_after = retry_after
        parts = [f"İYS error {code or '-'} (HTTP {status_code if status_code is not None else '-'})"]
        if endpoint:
            parts.append(f"on {endpoint}")
        text = " ".join(parts) + f": {message}"
        if self.location:
            text += f" [field: {'.'.join(str(p) for p in self.location)}]"
        if index is not None:
            text += f" [batch index: {index}]"
        super().__init__(text)

    @property
    def retryable(self) -> bool:
        if self.code in HOURLY_QUOTA_H_CODES or self.code in BUSINESS_H_CODES:
            return False
        if self.code in RETRYABLE_H_CODES:
            return True
        return self.status_code is not None and (self.status_code == 429 or self.status_code >= 500)


class IysMalformedResponseError(IysApiError):
    """İYS (or a proxy in front of it) answered with a body that is not the documented shape."""


class IysQuotaExceededError(IysApiError):
    """An hourly quota (single status H086, history H089) is used up; try again in an hour."""


class IysAuthError(IysApiError):
    """Credentials or permissions are wrong; retrying will not help.

    Check the API user and password in the ``iys`` connection, and in the İYS panel that the
    brand code and İYS code belong to this API user (İş Ortaklığı / partnership permissions).
    """


class IysTokenBlockedError(IysError):
    """İYS has blocked token requests from this IP (H084), or we would exceed the hourly budget.

    The package makes no token call until ``blocked_until``: İYS restarts the one-hour block on
    every call made during it, so retrying early only prolongs the outage.
    """

    def __init__(self, message: str, *, blocked_until: datetime | None = None) -> None:
        self.blocked_until = blocked_until
        super().__init__(message)


class IysSuccessRatioGuardError(IysError):
    """A call that can fail (single status, a write) was not made: İYS's success ratio is too low.

    İYS removes an IP from its whitelist when its success ratio stays under 70 % (with 20,000
    calls or more in 24 hours); the package stops such calls well before, at the
    ``success_ratio_floor`` extra. The message names the ratio and the client errors by status.
    See :mod:`iys_provider.limits.success_ratio`.
    """

    def __init__(self, message: str, *, endpoint: str, ratio: float | None) -> None:
        self.endpoint = endpoint
        self.ratio = ratio
        super().__init__(message)


class IysStepFailure(IysError):
    """A workflow step cannot succeed by being tried again (a lost feed window, a day İYS disagrees on).

    The services raise it; their Airflow operators fail the task at once, without retries.
    """
