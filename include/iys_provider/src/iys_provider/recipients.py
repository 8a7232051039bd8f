"""Turning source users into İYS recipients: normalise, quarantine, deduplicate.

Phones map to MESAJ and ARAMA, e-mails to EPOSTA. Several users can share an address, and
different spellings can normalise to the same one, so İYS is asked about each unique
(recipient type, channel, address) once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from iys_provider.models import ConsentType, RecipientType
from iys_provider.normalize import normalize_email, normalize_phone
from iys_provider.user_source import SourceUser

KIND_TYPES: dict[str, tuple[ConsentType, ...]] = {
    "phone": (ConsentType.MESAJ, ConsentType.ARAMA),
    "email": (ConsentType.EPOSTA,),
}
INVALID_RECIPIENT_TYPE = "INVALID_RECIPIENT_TYPE"


class AddressRow(NamedTuple):
    """One (user, kind) outcome: a link to a normalised address, a rejection, or nothing.

    A NamedTuple: millions are built per scan, and it also COPYs as is.
    """

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
    addresses, digests, to_check = prepared.addresses, prepared.digests, prepared.to_check
    # Per recipient type: the (kind, normaliser, sets of recipients to check) it feeds, resolved once.
    targets = {
        rtype.value: [
            (kind, normalise, [to_check.setdefault((rtype, ctype), set()) for ctype in KIND_TYPES[kind]])
            for kind, normalise in (("phone", normalize_phone), ("email", normalize_email))
        ]
        for rtype in RecipientType
    }
    for user in users:
        prepared.users += 1
        user_id = user.user_id
        digests.append((user_id, user.digest))
        raw_type = user.recipient_type
        rtype = (str(raw_type).strip().upper() if raw_type is not None else "") or "BIREYSEL"
        if rtype not in targets:
            # Without a valid recipient type we cannot tell which İYS record applies: quarantine
            # the user's addresses rather than guess BIREYSEL.
            addresses.append(AddressRow(user_id, "recipient_type", None, "BIREYSEL", INVALID_RECIPIENT_TYPE, _raw_text(raw_type)))
            addresses.append(AddressRow(user_id, "phone", None, "BIREYSEL", None, None))
            addresses.append(AddressRow(user_id, "email", None, "BIREYSEL", None, None))
            continue
        # Clears an earlier recipient-type quarantine once the source value is fixed.
        addresses.append(AddressRow(user_id, "recipient_type", None, rtype, None, None))
        for kind, normalise, check_sets in targets[rtype]:
            raw = user.phone if kind == "phone" else user.email
            if raw is None:
                prepared.missing += 1
                addresses.append(AddressRow(user_id, kind, None, rtype, None, None))
                continue
            result = normalise(raw)
            value = result.value
            if value is None:
                reason = result.reason.value if result.reason else "INVALID"
                addresses.append(AddressRow(user_id, kind, None, rtype, reason, _raw_text(raw)))
                continue
            addresses.append(AddressRow(user_id, kind, value, rtype, None, None))
            for check_set in check_sets:
                check_set.add(value)
    for key in [key for key, values in to_check.items() if not values]:
        del to_check[key]
    return prepared
