"""A large, never-materialised consent population for benchmarks.

User ``i`` (``start <= i < start + count``) owns the phone ``phone_prefix`` followed by ``i`` zero-padded
to a 13-character E.164 number (``+90`` + 10 digits) and the e-mail ``user{i}@{email_domain}``. The
status of each (recipient, type) is a pure function of the pair, so the truth can be recomputed by
anyone with :func:`synthetic_status` and nothing is stored per user.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field

PHONE_TYPES = ("MESAJ", "ARAMA")
E164_TURKISH_LENGTH = 13


def synthetic_status(recipient: str, consent_type: str, onay_ratio: float, ret_ratio: float) -> str | None:
    """ONAY / RET / None (unknown to İYS), drawn from a hash of ``recipient|type``."""
    digest = hashlib.blake2b(f"{recipient}|{consent_type}".encode(), digest_size=8).digest()
    draw = int.from_bytes(digest, "big") / 2**64
    if draw < onay_ratio:
        return "ONAY"
    if draw < onay_ratio + ret_ratio:
        return "RET"
    return None


@dataclass
class SyntheticPopulation:
    count: int
    start: int = 0
    onay_ratio: float = 0.6
    ret_ratio: float = 0.2
    phone_prefix: str = "+90532"
    email_domain: str = "example.com"
    brand_codes: list[int] = field(default_factory=list)  # empty = every configured brand
    # consentDate/creationDate reported for every synthetic record; set when the population is seeded.
    consent_date: str = "2024-01-01 00:00:00"

    def __post_init__(self) -> None:
        digits = E164_TURKISH_LENGTH - len(self.phone_prefix)
        if not re.fullmatch(r"\+90\d*", self.phone_prefix) or digits < 1:
            raise ValueError("phone_prefix must look like +90… and leave room for the user number")
        if self.start + self.count > 10**digits:
            raise ValueError(f"phone_prefix {self.phone_prefix} leaves only {digits} digits for {self.count} users")
        if not (0 <= self.onay_ratio and 0 <= self.ret_ratio and self.onay_ratio + self.ret_ratio <= 1):
            raise ValueError("onay_ratio and ret_ratio must be non-negative and sum to at most 1")
        self._suffix_digits = digits
        self._email_pattern = re.compile(r"user(0|[1-9]\d*)@" + re.escape(self.email_domain.lower()))

    def phone(self, user: int) -> str:
        return f"{self.phone_prefix}{user:0{self._suffix_digits}d}"

    def email(self, user: int) -> str:
        return f"user{user}@{self.email_domain.lower()}"

    def recipient(self, user: int, consent_type: str) -> str:
        return self.phone(user) if consent_type in PHONE_TYPES else self.email(user)

    def user_of(self, recipient: str, consent_type: str) -> int | None:
        if consent_type in PHONE_TYPES:
            suffix = recipient[len(self.phone_prefix) :]
            if (
                not recipient.startswith(self.phone_prefix)
                or len(suffix) != self._suffix_digits
                or not suffix.isdigit()
            ):
                return None
            user = int(suffix)
        else:
            match = self._email_pattern.fullmatch(recipient)
            if not match:
                return None
            user = int(match.group(1))
        return user if self.start <= user < self.start + self.count else None

    def status(self, brand_code: int, recipient: str, recipient_type: str, consent_type: str) -> str | None:
        if recipient_type != "BIREYSEL" or (self.brand_codes and brand_code not in self.brand_codes):
            return None
        if self.user_of(recipient, consent_type) is None:
            return None
        return synthetic_status(recipient, consent_type, self.onay_ratio, self.ret_ratio)

    def describe(self) -> dict:
        return asdict(self)
