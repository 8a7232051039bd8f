"""Turning source users into İYS recipients: normalise, quarantine, deduplicate.

Phones map to MESAJ and ARAMA, e-mails to EPOSTA. Several users can share an address, and
different spellings can normalise to the same one, so İYS is asked about each unique
(recipient type, channel, address) once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from iys_provider.models import ConsentType, RecipientType
from iys_provider.normalize import normalize_email, normalize_phone
from iys_provider.user_source import SourceUser

KIND_TYPES: dict[str, tuple[ConsentType, ...]] = {
    "phone": (ConsentType.MESAJ, ConsentType.ARAMA),
    "email": (ConsentType.EPOSTA,),
}
INVALID_RECIPIENT_TYPE = "INVALID_RECIPIENT_TYPE"
_RECIPIENT_TYPES = {t.value: t for t in RecipientType}


@dataclass(frozen=True, slots=True)
class AddressRow:
    """One (user, kind) outcome: a link to a normalised address, a rejection, or nothing."""

    user_id: str
    kind: str  # 'phone' | 'email' | 'recipient_type'
    recipient: str | None
    recipient_type: str
    reason: str | None
    raw_value: str | None


@dataclass
class PreparedUsers:
    users: int = 0
    addresses: list[AddressRow] = field(default_factory=list)
    digests: list[tuple[str, str]] = field(default_factory=list)
    #: unique recipients to ask İYS about, per (recipient type, channel)
    to_check: dict[tuple[RecipientType, ConsentType], set[str]] = field(default_factory=dict)
    missing: int = 0

    @property
    def quarantined(self) -> int:
        return sum(1 for a in self.addresses if a.reason)

    @property
    def linked(self) -> int:
        return sum(1 for a in self.addresses if a.recipient)

    @property
    def unique_recipients(self) -> int:
        return sum(len(v) for v in self.to_check.values())

    def planned_requests(self, per_call: int = 1000) -> int:
        return sum(-(-len(v) // per_call) for v in self.to_check.values())


def _raw_text(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:1000]  # a quarantine row needs the value for diagnosis, not megabytes of it


def prepare_users(users: Iterable[SourceUser]) -> PreparedUsers:
    prepared = PreparedUsers()
    normalisers = {"phone": normalize_phone, "email": normalize_email}
    for user in users:
        prepared.users += 1
        prepared.digests.append((user.user_id, user.digest))
        raw_type = user.recipient_type
        rtype_text = (str(raw_type).strip().upper() if raw_type is not None else "") or RecipientType.BIREYSEL.value
        rtype = _RECIPIENT_TYPES.get(rtype_text)
        if rtype is None:
            # Without a valid recipient type we cannot tell which İYS record applies: quarantine
            # the user's addresses rather than guess BIREYSEL.
            prepared.addresses.append(
                AddressRow(user.user_id, "recipient_type", None, "BIREYSEL", INVALID_RECIPIENT_TYPE, _raw_text(raw_type))
            )
            for kind in KIND_TYPES:
                prepared.addresses.append(AddressRow(user.user_id, kind, None, "BIREYSEL", None, None))
            continue
        # Clears an earlier recipient-type quarantine once the source value is fixed.
        prepared.addresses.append(AddressRow(user.user_id, "recipient_type", None, rtype.value, None, None))
        for kind, normalise in normalisers.items():
            raw = getattr(user, kind)
            if raw is None:
                prepared.missing += 1
                prepared.addresses.append(AddressRow(user.user_id, kind, None, rtype.value, None, None))
                continue
            result = normalise(raw)
            if result.value is None:
                reason = result.reason.value if result.reason else "INVALID"
                prepared.addresses.append(AddressRow(user.user_id, kind, None, rtype.value, reason, _raw_text(raw)))
                continue
            prepared.addresses.append(AddressRow(user.user_id, kind, result.value, rtype.value, None, None))
            for consent_type in KIND_TYPES[kind]:
                prepared.to_check.setdefault((rtype, consent_type), set()).add(result.value)
    return prepared
