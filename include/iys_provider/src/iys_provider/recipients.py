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


class UserRow(NamedTuple):
    """What one source user became: its fingerprint, and which fields linked or were rejected.

    NamedTuples: millions are built per scan. The kind lists let the store clear, with one index
    lookup per user at most, the links and quarantine rows that no longer apply.
    """

    user_id: str
    digest: str
    linked_kinds: tuple[str, ...]  # 'phone' / 'email' fields that hold a valid address now
    rejected_fields: tuple[str, ...]  # 'phone' / 'email' / 'recipient_type' fields quarantined now


class LinkRow(NamedTuple):
    user_id: str
    kind: str  # 'phone' | 'email'
    recipient: str  # normalised
    recipient_type: str


class RejectionRow(NamedTuple):
    user_id: str
    field: str  # 'phone' | 'email' | 'recipient_type'
    raw_value: str | None
    reason: str


@dataclass
class PreparedUsers:
    user_rows: list[UserRow] = field(default_factory=list)
    links: list[LinkRow] = field(default_factory=list)
    rejections: list[RejectionRow] = field(default_factory=list)
    #: unique recipients to ask İYS about, per (recipient type, channel)
    to_check: dict[tuple[RecipientType, ConsentType], set[str]] = field(default_factory=dict)

    @property
    def users(self) -> int:
        return len(self.user_rows)

    @property
    def quarantined(self) -> int:
        return len(self.rejections)

    @property
    def linked(self) -> int:
        return len(self.links)

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


_BOTH_LINKED = ("phone", "email")
_PHONE_LINKED = ("phone",)
_EMAIL_LINKED = ("email",)
_PHONE_REJECTED = ("phone",)
_TYPE_REJECTED = ("recipient_type",)
_NOTHING: tuple[str, ...] = ()


def prepare_users(users: Iterable[SourceUser]) -> PreparedUsers:
    prepared = PreparedUsers()
    user_rows, links, rejections = prepared.user_rows, prepared.links, prepared.rejections
    # Per recipient type, the sets of recipients to check for a phone and for an e-mail.
    check_sets = {
        rtype.value: tuple(
            [prepared.to_check.setdefault((rtype, ctype), set()) for ctype in KIND_TYPES[kind]]
            for kind in ("phone", "email")
        )
        for rtype in RecipientType
    }
    # The loop body runs once per user of the brand: phone and e-mail are handled inline
    # rather than through a per-kind loop.
    for user_id, raw_phone, raw_email, raw_type, digest in users:
        rtype = (str(raw_type).strip().upper() if raw_type is not None else "") or "BIREYSEL"
        targets = check_sets.get(rtype)
        if targets is None:
            # Without a valid recipient type we cannot tell which İYS record applies: quarantine
            # the user's addresses rather than guess BIREYSEL.
            rejections.append(RejectionRow(user_id, "recipient_type", _raw_text(raw_type), INVALID_RECIPIENT_TYPE))
            user_rows.append(UserRow(user_id, digest, _NOTHING, _TYPE_REJECTED))
            continue
        phone = email = None
        rejected: tuple[str, ...] = _NOTHING
        if raw_phone is not None:
            result = normalize_phone(raw_phone)
            phone = result.value
            if phone is None:
                rejections.append(RejectionRow(user_id, "phone", _raw_text(raw_phone), _reason(result)))
                rejected = _PHONE_REJECTED
            else:
                links.append(LinkRow(user_id, "phone", phone, rtype))
                for check_set in targets[0]:
                    check_set.add(phone)
        if raw_email is not None:
            result = normalize_email(raw_email)
            email = result.value
            if email is None:
                rejections.append(RejectionRow(user_id, "email", _raw_text(raw_email), _reason(result)))
                rejected = (*rejected, "email")
            else:
                links.append(LinkRow(user_id, "email", email, rtype))
                for check_set in targets[1]:
                    check_set.add(email)
        if phone is not None:
            linked = _BOTH_LINKED if email is not None else _PHONE_LINKED
        else:
            linked = _EMAIL_LINKED if email is not None else _NOTHING
        user_rows.append(UserRow(user_id, digest, linked, rejected))
    for key in [key for key, values in prepared.to_check.items() if not values]:
        del prepared.to_check[key]
    return prepared


def _reason(result) -> str:
    return result.reason.value if result.reason else "INVALID"
