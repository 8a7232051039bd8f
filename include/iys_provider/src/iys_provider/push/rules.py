"""Reading what İYS pushes: the body, each movement's verdict, and the receiver's answer.

İYS posts ``{"list": [movement, …]}`` where a movement is a change-feed movement plus ``iysCode``
and ``brandCode``. Nothing about list size, retries or the expected answer is documented, so
every item is judged on its own (a bad item never costs a good one), and the answer says what
was kept:

===========================  =================  ========================================
item                         verdict            what happens
===========================  =================  ========================================
İYS's registration test      ``TEST_RECORD``    dropped; only its arrival time is kept
readable, this brand         ``ACCEPT``         inbox, applied by the change feed's rules
not an object, no            ``QUARANTINE``     quarantine row with the reason
transactionId / creationDate
/ recipient / type / status,
a date İYS never writes,
another brand or İYS code
===========================  =================  ========================================

A value İYS did not document (a new status, channel or source) is accepted: the change feed's
rules store such a movement and never apply it (see :mod:`iys_provider.change_feed.store`).
A body that is not JSON or has no list is quarantined whole and answered 400; a list with a
quarantined item is answered 422 after the good items are committed; everything else 200.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError, field_validator

from iys_provider.models import ChangeMovement

#: İYS's fixed registration test movement (İYS OpenAPI v3.2.0): the same for every customer.
TEST_TRANSACTION_ID = "e52ee30512adfcd2a41fb3b4682f5bd61eee5b1c92bda665fc0b7e56644d429d"
TEST_RECIPIENT = "pushtest@iys.org.tr"
TEST_CODE = 121212
#: Longest body read; İYS's list size is undocumented, a thousand movements are about 350 kB.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Longest item text kept in a quarantine row.
QUARANTINE_TEXT_LIMIT = 8 * 1024
REQUIRED_FIELDS = ("transactionId", "creationDate", "recipient", "type", "status")


class PushedMovement(ChangeMovement):
    """One pushed movement: a change-feed movement that also names its İYS code and brand."""

    iys_code: int | None = Field(None, alias="iysCode")
    brand_code: int | None = Field(None, alias="brandCode")

    @field_validator("recipient")
    @classmethod
    def _recipient_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return value


class Verdict(enum.StrEnum):
    ACCEPT = "accept"
    TEST_RECORD = "test_record"
    QUARANTINE = "quarantine"


@dataclass(frozen=True)
class ItemVerdict:
    position: int
    verdict: Verdict
    movement: PushedMovement | None = None
    reason: str | None = None
    raw: str = ""  # the item as text, for a quarantine row


@dataclass(frozen=True)
class PushBody:
    """A body read: every item's verdict, or why the body itself is unreadable."""

    items: list[ItemVerdict] = field(default_factory=list)
    unreadable: str | None = None

    @property
    def accepted(self) -> list[ItemVerdict]:
        return [item for item in self.items if item.verdict is Verdict.ACCEPT]

    @property
    def quarantined(self) -> list[ItemVerdict]:
        return [item for item in self.items if item.verdict is Verdict.QUARANTINE]

    @property
    def test_records(self) -> int:
        return sum(item.verdict is Verdict.TEST_RECORD for item in self.items)


def is_test_record(item: dict[str, Any]) -> bool:
    """İYS's registration test: its fixed transaction id, or its address with the placeholder codes."""
    if item.get("transactionId") == TEST_TRANSACTION_ID:
        return True
    recipient = item.get("recipient")
    return (
        isinstance(recipient, str)
        and recipient.strip().lower() == TEST_RECIPIENT
        and str(item.get("brandCode")) == str(TEST_CODE)
    )


def read_push_body(body: bytes, *, iys_code: int, brand_code: int) -> PushBody:
    """Judge every item of one pushed body for the brand ``brand_code`` of account ``iys_code``."""
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return PushBody(unreadable=f"not JSON: {exc}")
    if not isinstance(document, dict) or not isinstance(document.get("list"), list):
        return PushBody(unreadable='not an object with a "list" of movements')
    return PushBody(
        items=[_judge(position, item, iys_code, brand_code) for position, item in enumerate(document["list"])]
    )


def _judge(position: int, item: Any, iys_code: int, brand_code: int) -> ItemVerdict:
    raw = json.dumps(item, ensure_ascii=False, sort_keys=True)
    if not isinstance(item, dict):
        return ItemVerdict(position, Verdict.QUARANTINE, reason="not an object", raw=raw)
    if is_test_record(item):
        return ItemVerdict(position, Verdict.TEST_RECORD, raw=raw)
    missing = [name for name in REQUIRED_FIELDS if item.get(name) in (None, "")]
    if missing:
        return ItemVerdict(position, Verdict.QUARANTINE, reason=f"missing {', '.join(missing)}", raw=raw)
    try:
        movement = PushedMovement.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return ItemVerdict(position, Verdict.QUARANTINE, reason=f"unreadable: {problems}", raw=raw)
    if movement.brand_code != brand_code:
        return ItemVerdict(
            position, Verdict.QUARANTINE, reason=f"brandCode {movement.brand_code} is not {brand_code}", raw=raw
        )
    if movement.iys_code is not None and movement.iys_code != iys_code:
        return ItemVerdict(
            position, Verdict.QUARANTINE, reason=f"iysCode {movement.iys_code} is not {iys_code}", raw=raw
        )
    return ItemVerdict(position, Verdict.ACCEPT, movement=movement, raw=raw)


def answer_status(body: PushBody) -> int:
    """The HTTP status of the receiver's answer, once what could be kept is committed."""
    if body.unreadable is not None:
        return 400
    if body.quarantined:
        return 422
    return 200


def text_hash(raw: str) -> str:
    """Identifies a quarantined item, so that İYS sending it again adds no row."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def quarantine_text(raw: str) -> str:
    return raw if len(raw) <= QUARANTINE_TEXT_LIMIT else raw[:QUARANTINE_TEXT_LIMIT] + "…"
