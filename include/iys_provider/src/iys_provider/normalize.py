"""Recipient normalisation and masking for İYS (pure Python + ``phonenumbers``).

User tables hold phone numbers and e-mail addresses in every shape a human or a
spreadsheet can produce. İYS accepts exactly one form per recipient (api reference
§4.3), and a recipient that is accepted in a slightly wrong form is worse than one that
is rejected: ``+9005…`` is stored by İYS but is invisible to citizens and to SMS
operators. Every value therefore goes through :func:`normalize_phone` or
:func:`normalize_email`, which either return the one canonical form or a stable
:class:`RejectReason` for the quarantine table. Neither function raises, whatever the
input type.

Phone rules (:func:`normalize_phone`)
    * Accepted: Turkish **mobile** numbers only (the product sends commercial SMS and
      calls to mobiles), returned as ``+905XXXXXXXXX``.
    * Understood input shapes: a 10-digit national number ``NXXXXXXXXX`` bare or after
      ``0``, ``90``, ``+90`` or ``0090``, with any mix of spaces, tabs, NBSP, zero-width
      spaces, ``. - / ( )`` and Unicode dashes between the digits, and a trailing
      ``.0`` / ``.00`` left by Excel floats (``5321234567.0``). These are classified
      without calling into ``phonenumbers`` (see :func:`_compile_tr_national_matchers`).
      Anything else made of digits and an optional leading ``+`` goes to
      ``phonenumbers.parse(…, "TR")``, so foreign numbers get a precise reason.
    * Letters of any kind (``tel:``, ``ext``, vanity numbers), commas, scientific
      notation and non-ASCII digits are ``PHONE_UNPARSEABLE`` rather than guessed.
    * Validity and number type come from libphonenumber's metadata for TR (İYS uses
      libphonenumber server-side). Valid TR non-mobile numbers (landlines, 850, pager,
      personal numbers) are ``PHONE_NOT_MOBILE``; valid foreign numbers are
      ``PHONE_NOT_TR``.
    * ``PHONE_TOO_LONG``: more than 17 digits, a Turkish number whose national part
      has more than 10 digits, or a foreign number libphonenumber calls too long.
      ``PHONE_INVALID``: a number that parses but is not valid (too short, unassigned
      range). ``PHONE_UNPARSEABLE``: anything libphonenumber cannot parse at all.
    * ``+9005…``/``9005…``/``009005…`` is ``PHONE_9005_FORM``: İYS would store it as
      written, where it is useless, so the source row must be fixed by a human.
    * Non-``str`` input: ``None`` and float NaN are ``EMPTY``; non-negative ``int`` values
      (and numpy integers, and floats with an integral value) are read as their digits,
      because spreadsheet imports routinely turn phone columns into numbers and
      ``5321234567`` / ``905321234567`` are still unambiguous; everything else
      (``bool``, ``bytes``, ``Decimal``, negative numbers, fractions, inf …) is
      ``NOT_TEXT``.

E-mail rules (:func:`normalize_email`, İYS §4.3)
    * Surrounding whitespace (Unicode, plus zero-width characters) is trimmed; the
      result is lower-cased because İYS stores and returns e-mail in lower case.
    * Turkish letters ``ç ğ ı ö ş ü Ç Ğ İ Ö Ş Ü`` → ``EMAIL_TURKISH_CHARS``; any other
      non-ASCII character → ``EMAIL_INVALID``. Both are checked before lower-casing:
      ``"İ".lower()`` is ``"i̇"`` and ``"\\u212a".lower()`` (Kelvin sign) is an ASCII
      ``k``, so lower-casing first would silently change the address.
    * Length 6–265 characters after trimming (``EMAIL_TOO_SHORT`` / ``EMAIL_TOO_LONG``).
    * Shape: exactly one ``@``; local part of ``a-z 0-9 . _ + -`` with no leading,
      trailing or doubled dot (``+`` labels are allowed); domain of dot-separated labels
      of ``a-z 0-9 -`` (1–63 chars, not starting or ending with ``-``) ending in a TLD
      of at least two letters. This excludes spaces and İYS's forbidden characters
      ``{[(!'^%&/()=?,”½²³°¶)}]``; rarer RFC characters (``# $ * ~ |``) are rejected too
      because İYS's exact regex is unpublished and a quarantined row is cheaper than a
      failed batch item.

Any raw ``str`` longer than :data:`MAX_RAW_LENGTH` is rejected as ``TOO_LONG_INPUT``
before any other work, so hostile or corrupt cells cannot make parsing expensive.
"""

from __future__ import annotations

import enum
import math
import operator
import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberType
from phonenumbers.phonenumberutil import ValidationResult

__all__ = [
    "MAX_RAW_LENGTH",
    "Normalized",
    "RejectReason",
    "mask_email",
    "mask_phone",
    "mask_recipient",
    "normalize_email",
    "normalize_phone",
]

MAX_RAW_LENGTH = 512
EMAIL_MIN_LENGTH = 6
EMAIL_MAX_LENGTH = 265

_TR_COUNTRY_CODE = 90
_TR_NATIONAL_LENGTH = 10
# E.164 allows 15 digits; "00" as the international prefix adds two more.
_MAX_PHONE_DIGITS = 17


class RejectReason(enum.StrEnum):
    """Why a recipient was not accepted. Values are stored in the quarantine table; never rename."""

    EMPTY = "EMPTY"
    NOT_TEXT = "NOT_TEXT"
    PHONE_UNPARSEABLE = "PHONE_UNPARSEABLE"
    PHONE_INVALID = "PHONE_INVALID"
    PHONE_NOT_TR = "PHONE_NOT_TR"
    PHONE_NOT_MOBILE = "PHONE_NOT_MOBILE"
    PHONE_9005_FORM = "PHONE_9005_FORM"
    PHONE_TOO_LONG = "PHONE_TOO_LONG"
    EMAIL_INVALID = "EMAIL_INVALID"
    EMAIL_TURKISH_CHARS = "EMAIL_TURKISH_CHARS"
    EMAIL_TOO_SHORT = "EMAIL_TOO_SHORT"
    EMAIL_TOO_LONG = "EMAIL_TOO_LONG"
    TOO_LONG_INPUT = "TOO_LONG_INPUT"


@dataclass(frozen=True, slots=True)
class Normalized:
    """Outcome of a normalisation: exactly one of ``value`` and ``reason`` is set."""

    value: str | None
    reason: RejectReason | None

    @property
    def ok(self) -> bool:
        return self.reason is None


# Rejections carry no per-input data, so one shared instance per reason saves an
# allocation per rejected row.
_REJECTED = {reason: Normalized(None, reason) for reason in RejectReason}


# --------------------------------------------------------------------------- characters

# Everything Python's str.strip() treats as whitespace (all of it is below U+3001), plus
# the invisible characters that copy-paste from web pages and Word leaves behind.
_INVISIBLE_CHARS = "\u200b\u200c\u200d\u2060\ufeff"
_BLANK_CHARS = "".join(ch for ch in map(chr, range(0x3001)) if ch.isspace()) + _INVISIBLE_CHARS
_PHONE_SEPARATOR_CHARS = _BLANK_CHARS + ".-/()" + "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
_DELETE_PHONE_SEPARATORS = str.maketrans("", "", _PHONE_SEPARATOR_CHARS)

_TURKISH_LETTERS = re.compile("[çğıöşüÇĞİÖŞÜ]")


# --------------------------------------------------------------------------- phone

# The shapes real tables hold for a Turkish number, after separators are removed: the
# 10-digit national number with no prefix, trunk "0", or country code "90" / "+90" /
# "0090". The alternatives have different lengths, so the national number is never
# ambiguous. A bare "+" is deliberately absent: "+53…" is Cuba, not a Turkish number
# missing its "90".
_COMMON_TR_SHAPE = re.compile(r"(?:\+90|0090|90|0)?([1-9][0-9]{9})")
_FORM_9005 = re.compile(r"(?:\+|00)?9005[0-9]{9}")
_ACCEPTED_PHONE = re.compile(r"\+905[0-9]{9}")
_DIGITS_WITH_OPTIONAL_PLUS = re.compile(r"\+?[0-9]+")
_EXCEL_FLOAT = re.compile(r"[" + re.escape(_BLANK_CHARS) + r"]*(\+?[0-9]+)\.0+[" + re.escape(_BLANK_CHARS) + r"]*")


def _compile_tr_national_matchers() -> tuple[re.Pattern[str], re.Pattern[str]] | None:
    """Regexes equivalent to ``number_type(+90<nsn>) == MOBILE`` and ``!= UNKNOWN`` for a 10-digit ``nsn``.

    ``phonenumbers.number_type`` costs ~17 µs, more than the whole per-user budget. It is
    a fixed sequence of full matches against the region's metadata patterns: the general
    description must match; then premium-rate, toll-free, …, voicemail, fixed-line and
    finally mobile are tried in order and the first match names the type. The same
    sequence is compiled once here from the installed metadata, so it stays exact when
    ``phonenumbers`` updates the numbering plan. Only descriptions whose possible
    lengths admit 10 digits take part, as in ``_is_number_matching_desc``. Returns
    ``None`` (always ask ``phonenumbers``) if the metadata has an unexpected shape.
    """
    metadata = PhoneMetadata.metadata_for_region("TR")
    if metadata is None or metadata.same_mobile_and_fixed_line_pattern:
        return None

    def pattern_for(desc: object) -> str | None:
        pattern = getattr(desc, "national_number_pattern", None)
        lengths = getattr(desc, "possible_length", None) or ()
        if not pattern or (lengths and _TR_NATIONAL_LENGTH not in lengths):
            return None
        return pattern

    general = pattern_for(metadata.general_desc)
    mobile = pattern_for(metadata.mobile)
    if general is None or mobile is None:
        return None
    types_tried_before_mobile = (
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    )
    earlier = [p for p in map(pattern_for, types_tried_before_mobile) if p is not None]
    general_matches = f"(?=(?:{general})\\Z)"
    not_earlier = "".join(f"(?!(?:{p})\\Z)" for p in earlier)
    any_type = "|".join(f"(?:{p})" for p in [*earlier, mobile])
    return (
        re.compile(f"{general_matches}{not_earlier}(?:{mobile})\\Z"),
        re.compile(f"{general_matches}(?:{any_type})\\Z"),
    )


_TR_NATIONAL_MATCHERS = _compile_tr_national_matchers()


def normalize_phone(raw: object) -> Normalized:
    """Normalise a phone number to İYS's ``+905XXXXXXXXX`` form (rules in the module docstring)."""
    if type(raw) is str:
        text = raw
    else:
        coerced = _phone_text_from_non_str(raw)
        if type(coerced) is Normalized:
            return coerced
        text = coerced
    if len(text) > MAX_RAW_LENGTH:
        return _REJECTED[RejectReason.TOO_LONG_INPUT]
    if "." in text:
        # Must run before separators are dropped: "532123456.0" (a 9-digit typo stored
        # as a float) would otherwise become the valid-looking "5321234560".
        excel_float = _EXCEL_FLOAT.fullmatch(text)
        if excel_float is not None:
            text = excel_float[1]
    compact = text.translate(_DELETE_PHONE_SEPARATORS)
    shape = _COMMON_TR_SHAPE.fullmatch(compact)
    if shape is None:
        return _normalize_uncommon_phone(text, compact)
    national = shape[1]
    if _TR_NATIONAL_MATCHERS is None:
        return _classify(phonenumbers.PhoneNumber(country_code=_TR_COUNTRY_CODE, national_number=int(national)))
    is_mobile, is_valid = _TR_NATIONAL_MATCHERS
    if is_mobile.match(national):
        return Normalized("+90" + national, None)
    if is_valid.match(national):
        return _REJECTED[RejectReason.PHONE_NOT_MOBILE]
    return _REJECTED[RejectReason.PHONE_INVALID]


def _phone_text_from_non_str(raw: object) -> str | Normalized:
    """Digits of a number-typed cell, or the rejection for a value that is not text."""
    if raw is None:
        return _REJECTED[RejectReason.EMPTY]
    if isinstance(raw, str):
        return str.__str__(raw)  # a plain copy: str subclasses may override methods
    if isinstance(raw, bool):
        return _REJECTED[RejectReason.NOT_TEXT]
    if isinstance(raw, float):
        if math.isnan(raw):
            return _REJECTED[RejectReason.EMPTY]  # pandas' marker for a missing cell
        if not raw.is_integer():
            return _REJECTED[RejectReason.NOT_TEXT]
        number = int(raw)
    else:
        try:
            # Plain int for int subclasses (IntEnum …) and numpy / pandas integer scalars.
            number = operator.index(raw)
        except Exception:  # arbitrary objects may raise anything from __index__
            return _REJECTED[RejectReason.NOT_TEXT]
    if number < 0:
        return _REJECTED[RejectReason.NOT_TEXT]
    if number >= 10**_MAX_PHONE_DIGITS:
        # Also keeps str() away from huge ints, which raises past 4300 digits.
        return _REJECTED[RejectReason.PHONE_TOO_LONG]
    return str(number)


def _normalize_uncommon_phone(text: str, compact: str) -> Normalized:
    """Everything the common-shape fast path did not recognise."""
    if not compact:
        stripped = text.strip(_BLANK_CHARS)
        return _REJECTED[RejectReason.PHONE_UNPARSEABLE if stripped else RejectReason.EMPTY]
    if _DIGITS_WITH_OPTIONAL_PLUS.fullmatch(compact) is None:
        return _REJECTED[RejectReason.PHONE_UNPARSEABLE]
    if _FORM_9005.fullmatch(compact) is not None:
        # Checked before parsing because libphonenumber drops the "0" after "+90" and
        # would call this a valid mobile, while İYS stores it verbatim and useless.
        return _REJECTED[RejectReason.PHONE_9005_FORM]
    if len(compact) - compact.startswith("+") > _MAX_PHONE_DIGITS:
        return _REJECTED[RejectReason.PHONE_TOO_LONG]
    try:
        number = phonenumbers.parse(compact, "TR")
    except NumberParseException as error:
        if error.error_type == NumberParseException.TOO_LONG:
            return _REJECTED[RejectReason.PHONE_TOO_LONG]
        return _REJECTED[RejectReason.PHONE_UNPARSEABLE]
    return _classify(number)


def _classify(number: phonenumbers.PhoneNumber) -> Normalized:
    """Accept a Turkish mobile or name the reason it is not one."""
    if number.country_code != _TR_COUNTRY_CODE:
        if phonenumbers.is_valid_number(number):
            return _REJECTED[RejectReason.PHONE_NOT_TR]
        if phonenumbers.is_possible_number_with_reason(number) == ValidationResult.TOO_LONG:
            return _REJECTED[RejectReason.PHONE_TOO_LONG]
        return _REJECTED[RejectReason.PHONE_INVALID]
    number_type = phonenumbers.number_type(number)
    if number_type == PhoneNumberType.MOBILE:
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        # The fast path can only produce this shape; hold the slow path to the same
        # contract rather than trust every parse leniency (e.g. kept leading zeros).
        if _ACCEPTED_PHONE.fullmatch(e164) is not None:
            return Normalized(e164, None)
        return _REJECTED[RejectReason.PHONE_INVALID]
    if number_type != PhoneNumberType.UNKNOWN:
        return _REJECTED[RejectReason.PHONE_NOT_MOBILE]
    # Every Turkish number İYS can hold has a 10-digit national part; longer is a typo
    # (an extra digit or two numbers run together) that deserves its own label.
    if len(phonenumbers.national_significant_number(number)) > _TR_NATIONAL_LENGTH:
        return _REJECTED[RejectReason.PHONE_TOO_LONG]
    return _REJECTED[RejectReason.PHONE_INVALID]


# --------------------------------------------------------------------------- e-mail

_EMAIL_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_IYS_EMAIL = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*"  # local part: no leading, trailing or doubled dot
    r"@"
    rf"(?:{_EMAIL_LABEL}\.)+[a-z]{{2,}}"  # domain labels, then a TLD of letters only
)


def normalize_email(raw: object) -> Normalized:
    """Normalise an e-mail address to İYS's trimmed lower-case form (rules in the module docstring)."""
    if type(raw) is not str:
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return _REJECTED[RejectReason.EMPTY]
        if not isinstance(raw, str):
            return _REJECTED[RejectReason.NOT_TEXT]
        raw = str.__str__(raw)
    if len(raw) > MAX_RAW_LENGTH:
        return _REJECTED[RejectReason.TOO_LONG_INPUT]
    text = raw.strip(_BLANK_CHARS)
    if not text:
        return _REJECTED[RejectReason.EMPTY]
    if not text.isascii():
        if _TURKISH_LETTERS.search(text) is not None:
            return _REJECTED[RejectReason.EMAIL_TURKISH_CHARS]
        return _REJECTED[RejectReason.EMAIL_INVALID]
    if len(text) < EMAIL_MIN_LENGTH:
        return _REJECTED[RejectReason.EMAIL_TOO_SHORT]
    if len(text) > EMAIL_MAX_LENGTH:
        return _REJECTED[RejectReason.EMAIL_TOO_LONG]
    text = text.lower()
    if _IYS_EMAIL.fullmatch(text) is None:
        return _REJECTED[RejectReason.EMAIL_INVALID]
    return Normalized(text, None)


# --------------------------------------------------------------------------- masking

_MASK = "*"
# Enough hidden characters that a masked Turkish mobile keeps only "+90" + operator
# prefix and the last two digits, and short strings are hidden completely.
_MIN_HIDDEN_CHARS = 5
_MAX_VISIBLE_HEAD = 6
_MAX_VISIBLE_TAIL = 2
_EMAIL_LOCAL_MASK = "***"  # fixed width, so the mask does not leak the local part's length


def mask_phone(value: str) -> str:
    """Mask a phone number (or any string) for logs: ``+905321234567`` → ``+90532*****67``.

    At most the first 6 and last 2 characters stay visible and at least 5 characters are
    hidden, so strings of 5 characters or fewer are masked completely. The length is kept.
    Non-``str`` input returns ``***`` instead of raising, so logging can never fail.
    """
    if not isinstance(value, str):
        return _EMAIL_LOCAL_MASK
    length = len(value)
    hidden = min(length, max(_MIN_HIDDEN_CHARS, length - _MAX_VISIBLE_HEAD - _MAX_VISIBLE_TAIL))
    tail = min(_MAX_VISIBLE_TAIL, length - hidden)
    head = length - hidden - tail
    return value[:head] + _MASK * hidden + value[length - tail :]


def mask_email(value: str) -> str:
    """Mask an e-mail address for logs: ``user@example.com`` → ``u***@example.com``.

    Only the first character of the local part survives, and only when the local part
    has at least two characters (a one-letter local part is hidden entirely). The domain
    is kept for troubleshooting. A value without ``@`` is masked like a phone number.
    """
    if not isinstance(value, str):
        return _EMAIL_LOCAL_MASK
    local, at, domain = value.rpartition("@")
    if not at:
        return mask_phone(value)
    visible = local[:1] if len(local) >= 2 else ""
    return visible + _EMAIL_LOCAL_MASK + "@" + domain


def mask_recipient(value: str) -> str:
    """Mask a recipient of either kind: e-mail masking if it contains ``@``, else phone masking."""
    if isinstance(value, str) and "@" in value:
        return mask_email(value)
    return mask_phone(value)
