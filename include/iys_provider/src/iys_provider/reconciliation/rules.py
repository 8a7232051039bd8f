"""İYS's daily reconciliation (mutabakat), the pure part: the day's file, its hash, the window, the verdicts.

For one brand and one completed day İYS publishes a summary of the day's movements, a hash of
the day's movement file, the file itself and a timestamp (``.tsr``) of it. We build the same
file from ``iys.consent_events``, hash it, and agree (``PUT``) when the hashes are equal; when
they differ, İYS's file tells which movements we lack. Everything here is free of I/O; the SQL
is in :mod:`iys_provider.reconciliation.store`, the calls in :class:`~iys_provider.hooks.iys.IysHook`.

**İYS's file is read by its content** (:func:`detect_file_format`, :func:`read_file_rows`), since
its documentation leaves the bytes open: a header line is recognised by its column names (any
case, any order), ``\\n`` and ``\\r\\n`` both end a line, a UTF-8 BOM is dropped, seven columns
(FAQ Q1, no ``status``) or eight are recognised from the header or the first row's shape, with or
without FAQ Q1's trailing comma. Our own file of the day is then written in the reading İYS's
file showed, and the reading that last agreed is tried first the next day. A ``file_format``
other than ``auto`` (:data:`FILE_FORMATS`, variants combinable with ``+``) overrides what our
file is written in. Every line of İYS's file is read or reported (:class:`FileReading`).

The readings, as changes from ``literal`` (the most literal reading of the operation text):

==========================  ==============================================================
question                    ``literal``; variants
==========================  ==============================================================
columns                     the eight of the operation text, in its order:
                            ``creationDate, transactionId, recipient, recipientType, type,
                            status, consentDate, source``; ``faq_seven_columns`` (FAQ Q1:
                            no ``status``, a trailing comma), ``seven_columns`` (no comma),
                            ``trailing_delimiter`` (eight and a trailing comma)
header line                 yes, the column names; ``no_header``
delimiter, quoting          ``,``; a value is quoted only when it holds a comma, a quote or a
                            line break (RFC 4180; İYS's values never do)
encoding                    UTF-8 without a BOM; ``utf8_bom``
line ends                   ``\\n`` after every line, the last included; ``crlf``
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

**The hash job** (:func:`hash_job_verdict`); "waited" counts from the first time this run saw the
job unfinished (each run waits afresh, so a stuck day costs each run at most ``max_wait``):

===========================================  ==================================================
İYS answers                                  verdict
===========================================  ==================================================
204 (no value), both summaries empty         ``NO_MOVEMENTS``: nothing to agree
``completed`` with a hash value              ``COMPLETED``
``error``                                    ``ERROR``: the day is ``hash_error``
anything else (204, ``queued``,              ``WAIT``; once waited ``max_wait`` (15 min by
``inprogress``, ``completed`` without a      default), ``TOO_LONG``: the day stays ``pending``
hash, a status İYS never documented)         with the reason, the night goes on without it and
                                             the next run asks again (İYS: a job whose queueing
                                             failed stays ``queued``)
===========================================  ==================================================

**A day's verdict** (:func:`day_status`, the ``status`` of ``iys.reconciliations``):

=================================================  ========================
what happened                                      status
=================================================  ========================
our first hash equals İYS's, or equal once our     ``agreed``
file is written in the reading İYS's file showed
equal after storing the movements we lacked        ``repaired_and_agreed``
still different after the repair                   ``mismatch``
İYS's hash job ended in ``error``                  ``hash_error``
not decided yet (İYS's job unfinished past the     ``pending``
wait, or the task failed)
=================================================  ========================

``agreed`` and ``repaired_and_agreed`` are recorded only after İYS confirmed the agreement
(``agreementCaptured``, either spelling) or already held it, or when the day has no movements.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, BinaryIO

from iys_provider.models import IYS_TIMEZONE, DailyChangeSummaryResponse, format_iys_datetime

# İYS's reconciliation answers live in models (the hook reads them too); imported from here too.
from iys_provider.models import AgreementCaptured as AgreementCaptured
from iys_provider.models import AgreementInfo as AgreementInfo
from iys_provider.models import ChangeStat as ChangeStat
from iys_provider.models import ChangeStatCounts as ChangeStatCounts

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
    """One reading of İYS's daily-file format: what our own file of the day is written in."""

    columns: tuple[str, ...] = EIGHT_COLUMNS
    header: bool = True
    delimiter: str = ","
    line_end: str = "\n"
    bom: bool = False
    #: FAQ Q1 ends its column list with a comma: every line then ends with the delimiter.
    trailing_delimiter: bool = False
    #: The header's names as İYS spells them, when not exactly :attr:`columns` (case, say).
    header_names: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """``literal``, or the variants that differ from it joined by ``+`` (``no_header+crlf``)."""
        parts = []
        if not self.header:
            parts.append("no_header")
        if self.line_end == "\r\n":
            parts.append("crlf")
        if self.bom:
            parts.append("utf8_bom")
        if self.columns == SEVEN_COLUMNS:
            parts.append("faq_seven_columns" if self.trailing_delimiter else "seven_columns")
        else:
            if self.columns != EIGHT_COLUMNS:
                parts.append("columns=" + "|".join(self.columns))
            if self.trailing_delimiter:
                parts.append("trailing_delimiter")
        if self.header and self.header_names and self.header_names != self.columns:
            parts.append("header=" + "|".join(self.header_names))
        return "+".join(parts) or "literal"

    def header_bytes(self) -> bytes:
        """What comes before the first row: the BOM and the header line, as configured."""
        prefix = UTF8_BOM if self.bom else b""
        if not self.header:
            return prefix
        return prefix + self._line(list(self.header_names or self.columns)).encode("utf-8")

    def row_bytes(self, movement: Mapping[str, Any]) -> bytes:
        """One movement's line; ``movement`` is keyed by İYS's field names (dates aware or already text)."""
        return self._line([_text(movement.get(column)) for column in self.columns]).encode("utf-8")

    def _line(self, values: list[str]) -> str:
        line = self.delimiter.join(_quoted(value, self.delimiter) for value in values)
        return line + (self.delimiter if self.trailing_delimiter else "") + self.line_end


LITERAL = FileFormat()
#: The documented readings, each one change from ``literal``; combine them with ``+``.
FILE_VARIANTS: dict[str, dict[str, Any]] = {
    "no_header": {"header": False},
    "crlf": {"line_end": "\r\n"},
    "utf8_bom": {"bom": True},
    "faq_seven_columns": {"columns": SEVEN_COLUMNS, "trailing_delimiter": True},
    "seven_columns": {"columns": SEVEN_COLUMNS, "trailing_delimiter": False},
    "trailing_delimiter": {"trailing_delimiter": True},
}
#: Every single reading by name (``literal`` and each variant); any ``+`` combination is accepted too.
FILE_FORMATS: dict[str, FileFormat] = {
    "literal": LITERAL,
    **{name: dataclasses.replace(LITERAL, **change) for name, change in FILE_VARIANTS.items()},
}
#: The default: read İYS's file by its content (:func:`detect_file_format`); any other name is an override.
AUTO_FILE_FORMAT = "auto"
DEFAULT_FILE_FORMAT = AUTO_FILE_FORMAT

#: Hash algorithms computed in one pass, by İYS's ``hashMethod`` spelling (normalised) and hex length.
HASH_ALGORITHMS: dict[str, int] = {"sha384": 96, "sha256": 64}
DEFAULT_HASH_ALGORITHM = "sha384"
#: İYS serves this many completed days back.
WINDOW_DAYS = 7
#: Near midnight our day and İYS's may differ: the window's edge day is left out this close to it.
MIDNIGHT_MARGIN = timedelta(minutes=15)
#: How long a run waits for İYS's hash job of a day before leaving the day ``pending`` for the next run.
DEFAULT_MAX_WAIT = timedelta(minutes=15)

CHANNELS = ("MESAJ", "ARAMA", "EPOSTA")
SOURCES = ("HS", "IYS")
RECIPIENT_TYPES = ("BIREYSEL", "TACIR")
COUNT_FIELDS = ("approval", "rejection", "pending", "total")


def file_format(name: str) -> FileFormat | None:
    """The reading called ``name`` (``literal``, a variant, or variants joined by ``+``); ``None`` for ``auto``.

    Raises :class:`ValueError` naming the known readings for anything else.
    """
    name = (name or "").strip()
    if name in ("", "None", AUTO_FILE_FORMAT):
        return None
    fmt = LITERAL
    for part in name.split("+"):
        part = part.strip()
        if part == "literal":
            continue
        if part.startswith("columns="):
            fmt = dataclasses.replace(fmt, columns=_column_list(part.removeprefix("columns="), name))
        elif part.startswith("header="):
            fmt = dataclasses.replace(fmt, header_names=tuple(part.removeprefix("header=").split("|")))
        elif part in FILE_VARIANTS:
            fmt = dataclasses.replace(fmt, **FILE_VARIANTS[part])
        else:
            raise ValueError(
                f"unknown reconciliation file format {name!r}; known: {AUTO_FILE_FORMAT!r}, "
                f"{sorted(FILE_FORMATS)} or variants joined by '+' (e.g. 'no_header+crlf')"
            )
    return fmt


def _column_list(text: str, name: str) -> tuple[str, ...]:
    columns = tuple(text.split("|"))
    if set(columns) - set(EIGHT_COLUMNS) or len(set(columns)) != len(columns) or not set(SEVEN_COLUMNS) <= set(columns):
        raise ValueError(f"file format {name!r}: columns must be İYS's, each once, at least the seven of FAQ Q1")
    return columns


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


def hash_stream(source: BinaryIO, chunk_bytes: int = 1 << 20) -> tuple[MultiHasher, bytes]:
    """Every hash of ``source``'s bytes as read, and its first :data:`DETECT_BYTES` (what
    :func:`detect_file_format` reads): İYS's file is hashed exactly as it was served."""
    hasher = MultiHasher()
    head = source.read(DETECT_BYTES)
    hasher.update(head)
    while block := source.read(chunk_bytes):
        hasher.update(block)
    return hasher, head


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
    TOO_LONG = "too_long"
    NO_MOVEMENTS = "no_movements"


def hash_job_verdict(
    info: AgreementInfo | None,
    *,
    waited_for: timedelta | None,
    max_wait: timedelta = DEFAULT_MAX_WAIT,
    day_is_empty: bool = False,
) -> HashJobVerdict:
    """What to do with İYS's answer about the day's hash job (see the module's table).

    ``info`` is ``None`` for a 204; ``waited_for`` is how long this run has seen the job unfinished
    (``queued``, ``inprogress``, a 204, or a status İYS never documented); ``day_is_empty`` says
    both summaries (ours and İYS's) count no movement.
    """
    if info is None and day_is_empty:
        return HashJobVerdict.NO_MOVEMENTS
    if info is not None:
        status = info.process_status.strip().lower()
        if status == "error":
            return HashJobVerdict.ERROR
        if status == "completed" and info.hash_value:
            return HashJobVerdict.COMPLETED
    if waited_for is not None and waited_for >= max_wait:
        return HashJobVerdict.TOO_LONG
    return HashJobVerdict.WAIT


def waiting_reason(process_status: str | None, since: datetime, max_wait: timedelta) -> str:
    """The ``detail`` of a day left ``pending`` because İYS's hash job outlasted ``max_wait``."""
    state = {"no_value": "had no hash for the day (204)"}.get(str(process_status), f"was {process_status!r}")
    reason = (
        f"İYS's hash job {state} since {since.astimezone(IYS_TIMEZONE):%Y-%m-%d %H:%M} Turkey time, past the "
        f"{_minutes(max_wait)} wait; the day is asked about again by the next run while İYS serves it"
    )
    if process_status == "queued":
        reason += " (İYS: a job whose queueing failed stays queued; if it stays so for days, ask İYS support)"
    return reason


def _minutes(duration: timedelta) -> str:
    minutes = duration.total_seconds() / 60
    return f"{minutes:g} min"


def waiting_for_iys(row: Mapping[str, Any]) -> bool:
    """A ``pending`` day whose only problem is İYS's unfinished hash job (recorded by the hash sensor)."""
    return row.get("status") == DayStatus.PENDING and bool(row.get("hash_waiting_since")) and not row.get("hash_iys")


def last_chance(day: date, now: datetime, *, days: int = WINDOW_DAYS) -> bool:
    """Whether ``day`` is the oldest İYS serves now: a run tomorrow could no longer ask about it."""
    window = reconciliation_window(now, days=days)
    return not window or day <= window[-1]


class DayStatus(enum.StrEnum):
    AGREED = "agreed"
    REPAIRED_AND_AGREED = "repaired_and_agreed"
    MISMATCH = "mismatch"
    HASH_ERROR = "hash_error"
    PENDING = "pending"


#: The statuses that need no further work (except archiving, when an archive is configured).
SETTLED = frozenset({DayStatus.AGREED, DayStatus.REPAIRED_AND_AGREED})


def day_status(*, matched_first: bool, matched_after_repair: bool | None, stored: int = 0) -> DayStatus:
    """The day's status once both hashes are known (see the module's table).

    Equal only after reading İYS's file but with nothing stored (our file written in the reading
    İYS's file showed) is ``agreed``: no movement was repaired.
    """
    if matched_first:
        return DayStatus.AGREED
    if not matched_after_repair:
        return DayStatus.MISMATCH
    return DayStatus.REPAIRED_AND_AGREED if stored else DayStatus.AGREED


@dataclass
class Difference:
    """Movements İYS's file holds and we lack (``missing``), hold differently (``changed``), or we hold
    and the file lacks (``extra``), per channel and source class."""

    missing: dict[str, dict[str, int]] = field(default_factory=dict)
    changed: dict[str, dict[str, int]] = field(default_factory=dict)
    extra: dict[str, dict[str, int]] = field(default_factory=dict)
    #: The first transaction ids of each kind, masked (:func:`mask_transaction_id`).
    examples: dict[str, list[str]] = field(default_factory=dict)

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
            "examples": self.examples,
        }


# ---------------------------------------------------------------------- reading İYS's file

STATUSES = ("ONAY", "RET")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")
_HEADER_NAMES = {column.lower(): column for column in EIGHT_COLUMNS}
#: Bytes of İYS's file read to recognise its layout (the first lines).
DETECT_BYTES = 64 * 1024
#: Unreadable lines named one by one in the record; the rest are counted.
UNREADABLE_LISTED = 5


def _split(line: str, delimiter: str = ",") -> list[str]:
    if '"' not in line:
        return line.split(delimiter)
    return next(csv.reader([line], delimiter=delimiter))


def _header_columns(fields: list[str]) -> tuple[tuple[str, ...], tuple[str, ...], bool] | None:
    """``(columns, names as written, trailing delimiter)`` when ``fields`` are İYS's column names, else ``None``.

    Names are matched without regard to case or surrounding blanks; the seven of FAQ Q1 must be
    there (``status`` may be), each once.
    """
    names = [field.strip() for field in fields]
    trailing = len(names) > 1 and names[-1] == ""
    if trailing:
        names = names[:-1]
    columns = tuple(_HEADER_NAMES.get(name.lower(), "") for name in names)
    if "" in columns or len(set(columns)) != len(columns) or not set(SEVEN_COLUMNS) <= set(columns):
        return None
    return columns, tuple(names), trailing


def _row_shape(fields: list[str]) -> tuple[tuple[str, ...], bool] | None:
    """``(columns, trailing delimiter)`` a data row's shape shows: 8 fields with a status in the sixth, or 7."""
    count = len(fields)
    if not fields or not _DATE_TIME.fullmatch(fields[0]) or not fields[1]:
        return None
    if count in (8, 9) and fields[5] in STATUSES and (count == 8 or fields[8] == ""):
        return EIGHT_COLUMNS, count == 9
    if count in (7, 8) and (fields[5] == "" or _DATE_TIME.fullmatch(fields[5])) and (count == 7 or fields[7] == ""):
        return SEVEN_COLUMNS, count == 8
    return None


@dataclass(frozen=True)
class Detection:
    """The reading :func:`detect_file_format` recognised (``fmt``), or why it recognised none."""

    fmt: FileFormat | None
    reason: str | None = None


def detect_file_format(head: bytes) -> Detection:
    """The reading of İYS's file its first bytes show: BOM, line ends, header (by its column names) or
    not, seven or eight columns (from the header, else from the first row's shape), trailing delimiter.
    """
    if not head:
        return Detection(None, "İYS's file is empty")
    bom = head.startswith(UTF8_BOM)
    body = head[len(UTF8_BOM) :] if bom else head
    end = body.find(b"\n")
    first = body if end < 0 else body[:end]
    line_end = "\r\n" if first.endswith(b"\r") else "\n"
    try:
        text = first.rstrip(b"\r").decode("utf-8")
    except UnicodeDecodeError:
        return Detection(None, "the first line of İYS's file is not UTF-8")
    fields = _split(text)
    header = _header_columns(fields)
    if header is not None:
        columns, names, trailing = header
        return Detection(
            FileFormat(
                columns=columns,
                header=True,
                line_end=line_end,
                bom=bom,
                trailing_delimiter=trailing,
                header_names=names if names != columns else None,
            )
        )
    shape = _row_shape(fields)
    if shape is None:
        return Detection(
            None, f"the first line of İYS's file is neither its column names nor a movement ({len(fields)} fields)"
        )
    columns, trailing = shape
    return Detection(FileFormat(columns=columns, header=False, line_end=line_end, bom=bom, trailing_delimiter=trailing))


@dataclass
class FileReading:
    """What reading İYS's file found: rows read, and the lines that could not be read (never skipped silently)."""

    rows: int = 0
    header: bool = False
    #: The columns the rows were read with (the header's, else the reading's).
    columns: tuple[str, ...] = ()
    unreadable: int = 0
    unreadable_lines: list[str] = field(default_factory=list)

    def refuse(self, number: int, reason: str) -> None:
        self.unreadable += 1
        if len(self.unreadable_lines) < UNREADABLE_LISTED:
            self.unreadable_lines.append(f"line {number}: {reason}")

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "unreadable": self.unreadable, "unreadable_lines": list(self.unreadable_lines)}


def read_file_rows(lines: Iterable[bytes], fmt: FileFormat, reading: FileReading) -> Iterator[dict[str, str]]:
    """Rows of İYS's file (its raw lines, ``\\n``-split, as a binary file iterates) as ``{column: value}``.

    Read by content whatever ``fmt`` says about the rest: a BOM is dropped, ``\\r\\n`` and ``\\n``
    both end a line, line 1 is a header only when it holds İYS's column names (then they name the
    columns), and one trailing empty field is dropped. ``fmt.columns`` names the fields of a file
    without header. A line that cannot be read (not UTF-8, blank, the wrong number of fields, no
    transaction id or creation date) is recorded in ``reading`` with its number and reason, never
    silently skipped; its content is not (it holds an address).
    """
    columns = reading.columns = fmt.columns
    width = len(columns)
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        if number == 1 and line.startswith(UTF8_BOM):
            line = line[len(UTF8_BOM) :]
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            reading.refuse(number, "not UTF-8")
            continue
        if not text:
            reading.refuse(number, "blank line")
            continue
        try:
            fields = _split(text, fmt.delimiter)
        except csv.Error as exc:
            reading.refuse(number, f"not CSV ({exc})")
            continue
        if number == 1:
            header = _header_columns(fields)
            if header is not None:
                columns, width, reading.header = header[0], len(header[0]), True
                reading.columns = columns
                continue
        if len(fields) == width + 1 and fields[-1] == "":
            fields.pop()
        if len(fields) != width:
            reading.refuse(number, f"{len(fields)} fields, expected {width}")
            continue
        row = dict(zip(columns, fields, strict=True))
        if not row["transactionId"]:
            reading.refuse(number, "no transactionId")
            continue
        if not _DATE_TIME.fullmatch(row["creationDate"]):
            reading.refuse(number, "creationDate is not YYYY-MM-DD HH:mm:ss")
            continue
        reading.rows += 1
        yield row


# ---------------------------------------------------------------------- messages


def mask_transaction_id(transaction_id: str) -> str:
    """The first 6 and last 4 characters of a transaction id, enough to find it, not to quote it."""
    return transaction_id if len(transaction_id) <= 12 else f"{transaction_id[:6]}…{transaction_id[-4:]}"


KIND_WORDS = {
    "missing": "in İYS's file, missing from ours",
    "changed": "in both, held differently",
    "extra": "ours, not in İYS's file",
}


def mismatch_detail(
    *,
    algorithm: str,
    difference: Mapping[str, Any] | None,
    file_hash_is_iys_hash: bool | None,
    fmt_name: str | None,
    stored: int = 0,
    unresolved: int = 0,
) -> str:
    """Why a day's hashes still differ, in words: counts per kind with the first transaction ids (masked),
    unreadable lines, and "the format differs" only when İYS's file hashes to İYS's value and holds
    exactly the movements we hold (then only the bytes can differ).
    """
    parts = [f"our hash still differs from İYS's ({algorithm})"]
    if file_hash_is_iys_hash is None:
        parts.append("İYS's file was not downloaded")
    difference = difference or {}
    examples = difference.get("examples") or {}
    counted = 0
    for kind, words in KIND_WORDS.items():
        total = int(difference.get(f"{kind}_total") or 0)
        counted += total
        if total:
            per_channel = ", ".join(
                f"{channel}/{source} {count}"
                for channel, by_source in sorted((difference.get(kind) or {}).items())
                for source, count in sorted(by_source.items())
            )
            first = ", ".join(examples.get(kind) or [])
            parts.append(f"{total} {words} ({per_channel}{'; first: ' + first if first else ''})")
    unreadable = int((difference.get("file") or {}).get("unreadable") or 0)
    if unreadable:
        lines = "; ".join((difference.get("file") or {}).get("unreadable_lines") or [])
        parts.append(f"{unreadable} lines of İYS's file could not be read ({lines})")
    if stored or unresolved:
        parts.append(
            f"{stored} stored from İYS's file"
            + (f", {unresolved} not stored (İYS's status unknown for them)" if unresolved else "")
        )
    if file_hash_is_iys_hash is False:
        parts.append(
            "İYS's own file does not hash to İYS's value either: İYS hashed other bytes than it served "
            "(compare the archived file with İYS's hashValue)"
        )
    elif file_hash_is_iys_hash and not counted and not unreadable:
        parts.append(
            f"İYS's file hashes to İYS's value and holds exactly our movements: only the bytes of our file "
            f"differ from İYS's (read as {fmt_name}); see the reconciliation docs on file formats"
        )
    return "; ".join(parts)
