"""Rules for the outbox ``iys.consent_updates``: what may be sent to İYS, and what each answer means.

The brand's application writes local consent changes (an unsubscribe in the app, an opt-in at
the call centre) into the outbox. Before anything is sent, each row is validated and compared
with what İYS holds, so that İYS is only asked to do what it will accept:

==================  =========  ==================================================================
verdict             state      when
==================  =========  ==================================================================
INVALID_RECIPIENT…  rejected   the recipient does not normalise (reason code of the normaliser)
INVALID_*           rejected   type, status, recipient type or source is not a valid İYS value
FUTURE_DATE         rejected   consent date in the future (İYS H162)
EXPIRED             rejected   older than 3 Turkish business days (İYS H467)
SUPERSEDED          skipped    a newer pending update exists for the same address and channel
NOT_IN_IYS          skipped    İYS holds no record of the address: Sync Mode never creates one
SAME_STATUS         skipped    İYS already has this status (would be H174)
OLDER_THAN_IYS      skipped    İYS holds a newer consent date (would be H178): İYS wins
H-code              rejected   İYS refused it for a business or validation reason
==================  =========  ==================================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from iys_provider.business_days import is_too_old_to_register
from iys_provider.models import (
    PHONE_TYPES,
    Consent,
    ConsentSource,
    ConsentStatus,
    ConsentType,
    RecipientType,
)
from iys_provider.normalize import normalize_email, normalize_phone

EARLIEST_CONSENT_DATE = datetime.fromisoformat("2015-05-01T00:00:00+03:00")


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    SENT = "sent"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True)
class WritePolicy:
    """What the package may do in İYS. Only Sync Mode ships: İYS is master, nothing is created.

    An "integrator mode" (create allowed) would be ``WritePolicy(may_create=True)``; every
    create/no-create decision goes through :func:`decide_against_iys`.
    """

    name: str
    may_create: bool


SYNC_MODE = WritePolicy(name="sync", may_create=False)
WRITE_POLICIES = {SYNC_MODE.name: SYNC_MODE}


@dataclass(frozen=True)
class Verdict:
    state: OutboxState
    error_code: str | None = None
    detail: str | None = None
    transaction_id: str | None = None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    recipient: str
    type: str
    recipient_type: str
    status: str
    consent_date: datetime
    source: str
    attempts: int


@dataclass(frozen=True)
class KnownConsent:
    """What we know İYS holds for an address (from the change feed or a single-status answer)."""

    status: str | None
    consent_date: datetime | None
    transaction_id: str | None = None


def _enum_value(enum_cls, raw: str):
    try:
        return enum_cls(raw.strip().upper())
    except (ValueError, AttributeError):
        return None


def parse_row(row: OutboxRow) -> Consent | Verdict:
    """The İYS consent a row asks for, or why it is not a valid İYS consent at all."""
    consent_type = _enum_value(ConsentType, row.type)
    if consent_type is None:
        return Verdict(OutboxState.REJECTED, "INVALID_TYPE", "type must be MESAJ, ARAMA or EPOSTA")
    status = _enum_value(ConsentStatus, row.status)
    if status is None:
        return Verdict(OutboxState.REJECTED, "INVALID_STATUS", "status must be ONAY or RET")
    recipient_type = _enum_value(RecipientType, row.recipient_type or "BIREYSEL")
    if recipient_type is None:
        return Verdict(OutboxState.REJECTED, "INVALID_RECIPIENT_TYPE", "recipient_type must be BIREYSEL or TACIR")
    source = _enum_value(ConsentSource, row.source)
    if source is None or not source.writable_by_brand:
        return Verdict(OutboxState.REJECTED, "INVALID_SOURCE", "source must be one of İYS's HS_* values")
    if source is ConsentSource.HS_KARAR and status is not ConsentStatus.RET:
        return Verdict(OutboxState.REJECTED, "INVALID_SOURCE", "HS_KARAR can only set RET (İYS H408)")
    if source is ConsentSource.HS_2015:
        return Verdict(OutboxState.REJECTED, "INVALID_SOURCE", "HS_2015 records cannot be registered any more")
    normalised = (normalize_phone if consent_type in PHONE_TYPES else normalize_email)(row.recipient)
    if normalised.value is None:
        reason = normalised.reason.value if normalised.reason else "INVALID"
        return Verdict(OutboxState.REJECTED, f"INVALID_RECIPIENT_{reason}", "recipient cannot be sent to İYS")
    if row.consent_date.tzinfo is None:
        return Verdict(OutboxState.REJECTED, "INVALID_DATE", "consent_date has no time zone")
    return Consent(
        recipient=normalised.value,
        type=consent_type,
        status=status,
        recipient_type=recipient_type,
        source=source,
        consent_date=row.consent_date.replace(microsecond=0),
    )


def validate_row(row: OutboxRow, now: datetime) -> Consent | Verdict:
    """:func:`parse_row`, plus İYS's date rules as of ``now``: the verdict that stops a row before any request."""
    consent = parse_row(row)
    if isinstance(consent, Verdict):
        return consent
    if consent.consent_date > now:
        return Verdict(OutboxState.REJECTED, "FUTURE_DATE", "consent_date is in the future (İYS H162)")
    if consent.consent_date < EARLIEST_CONSENT_DATE:
        return Verdict(OutboxState.REJECTED, "TOO_EARLY", "İYS accepts no consent date before 2015-05-01 (H156)")
    if is_too_old_to_register(consent.consent_date, now):
        return Verdict(OutboxState.REJECTED, "EXPIRED", "older than 3 Turkish business days: İYS refuses it (H467)")
    return consent


def decide_against_iys(
    consent: Consent, known: KnownConsent | None, policy: WritePolicy, *, attempts: int = 0
) -> Verdict | None:
    """Compare with what İYS holds; ``None`` means: send it.

    ``known`` is None when İYS holds no record of the address. ``attempts`` > 0 means an earlier
    run may already have delivered this very update; if İYS shows exactly it, it was ours.
    """
    if known is None or known.status is None:
        if policy.may_create:
            return None
        return Verdict(OutboxState.SKIPPED, "NOT_IN_IYS", "İYS holds no record of this address; Sync Mode never creates one")
    if (
        attempts
        and known.status == consent.status.value
        and known.consent_date is not None
        and known.consent_date == consent.consent_date
    ):
        return Verdict(OutboxState.SENT, None, "delivered by an earlier attempt", known.transaction_id)
    if known.status == consent.status.value:
        return Verdict(OutboxState.SKIPPED, "SAME_STATUS", f"İYS already holds {known.status} (would be H174)")
    if known.consent_date is not None and consent.consent_date <= known.consent_date:
        return Verdict(OutboxState.SKIPPED, "OLDER_THAN_IYS", "İYS holds a newer consent date (would be H178); İYS wins")
    return None


def verdict_for_iys_error(code: str | None, message: str) -> Verdict:
    """What İYS's refusal of one update means for its outbox row."""
    if code == "H174":
        return Verdict(OutboxState.SKIPPED, "SAME_STATUS", message)
    if code == "H178":
        return Verdict(OutboxState.SKIPPED, "OLDER_THAN_IYS", message)
    if code == "H175":
        return Verdict(OutboxState.SKIPPED, "NOT_IN_IYS", message)
    if code == "H467":
        return Verdict(OutboxState.REJECTED, "EXPIRED", message)
    return Verdict(OutboxState.REJECTED, code or "IYS_ERROR", message)
