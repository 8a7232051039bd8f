"""Recipient normalisation and masking: real-world table + property tests, no mocks.

Expected phone outcomes are checked against ``phonenumbers`` itself (the library İYS
uses server-side), so the module's compiled fast path cannot drift from it unnoticed.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import os
import random
import re

import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from iys_provider import normalize as normalize_module
from iys_provider.normalize import (
    MAX_RAW_LENGTH,
    Normalized,
    RejectReason,
    mask_email,
    mask_phone,
    mask_recipient,
    normalize_email,
    normalize_phone,
)

MOBILE = "+905321234567"

PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("IYS_HYPOTHESIS_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

R = RejectReason


def accepted(value: str) -> Normalized:
    return Normalized(value, None)


def rejected(reason: RejectReason) -> Normalized:
    return Normalized(None, reason)


def reference_outcome(national: str) -> Normalized:
    """What a Turkish national number should normalise to, decided by phonenumbers alone."""
    number_type = phonenumbers.number_type(phonenumbers.PhoneNumber(country_code=90, national_number=int(national)))
    if number_type == PhoneNumberType.MOBILE:
        return accepted("+90" + national)
    if number_type != PhoneNumberType.UNKNOWN:
        return rejected(R.PHONE_NOT_MOBILE)
    return rejected(R.PHONE_INVALID)


# --------------------------------------------------------------------------- tables

PHONE_CASES = [
    # The shapes user tables really hold.
    ("0532 123 45 67", accepted(MOBILE)),
    ("5321234567", accepted(MOBILE)),
    ("+90 (532) 123-45-67", accepted(MOBILE)),
    ("905321234567", accepted(MOBILE)),
    ("0090 532 123 45 67", accepted(MOBILE)),
    ("+905321234567", accepted(MOBILE)),
    (" \t\u00a00532 123 45 67\u00a0\t ", accepted(MOBILE)),
    ("0532.123.45.67", accepted(MOBILE)),
    ("0532/123 45 67", accepted(MOBILE)),
    ("(0532) 123 45 67", accepted(MOBILE)),
    ("0532\u2013123\u201345\u201367", accepted(MOBILE)),  # en dashes pasted from Word
    ("\ufeff05321234567\u200b", accepted(MOBILE)),  # BOM / zero-width space from copy-paste
    ("5321234567.0", accepted(MOBILE)),  # Excel float
    ("905321234567.0", accepted(MOBILE)),
    ("+90 542 111 22 33", accepted("+905421112233")),
    ("0505 123 45 67", accepted("+905051234567")),
    # Wrong kind of number.
    ("0212 123 45 67", rejected(R.PHONE_NOT_MOBILE)),  # Istanbul landline
    ("+90 212 123 45 67", rejected(R.PHONE_NOT_MOBILE)),
    ("0850 123 45 67", rejected(R.PHONE_NOT_MOBILE)),  # 850 VoIP / corporate
    ("0512 123 45 67", rejected(R.PHONE_NOT_MOBILE)),  # pager range
    ("+44 7911 123456", rejected(R.PHONE_NOT_TR)),
    ("0044 7911 123456", rejected(R.PHONE_NOT_TR)),
    ("+1 212 555 0123", rejected(R.PHONE_NOT_TR)),
    ("+5321234567", rejected(R.PHONE_NOT_TR)),  # '+53' is Cuba; never guess a missing 90
    # The form İYS stores but nobody can reach.
    ("+9005321234567", rejected(R.PHONE_9005_FORM)),
    ("9005321234567", rejected(R.PHONE_9005_FORM)),
    ("+90 (0532) 123 45 67", rejected(R.PHONE_9005_FORM)),
    ("009005321234567", rejected(R.PHONE_9005_FORM)),
    # Broken numbers.
    ("0532 123 45", rejected(R.PHONE_INVALID)),  # too short
    ("532123456.0", rejected(R.PHONE_INVALID)),  # 9-digit typo; must not become 5321234560
    ("0520 123 45 67", rejected(R.PHONE_INVALID)),  # unassigned 52x range
    ("1234567890", rejected(R.PHONE_INVALID)),
    ("0532 123 45 678", rejected(R.PHONE_TOO_LONG)),
    ("+90 532 123 45 678", rejected(R.PHONE_TOO_LONG)),
    ("0532 123 45 67 0533 765 43 21", rejected(R.PHONE_TOO_LONG)),  # two numbers in one cell
    ("1" * 40, rejected(R.PHONE_TOO_LONG)),
    ("0532 ABC 45 67", rejected(R.PHONE_UNPARSEABLE)),  # no vanity-letter guessing
    ("tel:+905321234567", rejected(R.PHONE_UNPARSEABLE)),
    ("0532 123 45 67 (cep)", rejected(R.PHONE_UNPARSEABLE)),
    ("0532,123,45,67", rejected(R.PHONE_UNPARSEABLE)),
    ("5.321234567E+09", rejected(R.PHONE_UNPARSEABLE)),
    ("\u0660\u0665\u0663\u0662\u0661\u0662\u0663\u0664\u0665\u0666\u0667", rejected(R.PHONE_UNPARSEABLE)),
    ("05321234567\x00", rejected(R.PHONE_UNPARSEABLE)),
    ("+", rejected(R.PHONE_UNPARSEABLE)),
    ("---", rejected(R.PHONE_UNPARSEABLE)),
    ("yok", rejected(R.PHONE_UNPARSEABLE)),
    ("\ud800", rejected(R.PHONE_UNPARSEABLE)),  # lone surrogate
    # Empty and oversized.
    ("", rejected(R.EMPTY)),
    ("   \t\n\u00a0", rejected(R.EMPTY)),
    (None, rejected(R.EMPTY)),
    (float("nan"), rejected(R.EMPTY)),
    (" " * (MAX_RAW_LENGTH + 1), rejected(R.TOO_LONG_INPUT)),
    ("5" * (MAX_RAW_LENGTH + 1), rejected(R.TOO_LONG_INPUT)),
    # Number-typed cells from spreadsheet imports.
    (5321234567, accepted(MOBILE)),
    (905321234567, accepted(MOBILE)),
    (5321234567.0, accepted(MOBILE)),
    (2121234567, rejected(R.PHONE_NOT_MOBILE)),
    (10**5000, rejected(R.PHONE_TOO_LONG)),  # str() of this int would raise
    (-5321234567, rejected(R.NOT_TEXT)),
    (5321234567.5, rejected(R.NOT_TEXT)),
    (float("inf"), rejected(R.NOT_TEXT)),
    (True, rejected(R.NOT_TEXT)),
    (b"05321234567", rejected(R.NOT_TEXT)),
    (decimal.Decimal("5321234567"), rejected(R.NOT_TEXT)),
    (["05321234567"], rejected(R.NOT_TEXT)),
    (object(), rejected(R.NOT_TEXT)),
]

EMAIL_CASES = [
    ("user@example.com", accepted("user@example.com")),
    ("  User.Name@Example.COM \t", accepted("user.name@example.com")),
    ("\u00a0ayse@firma.com.tr\u200b", accepted("ayse@firma.com.tr")),
    ("ali+kampanya@gmail.com", accepted("ali+kampanya@gmail.com")),  # + labels are allowed
    ("first_last-1@sub.domain-x.co.uk", accepted("first_last-1@sub.domain-x.co.uk")),
    ("x@x.xx", accepted("x@x.xx")),  # exactly the 6-character minimum
    ("user@xn--bcher-kva.com", accepted("user@xn--bcher-kva.com")),
    ("a" * 259 + "@x.com", accepted("a" * 259 + "@x.com")),  # exactly 265
    # Turkish letters, detected before lower-casing.
    ("şule@gmail.com", rejected(R.EMAIL_TURKISH_CHARS)),
    ("AYŞE@HOTMAIL.COM", rejected(R.EMAIL_TURKISH_CHARS)),
    ("İbrahim@firma.com", rejected(R.EMAIL_TURKISH_CHARS)),  # 'İ'.lower() == 'i̇'
    ("user@gökyüzü.com.tr", rejected(R.EMAIL_TURKISH_CHARS)),
    ("ılgaz@x.com", rejected(R.EMAIL_TURKISH_CHARS)),
    ("josé@example.com", rejected(R.EMAIL_INVALID)),
    ("user@\u212aelvin.com", rejected(R.EMAIL_INVALID)),  # Kelvin sign lower-cases to ASCII 'k'
    # Length limits.
    ("a@b.c", rejected(R.EMAIL_TOO_SHORT)),
    ("a" * 260 + "@x.com", rejected(R.EMAIL_TOO_LONG)),  # 266 characters
    ("a" * (MAX_RAW_LENGTH + 1), rejected(R.TOO_LONG_INPUT)),
    # Shape.
    ("user name@example.com", rejected(R.EMAIL_INVALID)),
    ("username.example.com", rejected(R.EMAIL_INVALID)),
    ("user@@example.com", rejected(R.EMAIL_INVALID)),
    ("user@exa@mple.com", rejected(R.EMAIL_INVALID)),
    ("@example.com", rejected(R.EMAIL_INVALID)),
    ("user@example", rejected(R.EMAIL_INVALID)),
    ("user@example.c", rejected(R.EMAIL_INVALID)),
    ("user@example.c0m", rejected(R.EMAIL_INVALID)),
    ("user@-example.com", rejected(R.EMAIL_INVALID)),
    ("user@example-.com", rejected(R.EMAIL_INVALID)),
    ("user@example..com", rejected(R.EMAIL_INVALID)),
    ("user.@example.com", rejected(R.EMAIL_INVALID)),
    ("us..er@example.com", rejected(R.EMAIL_INVALID)),
    ("user@example.com.", rejected(R.EMAIL_INVALID)),
    ("o'brien@example.com", rejected(R.EMAIL_INVALID)),
    ("user!@example.com", rejected(R.EMAIL_INVALID)),
    ("us%er@example.com", rejected(R.EMAIL_INVALID)),
    ("user(x)@example.com", rejected(R.EMAIL_INVALID)),
    ("user,x@example.com", rejected(R.EMAIL_INVALID)),
    ("user”@example.com", rejected(R.EMAIL_INVALID)),
    ("user\x00@example.com", rejected(R.EMAIL_INVALID)),
    # Empty and not text.
    ("", rejected(R.EMPTY)),
    (" \t\u00a0\u200b", rejected(R.EMPTY)),
    (None, rejected(R.EMPTY)),
    (float("nan"), rejected(R.EMPTY)),
    (12345678, rejected(R.NOT_TEXT)),
    (b"user@example.com", rejected(R.NOT_TEXT)),
]


def case_id(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"int-{value.bit_length()}-bits"  # repr() of a huge int raises
    return repr(value)[:40]


@pytest.mark.parametrize(("raw", "expected"), PHONE_CASES, ids=case_id)
def test_phone_table(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), EMAIL_CASES, ids=case_id)
def test_email_table(raw, expected):
    assert normalize_email(raw) == expected


class _Text(str):
    def strip(self, *args):  # a hostile subclass must not change the outcome
        raise RuntimeError("boom")


class _ExplodingIndex:
    def __index__(self):
        raise RuntimeError("boom")

    def __str__(self):
        raise RuntimeError("boom")


class _Operator(enum.IntEnum):
    TURKCELL = 5321234567


class _NumpyLikeInt:
    """Stands in for numpy.int64: not an int subclass, but has __index__."""

    def __index__(self):
        return 5321234567


def test_unusual_input_types():
    assert normalize_phone(_Text(" 0532 123 45 67 ")) == accepted(MOBILE)
    assert normalize_email(_Text(" User@Example.com ")) == accepted("user@example.com")
    assert normalize_phone(_ExplodingIndex()) == rejected(R.NOT_TEXT)
    assert normalize_email(_ExplodingIndex()) == rejected(R.NOT_TEXT)
    assert normalize_phone(_Operator.TURKCELL) == accepted(MOBILE)
    assert normalize_phone(_NumpyLikeInt()) == accepted(MOBILE)


def test_normalized_contract():
    assert normalize_phone(MOBILE).ok
    assert not normalize_phone("").ok
    with pytest.raises(dataclasses.FrozenInstanceError):
        normalize_phone(MOBILE).value = "x"  # type: ignore[misc]


def test_reject_reason_codes_are_stable():
    # These strings live in the quarantine table; renaming one orphans stored rows.
    assert {reason.value for reason in RejectReason} == {
        "EMPTY",
        "NOT_TEXT",
        "PHONE_UNPARSEABLE",
        "PHONE_INVALID",
        "PHONE_NOT_TR",
        "PHONE_NOT_MOBILE",
        "PHONE_9005_FORM",
        "PHONE_TOO_LONG",
        "EMAIL_INVALID",
        "EMAIL_TURKISH_CHARS",
        "EMAIL_TOO_SHORT",
        "EMAIL_TOO_LONG",
        "TOO_LONG_INPUT",
    }
    assert all(reason.name == reason.value for reason in RejectReason)


MASK_CASES = [
    ("+905321234567", "+90532*****67"),
    ("905321234567", "90532*****67"),
    ("5321234567", "532*****67"),
    ("1234567", "*****67"),
    ("12345", "*****"),
    ("1234", "****"),
    ("", ""),
    ("+441234567890123", "+44123********23"),
    ("user@example.com", "u***@example.com"),
    ("ab@x.com", "a***@x.com"),
    ("u@x.com", "***@x.com"),  # a one-letter local part would be revealed whole
    ("@x.com", "***@x.com"),
    ("a@b@c.com", "a***@c.com"),
]


@pytest.mark.parametrize(("value", "expected"), MASK_CASES)
def test_mask_recipient_table(value, expected):
    assert mask_recipient(value) == expected


def test_mask_functions_direct_and_non_text():
    assert mask_phone(MOBILE) == "+90532*****67"
    assert mask_email("user@example.com") == "u***@example.com"
    assert mask_email("5321234567") == "532*****67"  # no '@': masked like a phone
    for value in (None, 5321234567, b"user@example.com"):
        assert mask_recipient(value) == "***"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- fast path vs phonenumbers


def test_fast_path_is_active():
    # Without the compiled metadata matchers every row pays ~17 µs in phonenumbers.
    assert normalize_module._TR_NATIONAL_MATCHERS is not None


def test_every_mobile_range_agrees_with_phonenumbers():
    """All 6-digit prefixes 5xxxxx (mobile validity is decided within 6 digits) and all
    4-digit prefixes of other national numbers, each with a random subscriber suffix."""
    rng = random.Random(1923)
    nationals = [f"5{prefix:05d}{rng.randrange(10**4):04d}" for prefix in range(10**5)]
    nationals += [f"{prefix}{rng.randrange(10**6):06d}" for prefix in range(1000, 10**4)]
    mismatches = [n for n in nationals if normalize_phone(n) != reference_outcome(n)]
    assert mismatches == []


@PROPERTY_SETTINGS
@given(st.from_regex(r"[1-9][0-9]{9}", fullmatch=True))
def test_any_national_number_agrees_with_phonenumbers(national):
    assert normalize_phone(national) == reference_outcome(national)
    assert normalize_phone("0" + national) == reference_outcome(national)


# --------------------------------------------------------------------------- phone properties

ANY_VALUE = st.one_of(
    st.text(),
    st.text(alphabet="0123456789+ -./()\t\u00a0"),
    st.binary(),
    st.integers(),
    st.none(),
    st.floats(),
    st.booleans(),
    st.decimals(),
    st.lists(st.text(), max_size=2),
    st.text(min_size=MAX_RAW_LENGTH - 5, max_size=MAX_RAW_LENGTH + 5),
)


def assert_well_formed(result: Normalized) -> None:
    assert isinstance(result, Normalized)
    assert (result.value is None) != (result.reason is None)
    assert result.reason is None or isinstance(result.reason, RejectReason)
    assert result.ok == (result.reason is None)


@PROPERTY_SETTINGS
@given(ANY_VALUE)
def test_never_raises_and_always_explains(raw):
    assert_well_formed(normalize_phone(raw))
    assert_well_formed(normalize_email(raw))
    if isinstance(raw, str):
        assert isinstance(mask_recipient(raw), str)


PHONE_LIKE = st.one_of(
    st.text(alphabet="0123456789+ -.()", max_size=25),
    st.from_regex(r"(\+90|0090|90|0|\+)?[ ]?5[0-9 ]{8,12}", fullmatch=True),
    st.integers(min_value=0, max_value=10**14),
)


@PROPERTY_SETTINGS
@given(PHONE_LIKE)
def test_accepted_phones_are_valid_turkish_mobiles_and_idempotent(raw):
    result = normalize_phone(raw)
    assert_well_formed(result)
    if result.ok:
        assert re.fullmatch(r"\+905[0-9]{9}", result.value)
        parsed = phonenumbers.parse(result.value)
        assert phonenumbers.is_valid_number(parsed)
        assert phonenumbers.number_type(parsed) == PhoneNumberType.MOBILE
        assert normalize_phone(result.value) == result


SEPARATORS = st.sampled_from(["", " ", "-", ".", "/", "\t", "\u00a0", " - ", "\u2013"])
PADDING = st.sampled_from(["", " ", "\t", "\u00a0", "  ", "\u200b"])
GROUPINGS = [(3, 3, 2, 2), (3, 3, 4), (3, 7), (10,), (3, 2, 3, 2)]
PREFIXES = ["", "0", "90", "+90", "0090", "+90 ", "0 ", "00 90 "]


@st.composite
def spell(draw, national: str, prefix: str) -> str:
    """One human spelling of a national number with the given prefix."""
    grouping = draw(st.sampled_from(GROUPINGS))
    separator = draw(SEPARATORS)
    groups, start = [], 0
    for size in grouping:
        groups.append(national[start : start + size])
        start += size
    if len(groups) > 1 and draw(st.booleans()):
        groups[0] = f"({groups[0]})"
    body = separator.join(groups)
    return draw(PADDING) + prefix + body + draw(PADDING)


@PROPERTY_SETTINGS
@given(st.data(), st.from_regex(r"5[0-9]{9}", fullmatch=True))
def test_every_spelling_of_a_mobile_normalises_identically(data, national):
    spellings: list[object] = [data.draw(spell(national, prefix)) for prefix in PREFIXES]
    spellings += [int(national), int("90" + national), float(national), national + ".0", "90" + national + ".0"]
    expected = reference_outcome(national)
    outcomes = {repr(s): normalize_phone(s) for s in spellings}
    assert all(outcome == expected for outcome in outcomes.values()), outcomes


@PROPERTY_SETTINGS
@given(st.data(), st.from_regex(r"5[0-9]{9}", fullmatch=True))
def test_9005_spellings_are_always_flagged(data, national):
    prefix = data.draw(st.sampled_from(["+900", "900", "00900", "+90 0", "+90 (0", "0090 0"]))
    assert normalize_phone(prefix + national) == rejected(R.PHONE_9005_FORM)


@PROPERTY_SETTINGS
@given(st.integers(min_value=0, max_value=10**20))
def test_integer_cells_match_their_digits(number):
    assert normalize_phone(number) == normalize_phone(str(number))


# --------------------------------------------------------------------------- e-mail properties

TURKISH_LETTERS = "çğıöşüÇĞİÖŞÜ"
IYS_FORBIDDEN = set("{[(!'^%&/()=?,”½²³°¶)}]")


def satisfies_iys_email_rules(value: str) -> bool:
    """The İYS e-mail rules written out as separate checks, independent of the module's regex."""
    if not (6 <= len(value) <= 265) or value != value.lower() or not value.isascii():
        return False
    if any(ch in TURKISH_LETTERS or ch.isspace() or ch in IYS_FORBIDDEN for ch in value):
        return False
    if value.count("@") != 1:
        return False
    local, domain = value.split("@")
    if not local or not set(local) <= set("abcdefghijklmnopqrstuvwxyz0123456789._+-"):
        return False
    labels = domain.split(".")
    if len(labels) < 2 or not re.fullmatch(r"[a-z]{2,}", labels[-1]):
        return False
    return all(
        label and label[0] != "-" and label[-1] != "-" and set(label) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        for label in labels
    )


EMAIL_LIKE = st.one_of(
    st.emails(),
    st.text(),
    st.from_regex(r"[A-Za-z0-9._+'!%-]{0,12}@[A-Za-z0-9.-]{0,12}\.[A-Za-z0-9]{0,4}", fullmatch=True),
    st.builds(lambda e, pad: pad + e.upper() + pad, st.emails(), PADDING),
)


@PROPERTY_SETTINGS
@given(EMAIL_LIKE)
def test_accepted_emails_follow_iys_rules_and_are_idempotent(raw):
    result = normalize_email(raw)
    assert_well_formed(result)
    if result.ok:
        assert satisfies_iys_email_rules(result.value), result.value
        assert normalize_email(result.value) == result


@PROPERTY_SETTINGS
@given(st.emails(), PADDING, st.sampled_from([str.upper, str.lower, str.title, str.swapcase]))
def test_email_outcome_ignores_case_and_padding(email, padding, recase):
    assert normalize_email(padding + recase(email) + padding) == normalize_email(email)


@PROPERTY_SETTINGS
@given(st.text(max_size=100), st.sampled_from(TURKISH_LETTERS), st.text(max_size=100))
def test_turkish_letters_are_always_named(before, letter, after):
    assert normalize_email(f"{before}{letter}{after}@example.com") == rejected(R.EMAIL_TURKISH_CHARS)


# --------------------------------------------------------------------------- masking properties


@PROPERTY_SETTINGS
@given(st.from_regex(r"5[0-9]{9}", fullmatch=True).filter(lambda n: reference_outcome(n).ok))
def test_masked_phone_hides_the_subscriber_number(national):
    value = normalize_phone(national).value
    masked = mask_phone(value)
    assert masked == value[:6] + "*****" + value[11:]
    assert value[3:] not in masked  # the 10-digit national number never survives
    assert masked[6:11] == "*****"  # national digits 4-8 are hidden; only the last two remain


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.characters(blacklist_characters="*")))
def test_mask_phone_reveals_at_most_head_and_tail(value):
    masked = mask_phone(value)
    assert len(masked) == len(value)
    hidden = [i for i, ch in enumerate(masked) if ch == "*"]
    assert len(hidden) >= min(len(value), 5)
    visible = [i for i in range(len(value)) if i not in hidden]
    assert all(i < 6 or i >= len(value) - 2 for i in visible)
    if len(value) > 4:
        assert masked != value


@PROPERTY_SETTINGS
@given(
    st.text(alphabet=st.characters(blacklist_characters="@*"), min_size=1, max_size=40),
    st.text(alphabet=st.characters(blacklist_characters="@"), max_size=40),
)
def test_mask_email_hides_the_local_part(local, domain):
    masked = mask_email(f"{local}@{domain}")
    masked_local, _, masked_domain = masked.rpartition("@")
    assert masked_domain == domain
    assert masked_local in ("***", local[0] + "***")
    assert masked_local.strip("*") in ("", local[:1])
    if len(local) == 1:
        assert masked_local == "***"
    assert mask_recipient(f"{local}@{domain}") == masked
