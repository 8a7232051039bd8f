"""Rules for the outbox ``iys.consent_updates``: what may be sent to İYS, and what each answer means.

The brand's application writes local consent changes (an unsubscribe in the app, an opt-in at
the call centre) into the outbox. Before anything is sent, each row is validated and compared
with what İYS holds *now*, so that İYS is only asked to do what it will accept and an opt-out is
never dropped on the strength of a stale copy:

* every valid row is verified with multi status (≤1000 addresses per call): "is this address
  ONAY in İYS right now?" Our copy (``iys.consents``) may lag İYS by up to the feed's hidden
  last hour, so it never decides alone whether a RET is sent;
* a RET goes out exactly when İYS holds ONAY now (RET to anything else withdraws nothing); no
  single-status call (quota 1000/h, and a 404 for unknown addresses that counts against İYS's
  success ratio) is made for a RET, except to recognise our own earlier, unconfirmed delivery;
* an ONAY goes out only to an address İYS already holds (Sync Mode never creates one): known
  from our copy, else asked with one single-status call.

==================  =========  ==================================================================
verdict             state      when
==================  =========  ==================================================================
INVALID_RECIPIENT…  rejected   the recipient does not normalise (reason code of the normaliser)
INVALID_*           rejected   type, status, recipient type or source is not a valid İYS value
TOO_EARLY           rejected   consent date before 2015-05-01 (İYS H156)
FUTURE_DATE         rejected   consent date more than ``future_tolerance`` ahead of our clock
(not yet due)       pending    consent date up to ``future_tolerance`` ahead: waits, then is sent
(unusual volume)    held       more updates than a person approved in advance: waits for one
                               (:mod:`iys_provider.outbox.approval`); never read by the push
EXPIRED             rejected   older than 3 Turkish business days (İYS H467), lenient reading
SUPERSEDED          skipped    a newer pending update exists for the same address and channel
NOT_ONAY_IN_IYS     skipped    a RET for an address İYS does not hold as ONAY now: nothing to withdraw
NOT_IN_IYS          skipped    an ONAY for an address İYS holds no record of: never created
SAME_STATUS         skipped    an ONAY for an address İYS holds as ONAY now (would be H174)
OLDER_THAN_IYS      skipped    İYS holds a newer consent date (would be H178): İYS wins
(sent)              sent       İYS confirmed it (or an earlier attempt's delivery is recognised)
H-code              rejected   İYS refused it for a business or validation reason
(transient)         pending    İYS could not be asked or did not answer clearly (a 5xx, a malformed
                               answer, H162 from a clock behind ours): retried; after
                               ``max_attempts`` tries the row ends ``failed`` with the last code
(requeued)          pending    a ``failed`` row whose failure may pass (5xx, network, unreadable
                               answer, İYS's clock): back in the queue while İYS would still accept
                               it, at most ``max_requeues`` times (:func:`may_requeue`)
==================  =========  ==================================================================

Until İYS confirms it, a RET that is pending, held, submitted, failed or came too late
(``EXPIRED``) keeps its address out of ``iys.sendable`` (V017), unless İYS holds a newer word.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from iys_provider.business_days import is_too_old_to_register
from iys_provider.models import (
    PHONE_TYPES,
    Consent,
    ConsentSource,
    ConsentStatus,
    ConsentType,
    OutboxState,
    RecipientType,
)
from iys_provider.normalize import normalize_email, normalize_phone

EARLIEST_CONSENT_DATE = datetime.fromisoformat("2015-05-01T00:00:00+03:00")
#: A consent date this far ahead of our clock is a clock difference, not a wrong date: it waits.
DEFAULT_FUTURE_TOLERANCE = timedelta(minutes=10)
#: How far İYS's clock may lag ours. A row is sent only once its date is this far in the past
#: (else İYS answers H162), and the EXPIRED pre-check judges as of this much earlier.
DEFAULT_CLOCK_SKEW = timedelta(seconds=10)
#: A submitted batch without complete results this long after submission goes back to pending.
DEFAULT_MAX_BATCH_AGE = timedelta(hours=1)
#: How often a row that failed for a passing reason goes back to the queue: with ``max_attempts``
#: tries each time, at most (1 + this) × max_attempts tries in all, none of them a client error.
DEFAULT_MAX_REQUEUES = 3


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


@dataclass(frozen=True)
class NotYetDue:
    """A valid consent whose date our clock (or İYS's, which may lag) has not reached yet."""

    consent: Consent
    due_at: datetime


def validate_row(
    row: OutboxRow,
    now: datetime,
    *,
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> Consent | NotYetDue | Verdict:
    """:func:`parse_row`, plus İYS's date rules as of ``now``: the verdict that stops a row before any request.

    Clocks differ by seconds: the application's database, our worker and İYS. A date slightly
    ahead of ``now`` is not final: it is :class:`NotYetDue` until ``clock_skew`` after it.
    """
    consent = parse_row(row)
    if isinstance(consent, Verdict):
        return consent
    if consent.consent_date > now + future_tolerance:
        return Verdict(
            OutboxState.REJECTED,
            "FUTURE_DATE",
            f"consent_date is more than {future_tolerance} ahead of our clock (İYS H162)",
        )
    if consent.consent_date < EARLIEST_CONSENT_DATE:
        return Verdict(OutboxState.REJECTED, "TOO_EARLY", "İYS accepts no consent date before 2015-05-01 (H156)")
    if consent.consent_date > now - clock_skew:
        return NotYetDue(consent, consent.consent_date + clock_skew)
    if is_too_old_to_register(consent.consent_date, now - clock_skew):
        return Verdict(OutboxState.REJECTED, "EXPIRED", "older than 3 Turkish business days: İYS refuses it (H467)")
    return consent


def may_requeue(consent_date: datetime, now: datetime, *, requeues: int, max_requeues: int) -> bool:
    """Whether a row that failed for a passing reason goes back to the queue as of ``now``.

    Only while İYS would still accept its consent date (3 Turkish business days, the lenient
    reading the push validates with): past that, a retry could only earn H467.
    """
    return requeues < max_requeues and not is_too_old_to_register(consent_date, now)


#: :func:`decide_with_fresh_status` cannot tell without İYS's full record (one single-status call).
ASK_SINGLE_STATUS = "ask single status"


def decide_with_fresh_status(
    consent: Consent,
    *,
    onay_in_iys: bool,
    known: KnownConsent | None,
    policy: WritePolicy,
    attempts: int = 0,
) -> Verdict | str | None:
    """Decide from İYS's answer to multi status (``onay_in_iys``) and our copy (``known``).

    Returns ``None`` (send it), a final :class:`Verdict`, or :data:`ASK_SINGLE_STATUS`. Our copy
    only ever *adds* reasons that İYS would refuse the same way (its consent dates only grow, so
    a newer date in our copy is at most older than İYS's); it never stops a RET on its own.
    """
    delivered_before = (
        attempts > 0
        and known is not None
        and known.status == consent.status.value
        and known.consent_date == consent.consent_date
    )
    if delivered_before:
        return Verdict(OutboxState.SENT, None, "delivered by an earlier attempt", known.transaction_id)
    if consent.status is ConsentStatus.RET:
        if onay_in_iys:
            return _older_than_iys(consent, known)
        if attempts > 0:
            return ASK_SINGLE_STATUS  # our earlier, unconfirmed RET may be why it is not ONAY
        return _not_onay_in_iys()
    if onay_in_iys:
        return Verdict(OutboxState.SKIPPED, "SAME_STATUS", "İYS holds ONAY now (would be H174)")
    if known is None or known.status is None:
        return None if policy.may_create else ASK_SINGLE_STATUS
    return _older_than_iys(consent, known)  # İYS holds the address, not as ONAY: an opt-in to send


def decide_after_status_check(
    consent: Consent, record: KnownConsent | None, policy: WritePolicy, *, attempts: int = 0
) -> Verdict | None:
    """Decide from İYS's full record of the address (``None``: İYS holds no record)."""
    if consent.status is ConsentStatus.RET:
        if record is not None and attempts and record.status == "RET" and record.consent_date == consent.consent_date:
            return Verdict(OutboxState.SENT, None, "delivered by an earlier attempt", record.transaction_id)
        if record is not None and record.status == "ONAY":
            return _older_than_iys(consent, record)
        return _not_onay_in_iys()
    return decide_against_iys(consent, record, policy, attempts=attempts)


def _older_than_iys(consent: Consent, known: KnownConsent | None) -> Verdict | None:
    if known is not None and known.consent_date is not None and consent.consent_date <= known.consent_date:
        return Verdict(
            OutboxState.SKIPPED, "OLDER_THAN_IYS", "İYS holds a newer consent date (would be H178); İYS wins"
        )
    return None


def _not_onay_in_iys() -> Verdict:
    return Verdict(
        OutboxState.SKIPPED, "NOT_ONAY_IN_IYS", "İYS does not hold ONAY for this address now: nothing to withdraw"
    )


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
        return Verdict(
            OutboxState.SKIPPED, "NOT_IN_IYS", "İYS holds no record of this address; Sync Mode never creates one"
        )
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
        return Verdict(
            OutboxState.SKIPPED, "OLDER_THAN_IYS", "İYS holds a newer consent date (would be H178); İYS wins"
        )
    return None


def verdict_for_iys_error(code: str | None, message: str) -> Verdict:
    """What İYS's refusal of one update means for its outbox row (``pending``: try again)."""
    if code == "H162":
        # Our pre-check found the date in the past: İYS's clock is behind ours. Not final.
        return Verdict(OutboxState.PENDING, code, message)
    if code == "H174":
        return Verdict(OutboxState.SKIPPED, "SAME_STATUS", message)
    if code == "H178":
        return Verdict(OutboxState.SKIPPED, "OLDER_THAN_IYS", message)
    if code == "H175":
        return Verdict(OutboxState.SKIPPED, "NOT_IN_IYS", message)
    if code == "H467":
        return Verdict(OutboxState.REJECTED, "EXPIRED", message)
    return Verdict(OutboxState.REJECTED, code or "IYS_ERROR", message)
