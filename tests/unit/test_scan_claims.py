"""scan_claims: what a batch claims, and what it asks once other batches hold some addresses."""

from __future__ import annotations

from iys_provider.initial_sync.scan_claims import addresses_to_ask, claimable
from iys_provider.models import ConsentType, RecipientType

B, T = RecipientType.BIREYSEL, RecipientType.TACIR
PHONE, OTHER_PHONE, MAIL = "+905321110001", "+905321110002", "a@example.com"
TO_CHECK = {
    (B, ConsentType.MESAJ): {PHONE, OTHER_PHONE},
    (B, ConsentType.ARAMA): {PHONE, OTHER_PHONE},
    (B, ConsentType.EPOSTA): {MAIL},
    (T, ConsentType.MESAJ): {PHONE},
    (T, ConsentType.ARAMA): {PHONE},
}


def test_a_phone_is_claimed_once_for_both_its_channels_and_per_recipient_type():
    claims = list(claimable(TO_CHECK))
    assert len(claims) == len(set(claims))
    assert set(claims) == {("BIREYSEL", PHONE), ("BIREYSEL", OTHER_PHONE), ("BIREYSEL", MAIL), ("TACIR", PHONE)}


def test_nothing_claimed_elsewhere_asks_everything():
    assert addresses_to_ask(TO_CHECK, set()) == TO_CHECK


def test_an_address_another_batch_holds_is_left_on_every_channel_of_its_type_only():
    asked = addresses_to_ask(TO_CHECK, {("BIREYSEL", PHONE), ("BIREYSEL", MAIL)})
    assert asked == {
        (B, ConsentType.MESAJ): {OTHER_PHONE},
        (B, ConsentType.ARAMA): {OTHER_PHONE},
        # The same number as a TACIR is another İYS record, still this batch's to ask.
        (T, ConsentType.MESAJ): {PHONE},
        (T, ConsentType.ARAMA): {PHONE},
    }
    # A channel with nothing left to ask is dropped, so no empty call is planned for it.
    assert (B, ConsentType.EPOSTA) not in asked


def test_the_callers_sets_are_not_changed():
    before = {key: set(values) for key, values in TO_CHECK.items()}
    addresses_to_ask(TO_CHECK, {("BIREYSEL", PHONE)})
    assert before == TO_CHECK
