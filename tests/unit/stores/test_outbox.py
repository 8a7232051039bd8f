"""Outbox rules as pure functions: validation, the never-create guard and İYS error mapping."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iys_provider.models import ConsentStatus
from iys_provider.normalize import normalize_email, normalize_phone
from iys_provider.outbox.rules import (
    ASK_SINGLE_STATUS,
    DEFAULT_CLOCK_SKEW,
    DEFAULT_FUTURE_TOLERANCE,
    SYNC_MODE,
    KnownConsent,
    NotYetDue,
    OutboxRow,
    OutboxState,
    Verdict,
    WritePolicy,
    decide_after_status_check,
    decide_against_iys,
    decide_with_fresh_status,
    validate_row,
    verdict_for_iys_error,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def row(**overrides) -> OutboxRow:
    values = dict(
        id=1,
        recipient="0532 123 45 67",
        type="MESAJ",
        recipient_type="BIREYSEL",
        status="RET",
        consent_date=NOW - timedelta(hours=1),
        source="HS_MOBIL",
        attempts=0,
    )
    values.update(overrides)
    return OutboxRow(**values)


def test_valid_row_becomes_a_normalised_consent():
    consent = validate_row(row(type=" mesaj ", status="ret"), NOW)
    assert consent.recipient == "+905321234567"
    assert consent.status is ConsentStatus.RET


def test_never_creates_in_sync_mode_but_the_switch_exists():
    consent = validate_row(row(status="ONAY"), NOW)
    assert decide_against_iys(consent, None, SYNC_MODE).error_code == "NOT_IN_IYS"
    assert decide_against_iys(consent, KnownConsent(None, None), SYNC_MODE).error_code == "NOT_IN_IYS"
    assert decide_against_iys(consent, None, WritePolicy("integrator", may_create=True)) is None


def test_known_state_decides_same_status_older_and_send():
    consent = validate_row(row(), NOW)
    assert decide_against_iys(consent, KnownConsent("RET", None), SYNC_MODE).error_code == "SAME_STATUS"
    newer = KnownConsent("ONAY", consent.consent_date + timedelta(seconds=1))
    assert decide_against_iys(consent, newer, SYNC_MODE).error_code == "OLDER_THAN_IYS"
    same_second = KnownConsent("ONAY", consent.consent_date)
    assert decide_against_iys(consent, same_second, SYNC_MODE).error_code == "OLDER_THAN_IYS"
    assert (
        decide_against_iys(consent, KnownConsent("ONAY", consent.consent_date - timedelta(days=1)), SYNC_MODE) is None
    )


def test_an_earlier_delivery_is_recognised_instead_of_resent():
    consent = validate_row(row(), NOW)
    delivered = KnownConsent("RET", consent.consent_date, "tx-1")
    verdict = decide_against_iys(consent, delivered, SYNC_MODE, attempts=1)
    assert verdict == Verdict(OutboxState.SENT, None, "delivered by an earlier attempt", "tx-1")


@pytest.mark.parametrize(
    ("code", "state", "error_code"),
    [
        ("H174", OutboxState.SKIPPED, "SAME_STATUS"),
        ("H178", OutboxState.SKIPPED, "OLDER_THAN_IYS"),
        ("H175", OutboxState.SKIPPED, "NOT_IN_IYS"),
        ("H467", OutboxState.REJECTED, "EXPIRED"),
        ("H121", OutboxState.REJECTED, "H121"),
        (None, OutboxState.REJECTED, "IYS_ERROR"),
    ],
)
def test_iys_errors_map_to_final_states(code, state, error_code):
    verdict = verdict_for_iys_error(code, "message")
    assert (verdict.state, verdict.error_code) == (state, error_code)


EXAMPLES = int(os.environ.get("IYS_HYPOTHESIS_EXAMPLES", "2000"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    recipient=st.one_of(st.text(max_size=40), st.from_regex(r"\+?(90)?0?5[0-9]{9}", fullmatch=True), st.emails()),
    type_=st.one_of(st.sampled_from(["MESAJ", "ARAMA", "EPOSTA", "mesaj"]), st.text(max_size=8)),
    status=st.one_of(st.sampled_from(["ONAY", "RET"]), st.text(max_size=6)),
    recipient_type=st.one_of(st.sampled_from(["BIREYSEL", "TACIR"]), st.text(max_size=8)),
    source=st.one_of(st.sampled_from(["HS_WEB", "HS_KARAR", "HS_2015", "IYS_WEB"]), st.text(max_size=12)),
    age=st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=4000)),
)
def test_outbox_validation_never_crashes_and_never_lets_invalid_values_through(
    recipient, type_, status, recipient_type, source, age
):
    result = validate_row(
        row(
            recipient=recipient,
            type=type_,
            status=status,
            recipient_type=recipient_type,
            source=source,
            consent_date=NOW - age,
        ),
        NOW,
    )
    if isinstance(result, Verdict):
        assert result.state is OutboxState.REJECTED and result.error_code
        return
    if isinstance(result, NotYetDue):  # a little ahead of our clock: waits, is never sent early
        assert NOW - DEFAULT_CLOCK_SKEW < result.consent.consent_date <= NOW + DEFAULT_FUTURE_TOLERANCE
        assert result.due_at > NOW
        return
    # Whatever passes is something İYS accepts: no H120/H121/H464, no H162, no İYS-only source.
    api = result.to_api()
    if api["type"] == "EPOSTA":
        assert normalize_email(api["recipient"]).value == api["recipient"]
    else:
        assert normalize_phone(api["recipient"]).value == api["recipient"]
    assert api["source"].startswith("HS_") and api["source"] != "HS_2015"
    assert result.consent_date <= NOW - DEFAULT_CLOCK_SKEW
    assert api["status"] in ("ONAY", "RET") and api["recipientType"] in ("BIREYSEL", "TACIR")


# --------------------------------------------------------------------------- fresh verification (issue #10)

RET_ROW = validate_row(row(status="RET"), NOW)
ONAY_ROW = validate_row(row(status="ONAY"), NOW)
OLDER = KnownConsent("ONAY", RET_ROW.consent_date - timedelta(days=1), "tx-old")
NEWER = KnownConsent("ONAY", RET_ROW.consent_date + timedelta(seconds=1), "tx-new")
STALE_RET = KnownConsent("RET", RET_ROW.consent_date - timedelta(days=1), "tx-stale")
OURS = KnownConsent("RET", RET_ROW.consent_date, "tx-ours")


@pytest.mark.parametrize(
    ("consent", "onay_in_iys", "known", "attempts", "expected"),
    [
        # A RET goes out exactly when İYS holds ONAY now, whatever our copy says ...
        (RET_ROW, True, None, 0, None),
        (RET_ROW, True, STALE_RET, 0, None),  # the stale copy says RET: still sent (path 1)
        (RET_ROW, True, OLDER, 0, None),
        # ... unless İYS's date is provably newer (it would answer H178)
        (RET_ROW, True, NEWER, 0, "OLDER_THAN_IYS"),
        # Not ONAY in İYS: nothing to withdraw, and no single-status call
        (RET_ROW, False, None, 0, "NOT_ONAY_IN_IYS"),
        (RET_ROW, False, OLDER, 0, "NOT_ONAY_IN_IYS"),  # our copy's ONAY is stale: İYS wins
        # An earlier attempt may be why it is not ONAY: recognise it, or ask
        (RET_ROW, False, OURS, 1, "sent"),
        (RET_ROW, False, STALE_RET, 1, ASK_SINGLE_STATUS),
        # ONAY rows
        (ONAY_ROW, True, None, 0, "SAME_STATUS"),
        (ONAY_ROW, False, None, 0, ASK_SINGLE_STATUS),  # never create: İYS must hold the address
        (ONAY_ROW, False, STALE_RET, 0, None),  # İYS holds it (not as ONAY): the opt-in goes out
        (ONAY_ROW, False, KnownConsent("RET", ONAY_ROW.consent_date, None), 0, "OLDER_THAN_IYS"),
    ],
)
def test_fresh_verification_decides_every_row(consent, onay_in_iys, known, attempts, expected):
    decision = decide_with_fresh_status(
        consent, onay_in_iys=onay_in_iys, known=known, policy=SYNC_MODE, attempts=attempts
    )
    if expected is None or expected == ASK_SINGLE_STATUS:
        assert decision == expected
    elif expected == "sent":
        assert decision == Verdict(OutboxState.SENT, None, "delivered by an earlier attempt", "tx-ours")
    else:
        assert decision.error_code == expected and decision.state is OutboxState.SKIPPED


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    onay_in_iys=st.booleans(),
    known_status=st.sampled_from([None, "ONAY", "RET"]),
    known_offset=st.one_of(st.none(), st.timedeltas(min_value=timedelta(days=-30), max_value=timedelta(days=30))),
    attempts=st.integers(min_value=0, max_value=3),
)
def test_a_ret_is_never_dropped_while_iys_would_accept_it(onay_in_iys, known_status, known_offset, attempts):
    """Whatever our copy holds: if İYS holds ONAY with an older date than the RET, the RET is sent or recognised."""
    known = (
        None
        if known_status is None
        else KnownConsent(known_status, None if known_offset is None else RET_ROW.consent_date + known_offset, "tx")
    )
    decision = decide_with_fresh_status(
        RET_ROW, onay_in_iys=onay_in_iys, known=known, policy=SYNC_MODE, attempts=attempts
    )
    iys_date_provably_newer = (
        known is not None and known.consent_date is not None and known.consent_date >= RET_ROW.consent_date
    )
    if onay_in_iys and not iys_date_provably_newer:
        assert decision is None or decision.state is OutboxState.SENT
    if not onay_in_iys:
        assert decision is not None  # nothing to withdraw: never sent
    assert decision != ASK_SINGLE_STATUS or attempts > 0


def test_after_a_status_check_a_ret_is_recognised_or_skipped_never_created():
    ours = decide_after_status_check(RET_ROW, OURS, SYNC_MODE, attempts=1)
    assert (ours.state, ours.transaction_id) == (OutboxState.SENT, "tx-ours")
    assert decide_after_status_check(RET_ROW, None, SYNC_MODE, attempts=1).error_code == "NOT_ONAY_IN_IYS"
    assert decide_after_status_check(RET_ROW, STALE_RET, SYNC_MODE, attempts=1).error_code == "NOT_ONAY_IN_IYS"
    assert decide_after_status_check(RET_ROW, OLDER, SYNC_MODE, attempts=1) is None
    assert decide_after_status_check(ONAY_ROW, None, SYNC_MODE).error_code == "NOT_IN_IYS"


def test_clock_tolerance_waits_a_little_and_rejects_far_future_dates():
    assert isinstance(validate_row(row(consent_date=NOW + timedelta(seconds=5)), NOW), NotYetDue)
    assert isinstance(validate_row(row(consent_date=NOW - timedelta(seconds=5)), NOW), NotYetDue)  # İYS may lag
    due = validate_row(row(consent_date=NOW + timedelta(minutes=9)), NOW)
    assert isinstance(due, NotYetDue) and due.due_at == NOW + timedelta(minutes=9) + DEFAULT_CLOCK_SKEW
    assert validate_row(row(consent_date=NOW + timedelta(minutes=11)), NOW).error_code == "FUTURE_DATE"
    assert validate_row(
        row(consent_date=NOW + timedelta(minutes=11)), NOW, future_tolerance=timedelta(minutes=15)
    ).consent


def test_h162_from_iys_is_not_final():
    assert verdict_for_iys_error("H162", "future").state is OutboxState.PENDING


def test_the_expired_pre_check_is_never_stricter_than_iys_across_a_year():
    """For every day of 2026: the newest date İYS refuses is EXPIRED for us, one second later is sendable."""
    from iys_provider.business_days import newest_expired_consent_date

    for day in range(365):
        now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC) + timedelta(days=day)
        expired = newest_expired_consent_date(now - DEFAULT_CLOCK_SKEW)
        assert validate_row(row(consent_date=expired), now).error_code == "EXPIRED"
        assert not isinstance(validate_row(row(consent_date=expired + timedelta(seconds=1)), now), Verdict)
