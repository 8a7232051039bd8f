"""Turning source users into İYS recipients: normalise, quarantine, deduplicate.

Phones map to MESAJ and ARAMA, e-mails to EPOSTA. Several users can share an address, and
different spellings can normalise to the same one, so İYS is asked about each unique
(recipient type, channel, address) once.
"""

from __future__ import annotations

from collections.abc import Iterable

from iys_provider.models import ConsentType, LinkRow, PreparedUsers, RecipientType, RejectionRow, SourceUser, UserRow
from iys_provider.normalize import normalize_email, normalize_phone

KIND_TYPES: dict[str, tuple[ConsentType, ...]] = {
    "phone": (ConsentType.MESAJ, ConsentType.ARAMA),
    "email": (ConsentType.EPOSTA,),
}
INVALID_RECIPIENT_TYPE = "INVALID_RECIPIENT_TYPE"


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
