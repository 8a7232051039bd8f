"""Pydantic models and enums for the İYS API, and the types several concepts share.

The shared types (end of the module) let one concept's rules, stores and services take
another's values without importing its rules: the outbox's states, a row of the source
query, what preparing, writing and forgetting users produced.

Field names are Pythonic; aliases carry İYS's camelCase spelling. ``consentDate`` and
``creationDate`` travel as Turkey local time (``YYYY-MM-DD HH:mm:ss``, Europe/Istanbul) and
are held here as timezone-aware datetimes, so a value read from İYS and written back
lands on the same instant. Several public clients build these strings from UTC parts and
end up three hours off; :func:`format_iys_datetime` refuses naive datetimes for that reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Annotated, Any, NamedTuple
from zoneinfo import ZoneInfo

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
)

IYS_TIMEZONE = ZoneInfo("Europe/Istanbul")
IYS_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class ConsentType(enum.StrEnum):
    """Channel of a consent: call, SMS or e-mail."""

    ARAMA = "ARAMA"
    MESAJ = "MESAJ"
    EPOSTA = "EPOSTA"


PHONE_TYPES = (ConsentType.MESAJ, ConsentType.ARAMA)


class ConsentStatus(enum.StrEnum):
    ONAY = "ONAY"
    RET = "RET"


class RecipientType(enum.StrEnum):
    BIREYSEL = "BIREYSEL"
    TACIR = "TACIR"


class ConsentSource(enum.StrEnum):
    """Where a consent movement came from.

    ``HS_*`` values are written by the brand (service provider); ``IYS_*`` values only ever
    come from İYS itself (citizens acting through e-Devlet, the İYS app, SMS 3338 …).
    """

    HS_2015 = "HS_2015"
    HS_KARAR = "HS_KARAR"
    HS_FIZIKSEL_ORTAM = "HS_FIZIKSEL_ORTAM"
    HS_ISLAK_IMZA = "HS_ISLAK_IMZA"
    HS_ETKINLIK = "HS_ETKINLIK"
    HS_ATM = "HS_ATM"
    HS_EORTAM = "HS_EORTAM"
    HS_WEB = "HS_WEB"
    HS_MOBIL = "HS_MOBIL"
    HS_MESAJ = "HS_MESAJ"
    HS_EPOSTA = "HS_EPOSTA"
    HS_CAGRI_MERKEZI = "HS_CAGRI_MERKEZI"
    HS_SOSYAL_MEDYA = "HS_SOSYAL_MEDYA"
    IYS_KISAMESAJ = "IYS_KISAMESAJ"
    IYS_CM = "IYS_CM"
    IYS_WEB = "IYS_WEB"
    IYS_WEB_YENI = "IYS_WEB_YENI"
    IYS_MOBIL = "IYS_MOBIL"
    IYS_EPOSTA = "IYS_EPOSTA"
    IYS_AHS_HAT_KAPATMA = "IYS_AHS_HAT_KAPATMA"
    IYS_FRAME_EPOSTA = "IYS_FRAME_EPOSTA"
    IYS_FRAME_SMS = "IYS_FRAME_SMS"

    @property
    def writable_by_brand(self) -> bool:
        return self.value.startswith("HS_")


class ChangeStream(enum.StrEnum):
    """The two change feeds: movements by recipients through İYS, and by service providers."""

    IYS = "IYS"
    HS = "HS"


class StepKind(enum.StrEnum):
    """What a step of a sync run did, named in its result (the ``step`` key of its XCom).

    The run's report (:mod:`iys_provider.run_report.sync_runs`) reads each result's figures by its kind; a result
    of a kind it does not know is kept whole in the run's details.
    """

    CHANGE_FEED_PULL = "change_feed_pull"
    NEW_USERS = "new_users"
    LEAVERS = "leavers"
    APPROVAL = "approval"
    OUTBOX_PUSH = "outbox_push"
    OUTBOX_SETTLEMENT = "outbox_settlement"
    RETENTION = "retention"
    PUSH_INBOX = "push_inbox"


def format_iys_datetime(value: datetime) -> str:
    """Render an aware datetime as İYS expects it: Turkey local time, second precision."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "İYS dates must be timezone-aware; a naive datetime is ambiguous "
            "(attach tzinfo=UTC or Europe/Istanbul explicitly)"
        )
    return value.astimezone(IYS_TIMEZONE).strftime(IYS_DATETIME_FORMAT)


def parse_iys_datetime(value: str) -> datetime:
    """Parse İYS's ``YYYY-MM-DD HH:mm:ss`` Turkey-local string into an aware datetime."""
    return datetime.strptime(value.strip(), IYS_DATETIME_FORMAT).replace(tzinfo=IYS_TIMEZONE)


def _coerce_iys_datetime(value: Any) -> Any:
    if isinstance(value, str):
        return parse_iys_datetime(value)
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError("naive datetime: attach a timezone before building an İYS model")
    return value


IysDateTime = Annotated[
    datetime,
    BeforeValidator(_coerce_iys_datetime),
    PlainSerializer(format_iys_datetime, return_type=str, when_used="json"),
]


class _IysModel(BaseModel):
    """Base: accept either spelling on input, ignore fields İYS adds in later versions."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Consent(_IysModel):
    """A consent movement the brand sends to İYS (single or batch add)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    recipient: str
    type: ConsentType
    status: ConsentStatus
    recipient_type: RecipientType = Field(RecipientType.BIREYSEL, alias="recipientType")
    source: ConsentSource | None = None
    consent_date: IysDateTime | None = Field(None, alias="consentDate")
    retailer_code: int | None = Field(None, alias="retailerCode")
    retailer_access: list[int] | None = Field(None, alias="retailerAccess")

    def to_api(self) -> dict[str, Any]:
        """JSON body for İYS. Optional fields are omitted, never sent as null (İYS rejects nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _known_or_text(enum_cls: type[enum.StrEnum]):
    """Validator: a value İYS documents becomes the enum member; a new one stays plain text.

    İYS has added source values before; a new value must not make a whole answer unreadable.
    """

    def convert(value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, enum.Enum):
            try:
                return enum_cls(value)
            except ValueError:
                return value
        return value

    return BeforeValidator(convert)


#: A ``source`` as İYS reports it: a known :class:`ConsentSource`, or the new value as text.
ReportedSource = Annotated[ConsentSource | str, _known_or_text(ConsentSource)]


def is_documented(value: Any) -> bool:
    """True when ``value`` is one of the enum values İYS documents (not an unknown text)."""
    return isinstance(value, enum.Enum)


class ConsentRecord(_IysModel):
    """A consent as İYS reports it in a single-status answer."""

    recipient: str
    type: ConsentType
    status: ConsentStatus
    recipient_type: RecipientType = Field(RecipientType.BIREYSEL, alias="recipientType")
    source: ReportedSource | None = None
    consent_date: IysDateTime | None = Field(None, alias="consentDate")
    creation_date: IysDateTime | None = Field(None, alias="creationDate")
    transaction_id: str | None = Field(None, alias="transactionId")
    retailer_code: int | None = Field(None, alias="retailerCode")
    citizen_name: str | None = Field(None, alias="citizenName")


class ChangeMovement(_IysModel):
    """One change-feed movement, read tolerantly.

    Status, channel, recipient type and source are kept as İYS sent them: documented values
    become enum members, a value İYS added later stays text. Such a movement is stored in
    ``iys.consent_events`` but never applied to ``iys.consents``.
    """

    recipient: str
    type: Annotated[ConsentType | str, _known_or_text(ConsentType)]
    status: Annotated[ConsentStatus | str, _known_or_text(ConsentStatus)]
    recipient_type: Annotated[RecipientType | str, _known_or_text(RecipientType)] = Field(
        RecipientType.BIREYSEL, alias="recipientType"
    )
    source: ReportedSource | None = None
    consent_date: IysDateTime | None = Field(None, alias="consentDate")
    creation_date: IysDateTime | None = Field(None, alias="creationDate")
    transaction_id: str | None = Field(None, alias="transactionId")
    citizen_name: str | None = Field(None, alias="citizenName")

    @property
    def applicable(self) -> bool:
        """Every field that decides a consent is a value İYS documents."""
        return all(is_documented(v) for v in (self.type, self.status, self.recipient_type))


class AddConsentResult(_IysModel):
    transaction_id: str = Field(alias="transactionId")
    creation_date: IysDateTime | None = Field(None, alias="creationDate")


class BatchSubRequest(_IysModel):
    recipient: str
    type: ConsentType
    status: ConsentStatus
    sub_request_id: str = Field(validation_alias=AliasChoices("subRequestId", "subrequestId"))


class BatchSubmission(_IysModel):
    """İYS's 202 answer to an async batch: accepted for processing, not yet written."""

    request_id: str = Field(alias="requestId")
    sub_requests: list[BatchSubRequest] = Field(default_factory=list, alias="subRequests")


class BatchItemStatus(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    ENQUEUE = "enqueue"


class IysErrorDetail(_IysModel):
    code: str | None = None
    message: str | None = None


class BatchResultItem(_IysModel):
    """One line of a batch result. İYS spells the sub-request id both ways; accept both.

    A ``status`` İYS does not document stays text: the item is treated as not settled yet.
    """

    index: int
    status: Annotated[BatchItemStatus | str, _known_or_text(BatchItemStatus)]
    sub_request_id: str | None = Field(None, validation_alias=AliasChoices("subRequestId", "subrequestId"))
    request_id: str | None = Field(None, alias="requestId")
    transaction_id: str | None = Field(None, alias="transactionId")
    creation_date: IysDateTime | None = Field(None, alias="creationDate")
    error: IysErrorDetail | None = None


class ChangePage(_IysModel):
    """One page of the change feed; ``after`` is an opaque cursor to store as-is."""

    after: str | None = None
    # Required: a 200 without a list is a malformed answer, not "no movements" (that is a 204).
    changes: list[ChangeMovement] = Field(alias="list")


class MultiStatusResult(_IysModel):
    """Multi status lists only the recipients whose consent is ONAY."""

    request_id: str | None = Field(None, alias="requestId")
    # Required: reading a 200 without a list as "nobody is ONAY" would turn known ONAYs into RET.
    onay: list[str] = Field(alias="list")


class Brand(_IysModel):
    brand_code: int = Field(alias="brandCode")
    name: str | None = None
    master: bool | None = None


class TokenPair(_IysModel):
    access_token: str
    refresh_token: str | None = None
    expires_in: int = 7200
    refresh_expires_in: int | None = None


# ---------------------------------------------------------------------- İYS's reconciliation answers


class ChangeStatCounts(_IysModel):
    source: str
    approval: int = 0
    rejection: int = 0
    pending: int = 0
    total: int = 0


class ChangeStat(_IysModel):
    type: str
    consents: list[ChangeStatCounts] = Field(default_factory=list)


class DailyChangeSummaryResponse(_IysModel):
    """``DailyChangeSummaryResponse`` (Mutabakat Özeti Sorgulama), for one recipient type."""

    change_stats: list[ChangeStat] = Field(default_factory=list, alias="changeStats")


class AgreementInfo(_IysModel):
    """``AgreementDateResponse`` (Mutabakat Bilgisi Sorgulama)."""

    process_status: str = Field(alias="processStatus")
    hash_value: str | None = Field(None, alias="hashValue")
    hash_method: str | None = Field(None, alias="hashMethod")
    agreement_status: bool = Field(False, alias="agreementStatus")


class AgreementCaptured(_IysModel):
    """The PUT answer; İYS's schema spells the field ``aggrementCaptured``, its example ``agreementCaptured``."""

    captured: bool = Field(validation_alias=AliasChoices("agreementCaptured", "aggrementCaptured"))


# ---------------------------------------------------------------------- İYS Push registration


class PushLinkRequest(_IysModel):
    """One receiver link sent to İYS's push registration or unregistration: all four fields required."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)

    url: str
    type: ConsentType
    username: str
    password: str = Field(repr=False)

    def to_api(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


#: A display-only value kept as text, whatever JSON type İYS sends it as.
_AsText = Annotated[str | None, BeforeValidator(lambda value: None if value is None else str(value))]


class PushLink(_IysModel):
    """One link in İYS's push registration listing, read tolerantly.

    ``status`` is free Turkish text İYS does not enumerate ("Bağlantı Oluşturuldu", "Bağlantı
    Oluşturulamadı"); ``type`` a channel İYS may one day extend; ``registerTime`` is kept as İYS
    wrote it and read by :attr:`registered_at`, so an odd spelling never makes the listing unreadable.
    """

    url: str
    type: Annotated[ConsentType | str, _known_or_text(ConsentType)]
    status: _AsText = None
    register_time: _AsText = Field(None, alias="registerTime")

    @property
    def registered_at(self) -> datetime | None:
        """``registerTime`` as an aware datetime (Turkey time); None when absent or not İYS's format."""
        if not self.register_time:
            return None
        try:
            return parse_iys_datetime(self.register_time)
        except ValueError:
            return None


class PushLinkAnswer(_IysModel):
    """İYS's 200 to a registration or unregistration: ``{"message": "Bağlantı oluşturuldu"}``."""

    message: str | None = None


# ---------------------------------------------------------------------- types shared between concepts


class OutboxState(enum.StrEnum):
    """A row's state in the outbox (``iys.outbox.state``); retention deletes only the settled ones."""

    PENDING = "pending"
    HELD = "held"
    SUBMITTED = "submitted"
    SENT = "sent"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    FAILED = "failed"


class SourceUser(NamedTuple):
    """One row of the source query, in the column order every reading query selects (user_source, the scan queue)."""

    user_id: str | None
    phone: object
    email: object
    recipient_type: object
    digest: str


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


@dataclass(frozen=True)
class WriteOutcome:
    """What writing one batch of checked users changed in the consents, links and quarantine."""

    consents: int
    status_changes: int
    links: int
    quarantined: int


#: More than this share of the known users leaving in one run is taken for a broken source query.
DEFAULT_MAX_LEAVER_SHARE = 0.5


@dataclass(frozen=True)
class Forgotten:
    """What forgetting leavers removed; outcomes of several chunks add up with ``+``."""

    leavers: int = 0  # users no longer known (their fingerprints removed)
    links_removed: int = 0
    quarantine_rows_removed: int = 0
    queued_rows_removed: int = 0  # snapshot rows of a scan still open

    def __add__(self, other: Forgotten) -> Forgotten:
        return Forgotten(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))
