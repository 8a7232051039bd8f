"""Consent records, the change-event streams and the HS write rules. Not thread-safe on its own:
the application serialises access with one lock."""

from __future__ import annotations

import bisect
import hashlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clock import format_turkey_time
from .errors import error_item
from .synthetic import SyntheticPopulation
from .validation import ConsentInput

ConsentKey = tuple[int, str, str, str]  # (brandCode, recipient, recipientType, type)

STREAM_IYS = "IYS"
STREAM_HS = "HS"


def stream_of(source: str | None) -> str:
    """Movements made through İYS channels (IYS_*) form the IYS stream; everything else is HS."""
    return STREAM_IYS if (source or "").startswith("IYS_") else STREAM_HS


@dataclass
class StoredConsent:
    brand_code: int
    recipient: str
    recipient_type: str
    consent_type: str
    status: str
    consent_date: str | None
    source: str | None
    creation_date: str
    transaction_id: str
    origin_request_id: str | None = None
    origin_sub_request_id: str | None = None

    def status_body(self) -> dict[str, Any]:
        """Single-status response shape; TACIR records may lack consentDate/source."""
        body: dict[str, Any] = {}
        if self.consent_date is not None:
            body["consentDate"] = self.consent_date
        if self.source is not None:
            body["source"] = self.source
        body.update(
            recipient=self.recipient,
            recipientType=self.recipient_type,
            status=self.status,
            type=self.consent_type,
            creationDate=self.creation_date,
            transactionId=self.transaction_id,
            retailerAccessCount=0,
        )
        return body

    def state_body(self) -> dict[str, Any]:
        return {"brandCode": self.brand_code, **self.status_body()}


@dataclass
class ConsentEvent:
    brand_code: int
    stream: str
    creation_ms: int
    transaction_id: str
    consent: dict[str, Any]
    seq: int = 0  # insertion order (store-wide); ties on creation time are served in this order
    occurrence: int = 1  # 1 + earlier events of the stream with the same creation time and transactionId

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.creation_ms, self.seq)

    @property
    def cursor(self) -> str:
        """``<creation ms>_<transactionId>``; a repeated (creation time, transactionId) pair (İYS gives
        movements of one address in the same second one transactionId) gets ``~<occurrence>`` appended
        so a page ending between such movements still resumes at the right one."""
        base = f"{self.creation_ms}_{self.transaction_id}"
        return base if self.occurrence == 1 else f"{base}~{self.occurrence}"

    def pull_body(self) -> dict[str, Any]:
        return dict(self.consent)


@dataclass
class EventStream:
    """Events of one (brand, stream), ordered by creation time, then insertion order."""

    events: list[ConsentEvent] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)  # (creation_ms, seq), parallel to events
    by_transaction: dict[tuple[int, str], list[int]] = field(default_factory=dict)  # (ms, txid) -> seqs
    dirty: bool = False

    def append(self, event: ConsentEvent) -> None:
        seqs = self.by_transaction.setdefault((event.creation_ms, event.transaction_id), [])
        seqs.append(event.seq)
        event.occurrence = len(seqs)
        if self.keys and event.sort_key < self.keys[-1]:
            self.dirty = True  # explicit back-dated creationDate; re-sort on the next read
        self.events.append(event)
        self.keys.append(event.sort_key)

    def sorted_view(self) -> tuple[list[ConsentEvent], list[tuple[int, int]]]:
        if self.dirty:
            self.events.sort(key=lambda event: event.sort_key)
            self.keys = [event.sort_key for event in self.events]
            self.dirty = False
        return self.events, self.keys

    def start_after(self, creation_ms: int, transaction_id: str) -> int:
        """Index of the first event after the cursor ``<creation_ms>_<transaction_id>``."""
        events, keys = self.sorted_view()
        occurrence = 1
        seqs = self.by_transaction.get((creation_ms, transaction_id))
        if seqs is None:
            base, _, suffix = transaction_id.rpartition("~")
            if base and suffix.isdigit() and int(suffix) >= 1:
                seqs = self.by_transaction.get((creation_ms, base))
                occurrence = int(suffix)
        if seqs:
            seq = seqs[min(occurrence, len(seqs)) - 1]
            return bisect.bisect_right(keys, (creation_ms, seq))
        # Not a cursor this stream handed out: skip what sorts before it as (creation, transactionId).
        start = bisect.bisect_left(keys, (creation_ms, -1))
        while (
            start < len(events)
            and events[start].creation_ms == creation_ms
            and events[start].transaction_id <= transaction_id
        ):
            start += 1
        return start


class WriteRejected(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["code"])
        self.error = error


class ConsentStore:
    def __init__(self, id_seed: int | None) -> None:
        self._ids = random.Random(id_seed)
        self._event_seq = 0
        self.records: dict[ConsentKey, StoredConsent] = {}
        self.streams: dict[tuple[int, str], EventStream] = {}
        self.populations: list[SyntheticPopulation] = []
        self._synthetic_overridden: dict[tuple[int, str], int] = {}  # (brand, status) -> count replaced
        # Told of every appended movement (the app queues IYS_* movements for push delivery here).
        self.on_event: Callable[[ConsentEvent], None] | None = None

    # -- identifiers ---------------------------------------------------------------------------
    def new_transaction_id(self) -> str:
        return f"{self._ids.getrandbits(256):064x}"

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    # -- lookup --------------------------------------------------------------------------------
    def get(self, key: ConsentKey) -> StoredConsent | None:
        record = self.records.get(key)
        if record is not None:
            return record
        return self._synthetic_record(key)

    def _synthetic_record(self, key: ConsentKey) -> StoredConsent | None:
        brand_code, recipient, recipient_type, consent_type = key
        for population in self.populations:
            status = population.status(brand_code, recipient, recipient_type, consent_type)
            if status is not None:
                digest = hashlib.sha256(f"{brand_code}|{recipient}|{consent_type}".encode()).hexdigest()
                return StoredConsent(
                    brand_code=brand_code,
                    recipient=recipient,
                    recipient_type=recipient_type,
                    consent_type=consent_type,
                    status=status,
                    consent_date=population.consent_date,
                    source="HS_WEB",
                    creation_date=population.consent_date,
                    transaction_id=digest,
                )
        return None

    # -- writes --------------------------------------------------------------------------------
    def put(self, record: StoredConsent) -> bool:
        """Store ``record``; returns True when the key had no record at all before (a new recipient)."""
        key = (record.brand_code, record.recipient, record.recipient_type, record.consent_type)
        if key not in self.records:
            synthetic = self._synthetic_record(key)
            if synthetic is not None:
                overridden = (record.brand_code, synthetic.status)
                self._synthetic_overridden[overridden] = self._synthetic_overridden.get(overridden, 0) + 1
            existed = synthetic is not None
        else:
            existed = True
        self.records[key] = record
        return not existed

    def append_event(self, record: StoredConsent, creation_ms: int) -> ConsentEvent:
        consent: dict[str, Any] = {}
        if record.consent_date is not None:
            consent["consentDate"] = record.consent_date
        consent["creationDate"] = record.creation_date
        if record.source is not None:
            consent["source"] = record.source
        consent.update(
            recipient=record.recipient,
            recipientType=record.recipient_type,
            status=record.status,
            type=record.consent_type,
            transactionId=record.transaction_id,
        )
        return self.append_raw_event(
            record.brand_code, stream_of(record.source), creation_ms, record.transaction_id, consent
        )

    def append_raw_event(
        self, brand_code: int, stream: str, creation_ms: int, transaction_id: str, consent: dict[str, Any]
    ) -> ConsentEvent:
        """Append a movement to a change feed as given (no validation, no state change)."""
        self._event_seq += 1
        event = ConsentEvent(brand_code, stream, creation_ms, transaction_id, consent, seq=self._event_seq)
        self.streams.setdefault((brand_code, stream), EventStream()).append(event)
        if self.on_event is not None:
            self.on_event(event)
        return event

    def apply_hs_write(
        self,
        brand_code: int,
        consent: ConsentInput,
        now_epoch: float,
        *,
        index: int | None = None,
        origin: tuple[str, str] | None = None,
    ) -> tuple[StoredConsent, bool]:
        """Apply the stateful İYS rules to a field-valid HS consent and commit it.

        Returns (record, created_new_recipient). Raises WriteRejected with an error item otherwise.
        Order of checks: H408 (HS_KARAR first), H175, H462/H463, H174, H178.
        """
        existing = self.get((brand_code, *consent.key))
        if existing is None:
            if consent.source == "HS_KARAR":
                raise WriteRejected(error_item("H408", location=["source"], value=consent.source, index=index))
            if consent.status == "RET":
                raise WriteRejected(error_item("H175", location=["status"], index=index))
        else:
            if consent.recipient_type == "TACIR":
                if consent.consent_date is None:
                    raise WriteRejected(error_item("H462", location=["consentDate"], index=index))
                if consent.source is None:
                    raise WriteRejected(error_item("H463", location=["source"], index=index))
            if consent.status == existing.status:
                raise WriteRejected(error_item("H174", location=["status"], index=index, status=existing.status))
            if existing.consent_date is not None and consent.consent_date <= existing.consent_date:
                # Same fixed-width format, so string order is chronological order.
                raise WriteRejected(
                    error_item("H178", location=["consentDate"], value=consent.consent_date, index=index)
                )
        record = StoredConsent(
            brand_code=brand_code,
            recipient=consent.recipient,
            recipient_type=consent.recipient_type,
            consent_type=consent.consent_type,
            status=consent.status,
            consent_date=consent.consent_date,
            source=consent.source,
            creation_date=format_turkey_time(now_epoch),
            transaction_id=self.new_transaction_id(),
            origin_request_id=origin[0] if origin else None,
            origin_sub_request_id=origin[1] if origin else None,
        )
        created = self.put(record)
        self.append_event(record, int(now_epoch * 1000))
        return record, created

    # -- change feed ---------------------------------------------------------------------------
    def events_after(
        self,
        brand_code: int,
        stream: str,
        after: tuple[int, str] | None,
        window_start_ms: int,
        window_end_ms: int,
        limit: int,
    ) -> list[ConsentEvent]:
        """Events with window_start <= creation <= window_end, strictly after ``after``, oldest first."""
        event_stream = self.streams.get((brand_code, stream))
        if event_stream is None:
            return []
        events, keys = event_stream.sorted_view()
        if after is not None and after[0] >= window_start_ms:
            start = event_stream.start_after(*after)
        else:
            start = bisect.bisect_left(keys, (window_start_ms, -1))
        selected = []
        for position in range(start, len(events)):
            event = events[position]
            if event.creation_ms > window_end_ms or len(selected) >= limit:
                break
            selected.append(event)
        return selected

    def all_events(self) -> list[ConsentEvent]:
        merged = []
        for event_stream in self.streams.values():
            merged.extend(event_stream.sorted_view()[0])
        merged.sort(key=lambda event: event.sort_key)
        return merged

    # -- brand statistics ------------------------------------------------------------------------
    def brand_stats(self, brand_code: int) -> dict[str, int]:
        approval = rejection = 0
        for record in self.records.values():
            if record.brand_code == brand_code:
                if record.status == "ONAY":
                    approval += 1
                else:
                    rejection += 1
        synthetic = self._synthetic_stats(brand_code)
        approval += synthetic["ONAY"] - self._synthetic_overridden.get((brand_code, "ONAY"), 0)
        rejection += synthetic["RET"] - self._synthetic_overridden.get((brand_code, "RET"), 0)
        return {"approval": approval, "rejection": rejection, "total": approval + rejection}

    def _synthetic_stats(self, brand_code: int) -> dict[str, int]:
        # Expected counts (users × 3 types × ratio): exact counts would hash millions of pairs under
        # the lock, and brand statistics are informational only.
        stats = {"ONAY": 0, "RET": 0}
        for population in self.populations:
            if population.brand_codes and brand_code not in population.brand_codes:
                continue
            pairs = population.count * 3
            stats["ONAY"] += round(pairs * population.onay_ratio)
            stats["RET"] += round(pairs * population.ret_ratio)
        return stats

    def add_population(self, population: SyntheticPopulation) -> None:
        self.populations.append(population)
