"""Outbox rules as pure functions: validation, the never-create guard and İYS error mapping."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iys_provider.models import ConsentStatus
from iys_provider.normalize import normalize_email, normalize_phone
from iys_provider.outbox import (
    SYNC_MODE,
    KnownConsent,
    OutboxRow,
    OutboxState,
    Verdict,
    WritePolicy,
    decide_against_iys,
    validate_row,
    verdict_for_iys_error,
)

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def row(**overrides) -> OutboxRow:
    values = dict(
        id=1, recipient="0532 123 45 67", type="MESAJ", recipient_type="BIREYSEL", status="RET",
        consent_date=NOW - timedelta(hours=1), source="HS_MOBIL", attempts=0,
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
    assert decide_against_iys(consent, KnownConsent("ONAY", consent.consent_date - timedelta(days=1)), SYNC_MODE) is None


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
        row(recipient=recipient, type=type_, status=status, recipient_type=recipient_type, source=source,
            consent_date=NOW - age),
        NOW,
    )
    if isinstance(result, Verdict):
        assert result.state is OutboxState.REJECTED and result.error_code
        return
    # Whatever passes is something İYS accepts: no H120/H121/H464, no H162, no İYS-only source.
    api = result.to_api()
    if api["type"] == "EPOSTA":
        assert normalize_email(api["recipient"]).value == api["recipient"]
    else:
        assert normalize_phone(api["recipient"]).value == api["recipient"]
    assert api["source"].startswith("HS_") and api["source"] != "HS_2015"
    assert result.consent_date <= NOW
    assert api["status"] in ("ONAY", "RET") and api["recipientType"] in ("BIREYSEL", "TACIR")
