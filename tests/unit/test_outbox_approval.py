"""When the outbox waits for a person: the thresholds, the share floor, and what the person is shown."""

from __future__ import annotations

import pytest

from iys_provider.outbox.approval import (
    MIN_UPDATES_FOR_SHARE,
    ApprovalThresholds,
    OutboxVolume,
    approval_request,
    unusual_volume,
)


def test_more_updates_than_the_count_need_approval_and_exactly_the_count_does_not():
    thresholds = ApprovalThresholds(max_updates=1000, max_share=1)
    assert unusual_volume(OutboxVolume({"RET": 1000}, onay_consents=1_000_000), thresholds) is None
    reason = unusual_volume(OutboxVolume({"RET": 600, "ONAY": 401}, onay_consents=1_000_000), thresholds)
    assert reason == "1,001 updates are more than 1,000"  # ONAY updates go through the same gate


def test_a_share_of_the_onay_consents_needs_approval_from_the_floor_on():
    thresholds = ApprovalThresholds(max_updates=10_000, max_share=0.05)
    below_floor = OutboxVolume({"RET": MIN_UPDATES_FOR_SHARE - 1}, onay_consents=200)  # half the brand, but few
    assert unusual_volume(below_floor, thresholds) is None
    at_floor = OutboxVolume({"RET": MIN_UPDATES_FOR_SHARE}, onay_consents=2_000)
    assert unusual_volume(at_floor, thresholds) is None  # exactly 5 %
    over = OutboxVolume({"RET": MIN_UPDATES_FOR_SHARE + 1}, onay_consents=2_000)
    assert (
        unusual_volume(over, thresholds) == "101 updates are 5.05% of the brand's 2,000 ONAY consents, more than 5.0%"
    )


def test_many_updates_before_any_consent_is_synced_need_approval():
    volume = OutboxVolume({"RET": MIN_UPDATES_FOR_SHARE}, onay_consents=0)
    assert volume.share is None
    assert "no ONAY consent of the brand is synced yet" in unusual_volume(volume, ApprovalThresholds())


@pytest.mark.parametrize(("updates", "share"), [(-1, 0.05), (10, 0), (10, 1.5)])
def test_thresholds_refuse_values_that_mean_nothing(updates, share):
    with pytest.raises(ValueError):
        ApprovalThresholds(max_updates=updates, max_share=share)


def test_the_request_shows_counts_share_and_a_masked_sample_only():
    volume = OutboxVolume({"RET": 2000, "ONAY": 5}, onay_consents=40_000)
    sample = [("MESAJ", "RET", "0532 111 00 01"), ("EPOSTA", "RET", "ali.veli@example.com")]
    subject, body = approval_request(volume, "2,005 updates are more than 1,000", sample, 700001)
    assert "2,005" in subject and "700001" in subject
    assert "5 ONAY, 2,000 RET" in body and "5.01%" in body and "40,000" in body
    assert "111 00 01" not in body and "ali.veli" not in body  # no personal data in the request
    assert "0532 1******01" in body and "a***@example.com" in body
