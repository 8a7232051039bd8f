"""Our day file out of Postgres (COPY) is byte for byte what the pure format writes, in İYS's order and day."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from iys_provider.models import IYS_TIMEZONE
from iys_provider.reconciliation.rules import FILE_FORMATS, MultiHasher
from iys_provider.reconciliation.store import day_summary, read_reconciliation, save_reconciliation, stream_day_file
from iys_provider.schema import migrate

BRAND = 700001
DAY = date(2026, 11, 27)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=IYS_TIMEZONE)


# (transaction id, recipient, recipient type, type, status, consent date, creation date, source)
EVENTS = [
    ("c" * 64, "+905321110001", "BIREYSEL", "MESAJ", "ONAY", at(27, 9), at(27, 9, 0, 5), "HS_WEB"),
    ("b" * 64, "ayse@example.com", "BIREYSEL", "EPOSTA", "RET", at(27, 10), at(27, 9, 0, 5), "IYS_WEB"),
    ("0" * 64, "+905321110002", "TACIR", "ARAMA", "RET", None, at(27, 0, 0, 0), "IYS_AHS_HAT_KAPATMA"),
    ("d" * 64, "+905321110003", "BIREYSEL", "MESAJ", "ONAY", at(27, 23), at(27, 23, 59, 59), "HS_MOBIL"),
    # Outside the day in Turkey time, though the first is on the 27th in UTC.
    ("e" * 64, "+905321110004", "BIREYSEL", "MESAJ", "ONAY", at(28, 0), at(28, 0, 0, 0), "HS_WEB"),
    ("f" * 64, "+905321110005", "BIREYSEL", "MESAJ", "ONAY", at(26, 23), at(26, 23, 59, 59), "HS_WEB"),
]
NAMES = ("transactionId", "recipient", "recipientType", "type", "status", "consentDate", "creationDate", "source")


@pytest.fixture
def events(pg):
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    migrate(pg)
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO iys.consent_events (transaction_id, brand_code, recipient, recipient_type, type, status, "
            "consent_date, creation_date, source, stream) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(e[0], BRAND, *e[1:], "IYS" if e[7].startswith("IYS_") else "HS") for e in EVENTS],
        )
    return pg


@pytest.mark.parametrize("name", sorted(FILE_FORMATS))
def test_postgres_writes_the_day_exactly_as_the_format_does(events, name):
    fmt = FILE_FORMATS[name]
    blocks: list[bytes] = []
    rows = stream_day_file(events, BRAND, DAY, fmt, blocks.append)
    in_day = sorted((e for e in EVENTS if e[6].date() == DAY), key=lambda e: (e[6], e[0].encode()))
    expected = fmt.header_bytes() + b"".join(fmt.row_bytes(dict(zip(NAMES, e, strict=True))) for e in in_day)
    assert rows == 4
    assert b"".join(blocks) == expected
    assert b"".join(blocks).endswith(fmt.line_end.encode())


def test_the_day_order_is_creation_date_then_transaction_id_byte_by_byte(events):
    blocks: list[bytes] = []
    stream_day_file(events, BRAND, DAY, FILE_FORMATS["no_header"], blocks.append)
    ids = [line.split(b",")[1].decode()[0] for line in b"".join(blocks).splitlines()]
    assert ids == ["0", "b", "c", "d"]


def test_our_summary_counts_the_day_per_channel_source_and_status(events):
    summary = day_summary(events, BRAND, DAY)
    assert summary["MESAJ"]["HS"] == {"approval": 2, "rejection": 0, "pending": 0, "total": 2}
    assert summary["ARAMA"]["IYS"] == {"approval": 0, "rejection": 1, "pending": 0, "total": 1}
    assert summary["EPOSTA"]["IYS"]["rejection"] == 1


def test_a_day_row_is_written_and_updated_column_by_column(events):
    save_reconciliation(events, BRAND, DAY, run_id="r1", summary_ours={"MESAJ": {}})
    save_reconciliation(events, BRAND, DAY, status="agreed", hash_ours="ab")
    row = read_reconciliation(events, BRAND, DAY)
    assert (row["status"], row["run_id"], row["summary_ours"], row["hash_ours"]) == (
        "agreed",
        "r1",
        {"MESAJ": {}},
        "ab",
    )
    with pytest.raises(ValueError, match="not columns of iys.reconciliations"):
        save_reconciliation(events, BRAND, DAY, updated_at=None)


def test_hashing_streams_block_by_block(events):
    hasher = MultiHasher()
    stream_day_file(events, BRAND, DAY, FILE_FORMATS["literal"], hasher.update)
    blocks: list[bytes] = []
    stream_day_file(events, BRAND, DAY, FILE_FORMATS["literal"], blocks.append)
    import hashlib

    assert hasher.hexdigests()["sha384"] == hashlib.sha384(b"".join(blocks)).hexdigest()


def test_the_file_is_compared_by_transaction_id_and_the_repair_goes_through_the_feed_rules(events):
    from iys_provider.reconciliation.store import compare_with_file, drop_file_stage, load_iys_file, repair_from_file

    fmt = FILE_FORMATS["literal"]
    in_day = sorted((e for e in EVENTS if e[6].date() == DAY), key=lambda e: (e[6], e[0].encode()))
    movements = [dict(zip(NAMES, e, strict=True)) for e in in_day]
    movements[1] = {**movements[1], "status": "ONAY"}  # İYS holds "b…" differently (changed)
    missing = {
        "transactionId": "9" * 64,
        "recipient": "+905321110009",
        "recipientType": "BIREYSEL",
        "type": "MESAJ",
        "status": "ONAY",
        "consentDate": at(27, 12),
        "creationDate": at(27, 12, 0, 1),
        "source": "HS_CAGRI_MERKEZI",
    }
    del movements[-1]  # "d…" is ours only (extra)
    lines = (fmt.header_bytes() + b"".join(fmt.row_bytes(m) for m in [*movements, missing])).splitlines(True)
    save_reconciliation(events, BRAND, DAY, run_id="r1")
    try:
        reading = load_iys_file(events, iter(lines), fmt)
        assert (reading.rows, reading.unreadable, reading.header) == (4, 0, True)
        difference = compare_with_file(events, BRAND, DAY, with_status=True)
        assert difference.to_json()["missing"] == {"MESAJ": {"HS": 1}}
        assert difference.to_json()["changed"] == {"EPOSTA": {"IYS": 1}}
        assert difference.to_json()["extra"] == {"MESAJ": {"HS": 1}}
        assert difference.examples == {"missing": ["999999…9999"], "changed": ["bbbbbb…bbbb"], "extra": ["dddddd…dddd"]}
        outcome = repair_from_file(events, BRAND, DAY)
        assert (outcome.stored, outcome.status_from, outcome.by_status) == (2, "file", {"ONAY": 2})
    finally:
        drop_file_stage(events)
    stored = events.execute(
        "SELECT transaction_id, status, stream FROM iys.consent_events WHERE transaction_id IN (%s, %s) "
        "ORDER BY transaction_id",
        ("9" * 64, "b" * 64),
    ).fetchall()
    assert stored == [("9" * 64, "ONAY", "HS"), ("b" * 64, "ONAY", "IYS")]
    listed = events.execute(
        "SELECT left(transaction_id, 1), kind, repaired FROM iys.reconciliation_movements ORDER BY 1"
    ).fetchall()
    assert listed == [("9", "missing", True), ("b", "changed", True), ("d", "extra", False)]
    # The feed's cursors never moved: the repair is not a pull.
    assert events.execute("SELECT count(*) FROM iys.sync_state").fetchone()[0] == 0
