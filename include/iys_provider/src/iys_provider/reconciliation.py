"""İYS's daily reconciliation (mutabakat), the pure part: the day's file, its hash, the window, the verdicts.

For one brand and one completed day İYS publishes a summary of the day's movements, a hash of
the day's movement file, the file itself and a timestamp (``.tsr``) of it. We build the same
file from ``iys.consent_events``, hash it, and agree (``PUT``) when the hashes are equal; when
they differ, İYS's file tells which movements we lack. Everything here is free of I/O; the SQL
is in :mod:`iys_provider.reconciliation_store`, the calls in :class:`~iys_provider.hooks.iys.IysHook`.

**Where İYS's documentation is open, one place decides** (:data:`FILE_FORMATS`,
:data:`HASH_ALGORITHMS`, :data:`WINDOW_DAYS`). The default, ``literal``, is the most literal
reading of the operation text and its example table:

==========================  ==============================================================
question                    ``literal`` (the default)
==========================  ==============================================================
columns                     the eight of the operation text, in its order:
                            ``creationDate, transactionId, recipient, recipientType, type,
                            status, consentDate, source`` (FAQ Q1 lists seven, without
                            ``status``, with a trailing comma: variant
                            ``faq_seven_columns``)
header line                 yes, the column names (the examples show one; ``no_header``)
delimiter, quoting          ``,``; a value is quoted only when it holds a comma, a quote or a
                            line break (RFC 4180; İYS's values never do)
encoding                    UTF-8 without a BOM (``utf8_bom`` adds one)
line ends                   ``\\n`` after every line, the last included (``crlf``)
dates                       ``YYYY-MM-DD HH:mm:ss`` Turkey time; no ``consentDate``: empty
order                       creation date, then transaction id (byte order)
rows                        one per transaction id (İYS collapses one address's movements
                            of one second; ``iys.consent_events`` keeps one per id too)
day                         00:00–24:00 Turkey time, by creation date
==========================  ==============================================================

**The hash.** İYS names SHA-384, yet both its examples are 64 hex characters (SHA-256's length).
We hash with every algorithm of :data:`HASH_ALGORITHMS` in the same pass and compare with the
one :func:`algorithm_for` picks: the one ``hashMethod`` names (``SHA384``, ``SHA-384``,
``sha384`` …), unless the value's length belongs to another algorithm, which then wins (a 64-hex
value is compared as SHA-256). Hex is compared in lower case.

**The window.** İYS serves the last 7 completed days (older: 422 H502, which counts against the
IP's success ratio). :func:`reconciliation_window` gives D-1 … D-7 in Turkey time, without D-7
in the last :data:`MIDNIGHT_MARGIN` before midnight and without D-1 in the first one after it:
İYS's clock and ours may disagree by a little about which day it is.

**The hash job** (:func:`hash_job_verdict`):

===========================================  ==================================================
İYS answers                                  verdict
===========================================  ==================================================
204 (no value), both summaries empty         ``NO_MOVEMENTS``: nothing to agree
204 otherwise                                ``WAIT`` (İYS has not produced it yet)
``queued`` for less than ``max_queued``      ``WAIT``
``queued`` for ``max_queued`` or longer      ``STUCK``: İYS says a job whose queueing failed
                                             stays ``queued`` forever
``inprogress``, or a status İYS never        ``WAIT``
documented
``completed`` with a hash value              ``COMPLETED``
``completed`` without one                    ``WAIT`` (asked again)
``error``                                    ``ERROR``
===========================================  ==================================================

**A day's verdict** (:func:`day_status`, the ``status`` of ``iys.reconciliations``):

=================================================  ========================
what happened                                      status
=================================================  ========================
our first hash equals İYS's                        ``agreed``
equal after storing the movements we lacked        ``repaired_and_agreed``
still different after the repair                   ``mismatch``
İYS's hash job failed or is stuck                  ``hash_error``
not decided yet (waiting, or the task failed)      ``pending``
=================================================  ========================

``agreed`` and ``repaired_and_agreed`` are recorded only after İYS confirmed the agreement
(``agreementCaptured``, either spelling) or already held it, or when the day has no movements.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from pydantic import AliasChoices, Field

from iys_provider.models import IYS_TIMEZONE, _IysModel, format_iys_datetime

#: The eight columns of the operation text, in its order.
EIGHT_COLUMNS = (
    "creationDate",
    "transactionId",
    "recipient",
    "recipientType",
    "type",
    "status",
    "consentDate",
    "source",
)
#: FAQ Q1's list: the same without ``status``.
SEVEN_COLUMNS = tuple(column for column in EIGHT_COLUMNS if column != "status")
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class FileFormat:
    """One reading of İYS's daily-file format."""

    name: str
    columns: tuple[str, ...] = EIGHT_COLUMNS
    header: bool = True
    delimiter: str = ","
    line_end: str = "\n"
    bom: bool = False
    #: FAQ Q1 ends its column list with a comma: every line then ends with the delimiter.
    trailing_delimiter: bool = False

    def header_bytes(self) -> bytes:
        """What comes before the first row: the BOM and the header line, as configured."""
        prefix = UTF8_BOM if self.bom else b""
        if not self.header:
            return prefix
        return prefix + self._line(list(self.columns)).encode("utf-8")

    def row_bytes(self, movement: Mapping[str, Any]) -> bytes:
        """One movement's line; ``movement`` is keyed by İYS's field names (dates aware or already text)."""
        return self._line([_text(movement.get(column)) for column in self.columns]).encode("utf-8")

    def _line(self, values: list[str]) -> str:
        line = self.delimiter.join(_quoted(value, self.delimiter) for value in values)
        return line + (self.delimiter if self.trailing_delimiter else "") + self.line_end


#: Every reading of the format we can produce, by name; ``literal`` is the default.
FILE_FORMATS: dict[str, FileFormat] = {
    fmt.name: fmt
    for fmt in (
        FileFormat("literal"),
        FileFormat("no_header", header=False),
        FileFormat("faq_seven_columns", columns=SEVEN_COLUMNS, trailing_delimiter=True),
        FileFormat("crlf", line_end="\r\n"),
        FileFormat("utf8_bom", bom=True),
    )
}
DEFAULT_FILE_FORMAT = "literal"

#: Hash algorithms computed in one pass, by İYS's ``hashMethod`` spelling (normalised) and hex length.
HASH_ALGORITHMS: dict[str, int] = {"sha384": 96, "sha256": 64}
DEFAULT_HASH_ALGORITHM = "sha384"
#: İYS serves this many completed days back.
WINDOW_DAYS = 7
#: Near midnight our day and İYS's may differ: the window's edge day is left out this close to it.
MIDNIGHT_MARGIN = timedelta(minutes=15)
#: A hash job ``queued`` this long is stuck (İYS: a job whose queueing failed stays queued).
DEFAULT_MAX_QUEUED = timedelta(hours=2)

CHANNELS = ("MESAJ", "ARAMA", "EPOSTA")
SOURCES = ("HS", "IYS")
RECIPIENT_TYPES = ("BIREYSEL", "TACIR")
COUNT_FIELDS = ("approval", "rejection", "pending", "total")


def file_format(name: str) -> FileFormat:
    """The format variant called ``name``; a clear error naming the known ones otherwise."""
    try:
        return FILE_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown reconciliation file format {name!r}; known: {sorted(FILE_FORMATS)}") from None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_iys_datetime(value)
    return str(value)


def _quoted(value: str, delimiter: str) -> str:
    if delimiter in value or '"' in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


# ---------------------------------------------------------------------- hashing


def normalise_hash_method(method: str | None) -> str | None:
    """``SHA384``, ``SHA-384``, ``sha_384`` … → ``sha384``; ``None`` for an empty or unknown one."""
    if not method:
        return None
    name = re.sub(r"[^a-z0-9]", "", method.lower())
    return name if name in HASH_ALGORITHMS else None


def algorithm_for(hash_method: str | None, hash_value: str) -> str:
    """The algorithm to compare ``hash_value`` with: the one named, unless the value's length says otherwise.

    Raises :class:`ValueError` for a value that is not hex or whose length fits no algorithm we know.
    """
    value = hash_value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", value):
        raise ValueError("İYS's hashValue is not hexadecimal")
    by_length = [name for name, length in HASH_ALGORITHMS.items() if length == len(value)]
    if not by_length:
        raise ValueError(f"İYS's hashValue has {len(value)} hex characters; no known algorithm ({hash_method}) fits")
    named = normalise_hash_method(hash_method)
    return named if named in by_length else by_length[0]


def describe_hash_method(hash_method: str | None, hash_value: str) -> str:
    """What ``hash_method`` of ``iys.reconciliations`` records: the algorithm used, and why when not as named."""
    used = algorithm_for(hash_method, hash_value)
    named = normalise_hash_method(hash_method)
    if named == used:
        return used
    return f"{used} (by the value's length; hashMethod {hash_method!r})"


class MultiHasher:
    """Every algorithm of :data:`HASH_ALGORITHMS` over one stream of bytes, and its size."""

    def __init__(self) -> None:
        self._hashes = {name: hashlib.new(name) for name in HASH_ALGORITHMS}
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        for digest in self._hashes.values():
            digest.update(data)
        self.size += len(data)

    def hexdigests(self) -> dict[str, str]:
        return {name: digest.hexdigest() for name, digest in self._hashes.items()}


def hashes_match(ours: Mapping[str, str], hash_method: str | None, hash_value: str) -> bool:
    """Whether our digests (``MultiHasher.hexdigests()``) hold İYS's value under the algorithm it implies."""
    return ours[algorithm_for(hash_method, hash_value)] == hash_value.strip().lower()


# ---------------------------------------------------------------------- the window (Turkey time)


def turkey_day_bounds(day: date) -> tuple[datetime, datetime]:
    """The day's first instant and the next day's, in Turkey time (creation dates in between belong to it)."""
    start = datetime.combine(day, time(0), tzinfo=IYS_TIMEZONE)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=IYS_TIMEZONE)


def reconciliation_window(
    now: datetime, *, days: int = WINDOW_DAYS, midnight_margin: timedelta = MIDNIGHT_MARGIN
) -> list[date]:
    """The days İYS serves at ``now`` (aware), newest first: D-1 … D-``days`` in Turkey time.

    In the ``midnight_margin`` after midnight D-1 is left out (İYS may still be on that day); in
    the one before midnight D-``days`` is (İYS may have moved on, and would answer 422 H502).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(IYS_TIMEZONE)
    today = local.date()
    first, last = 1, days
    since_midnight = local - datetime.combine(today, time(0), tzinfo=IYS_TIMEZONE)
    if since_midnight < midnight_margin:
        first = 2
    if timedelta(days=1) - since_midnight <= midnight_margin:
        last = days - 1
    return [today - timedelta(days=back) for back in range(first, last + 1)]


def outside_window_reason(day: date, now: datetime, *, days: int = WINDOW_DAYS) -> str | None:
    """Why ``day`` must not be asked for at ``now``, or ``None`` when İYS serves it."""
    window = reconciliation_window(now, days=days)
    if day in window:
        return None
    today = now.astimezone(IYS_TIMEZONE).date()
    if day >= today:
        return f"{day} is not a completed day yet in Turkey time (today is {today})"
    if day < today - timedelta(days=days):
        return (
            f"{day} is older than İYS's {days}-day reconciliation window (oldest day served now: "
            f"{today - timedelta(days=days)}); İYS would answer 422 H502, which counts against the IP's success "
            "ratio, and no longer serves that day's file and timestamp"
        )
    return f"{day} is at the edge of İYS's window within {MIDNIGHT_MARGIN} of midnight; ask again after it"


# ---------------------------------------------------------------------- İYS's answers


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


#: ``{channel: {source: {approval, rejection, pending, total}}}``, summed over recipient types.
Summary = dict[str, dict[str, dict[str, int]]]


def empty_summary() -> Summary:
    return {channel: {source: dict.fromkeys(COUNT_FIELDS, 0) for source in SOURCES} for channel in CHANNELS}


def source_class(source: str | None) -> str:
    """``IYS`` for a recipient's own movement (``IYS_*``), ``HS`` for everything else, as İYS's summary splits them."""
    return "IYS" if (source or "").startswith("IYS_") else "HS"


def summary_from_iys(answers: Iterable[DailyChangeSummaryResponse]) -> Summary:
    """İYS's summaries (one per recipient type) added up per channel and source."""
    summary = empty_summary()
    for answer in answers:
        for stat in answer.change_stats:
            by_source = summary.setdefault(stat.type, {})
            for counts in stat.consents:
                source = counts.source.upper() if counts.source.upper() in SOURCES else source_class(counts.source)
                target = by_source.setdefault(source, dict.fromkeys(COUNT_FIELDS, 0))
                for name in COUNT_FIELDS:
                    target[name] += getattr(counts, name)
    return summary


def summary_from_counts(rows: Iterable[tuple[str, str, str, int]]) -> Summary:
    """Our summary from ``(type, source class, status, movements)`` rows of the day.

    Every movement of ours is ``approval`` (ONAY) or ``rejection`` (RET): İYS counts transitions
    (first ONAY and RET→ONAY; ONAY→RET), and it refuses same-status movements (H174) and first
    RETs (H175), so each movement is one. ``pending`` is İYS's alone (0 here).
    """
    summary = empty_summary()
    for channel, source, status, count in rows:
        target = summary.setdefault(channel, {}).setdefault(source, dict.fromkeys(COUNT_FIELDS, 0))
        target["total"] += count
        if status == "ONAY":
            target["approval"] += count
        elif status == "RET":
            target["rejection"] += count
    return summary


def summary_differences(ours: Summary, iys: Summary) -> list[str]:
    """Where the approval and rejection counts differ, as ``MESAJ/HS approval: ours 3, İYS 4``."""
    differences = []
    for channel in sorted(set(ours) | set(iys)):
        for source in sorted(set(ours.get(channel, {})) | set(iys.get(channel, {}))):
            for name in ("approval", "rejection"):
                mine = ours.get(channel, {}).get(source, {}).get(name, 0)
                theirs = iys.get(channel, {}).get(source, {}).get(name, 0)
                if mine != theirs:
                    differences.append(f"{channel}/{source} {name}: ours {mine}, İYS {theirs}")
    return differences


def summary_total(summary: Summary) -> int:
    return sum(counts.get("total", 0) for by_source in summary.values() for counts in by_source.values())


# ---------------------------------------------------------------------- verdicts


class HashJobVerdict(enum.StrEnum):
    WAIT = "wait"
    COMPLETED = "completed"
    ERROR = "error"
    STUCK = "stuck"
    NO_MOVEMENTS = "no_movements"


def hash_job_verdict(
    info: AgreementInfo | None,
    *,
    queued_for: timedelta | None,
    max_queued: timedelta = DEFAULT_MAX_QUEUED,
    day_is_empty: bool = False,
) -> HashJobVerdict:
    """What to do with İYS's answer about the day's hash job (see the module's table).

    ``info`` is ``None`` for a 204; ``queued_for`` is how long the job has been seen ``queued``;
    ``day_is_empty`` says both summaries (ours and İYS's) count no movement.
    """
    if info is None:
        return HashJobVerdict.NO_MOVEMENTS if day_is_empty else HashJobVerdict.WAIT
    status = info.process_status.strip().lower()
    if status == "error":
        return HashJobVerdict.ERROR
    if status == "completed":
        return HashJobVerdict.COMPLETED if info.hash_value else HashJobVerdict.WAIT
    if status == "queued" and queued_for is not None and queued_for >= max_queued:
        return HashJobVerdict.STUCK
    return HashJobVerdict.WAIT


class DayStatus(enum.StrEnum):
    AGREED = "agreed"
    REPAIRED_AND_AGREED = "repaired_and_agreed"
    MISMATCH = "mismatch"
    HASH_ERROR = "hash_error"
    PENDING = "pending"


#: The statuses that need no further work (except archiving, when an archive is configured).
SETTLED = frozenset({DayStatus.AGREED, DayStatus.REPAIRED_AND_AGREED})


def day_status(*, matched_first: bool, matched_after_repair: bool | None) -> DayStatus:
    """The day's status once both hashes are known (see the module's table)."""
    if matched_first:
        return DayStatus.AGREED
    return DayStatus.REPAIRED_AND_AGREED if matched_after_repair else DayStatus.MISMATCH


@dataclass
class Difference:
    """Movements İYS's file holds and we lack (``missing``), hold differently (``changed``), or we hold
    and the file lacks (``extra``), per channel and source class."""

    missing: dict[str, dict[str, int]] = field(default_factory=dict)
    changed: dict[str, dict[str, int]] = field(default_factory=dict)
    extra: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, kind: str, channel: str, source: str, count: int) -> None:
        by_channel = getattr(self, kind).setdefault(channel, {})
        by_channel[source] = by_channel.get(source, 0) + count

    def total(self, kind: str) -> int:
        return sum(n for by_source in getattr(self, kind).values() for n in by_source.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "missing": self.missing,
            "changed": self.changed,
            "extra": self.extra,
            "missing_total": self.total("missing"),
            "changed_total": self.total("changed"),
            "extra_total": self.total("extra"),
        }


# ---------------------------------------------------------------------- reading İYS's file


def parse_file_lines(lines: Iterator[str], fmt: FileFormat) -> Iterator[dict[str, str]]:
    """Rows of İYS's file (text lines) as ``{column: value}``; the header, if the format has one, names them.

    A header whose names are İYS's columns decides the layout (so a file with another column
    order still reads); otherwise the format's columns do. Raises :class:`ValueError`, naming the
    line, for a row whose field count fits neither.
    """
    import csv

    reader = csv.reader(lines, delimiter=fmt.delimiter)
    columns = list(fmt.columns)
    for number, fields in enumerate(reader, start=1):
        if number == 1 and fields and fields[0].startswith(UTF8_BOM.decode("utf-8")):
            fields[0] = fields[0][1:]
        if fmt.trailing_delimiter and fields and fields[-1] == "":
            fields = fields[:-1]
        if number == 1 and fmt.header:
            named = [name.strip() for name in fields]
            if set(named) >= {"transactionId", "creationDate"} and set(named) <= set(EIGHT_COLUMNS):
                columns = named
            continue
        if not fields:
            continue
        if len(fields) != len(columns):
            raise ValueError(f"line {number} of İYS's file has {len(fields)} fields, expected {len(columns)}")
        yield dict(zip(columns, fields, strict=True))
