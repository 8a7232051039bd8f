"""The reconciliation's pure rules: İYS's file format, the hash method, the 7-day window, the verdict tables."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest

from iys_provider.models import IYS_TIMEZONE
from iys_provider.reconciliation.rules import (
    EIGHT_COLUMNS,
    FILE_FORMATS,
    SEVEN_COLUMNS,
    AgreementCaptured,
    AgreementInfo,
    DailyChangeSummaryResponse,
    DayStatus,
    Difference,
    FileFormat,
    FileReading,
    HashJobVerdict,
    MultiHasher,
    algorithm_for,
    day_status,
    describe_hash_method,
    detect_file_format,
    file_format,
    hash_job_verdict,
    hashes_match,
    last_chance,
    mask_transaction_id,
    mismatch_detail,
    normalise_hash_method,
    outside_window_reason,
    read_file_rows,
    reconciliation_window,
    summary_differences,
    summary_from_counts,
    summary_from_iys,
    turkey_day_bounds,
    waiting_for_iys,
    waiting_reason,
)

MOVEMENT = {
    "creationDate": datetime(2026, 11, 27, 23, 58, 53, tzinfo=IYS_TIMEZONE),
    "transactionId": "a" * 64,
    "recipient": "+905321110001",
    "recipientType": "BIREYSEL",
    "type": "MESAJ",
    "status": "RET",
    "consentDate": None,
    "source": "IYS_AHS_HAT_KAPATMA",
}
HEADER = "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source\n"
ROW = f"2026-11-27 23:58:53,{'a' * 64},+905321110001,BIREYSEL,MESAJ,RET,,IYS_AHS_HAT_KAPATMA\n"


def turkey(*args) -> datetime:
    return datetime(*args, tzinfo=IYS_TIMEZONE)


# ---------------------------------------------------------------------- the file (golden bytes)


def test_the_literal_format_is_a_header_and_comma_separated_lines_ending_in_newline():
    fmt = file_format("literal")
    assert fmt.header_bytes() == HEADER.encode()
    assert fmt.row_bytes(MOVEMENT) == ROW.encode()
    # A UTC datetime is written in Turkey time (the same instant).
    utc = {**MOVEMENT, "creationDate": MOVEMENT["creationDate"].astimezone(UTC)}
    assert fmt.row_bytes(utc) == ROW.encode()


@pytest.mark.parametrize(
    ("name", "header", "row"),
    [
        ("no_header", b"", ROW.encode()),
        ("crlf", HEADER.replace("\n", "\r\n").encode(), ROW.replace("\n", "\r\n").encode()),
        ("utf8_bom", b"\xef\xbb\xbf" + HEADER.encode(), ROW.encode()),
        (
            "faq_seven_columns",
            b"creationDate,transactionId,recipient,recipientType,type,consentDate,source,\n",
            f"2026-11-27 23:58:53,{'a' * 64},+905321110001,BIREYSEL,MESAJ,,IYS_AHS_HAT_KAPATMA,\n".encode(),
        ),
        (
            "seven_columns",
            b"creationDate,transactionId,recipient,recipientType,type,consentDate,source\n",
            f"2026-11-27 23:58:53,{'a' * 64},+905321110001,BIREYSEL,MESAJ,,IYS_AHS_HAT_KAPATMA\n".encode(),
        ),
        ("trailing_delimiter", HEADER.replace("\n", ",\n").encode(), ROW.replace("\n", ",\n").encode()),
    ],
)
def test_each_documented_variant_is_selectable_by_name(name, header, row):
    fmt = FILE_FORMATS[name]
    assert (fmt.header_bytes(), fmt.row_bytes(MOVEMENT)) == (header, row)
    assert fmt.name == name and file_format(name) == fmt


def test_variants_combine_with_a_plus_and_the_name_reads_back():
    fmt = file_format("crlf+no_header+utf8_bom+faq_seven_columns")
    assert fmt.header_bytes() == b"\xef\xbb\xbf"
    assert fmt.row_bytes(MOVEMENT) == (
        f"2026-11-27 23:58:53,{'a' * 64},+905321110001,BIREYSEL,MESAJ,,IYS_AHS_HAT_KAPATMA,\r\n".encode()
    )
    assert fmt.name == "no_header+crlf+utf8_bom+faq_seven_columns"
    assert file_format(fmt.name) == fmt
    assert file_format("auto") is None and file_format("") is None


def test_a_value_with_a_comma_or_quote_is_quoted_as_rfc_4180_says():
    row = file_format("literal").row_bytes({**MOVEMENT, "recipient": 'a,"b"@example.com'})
    assert b',"a,""b""@example.com",' in row


def test_an_unknown_format_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown reconciliation file format 'tsv'; known: 'auto', .*'crlf'"):
        file_format("tsv")
    with pytest.raises(ValueError, match="unknown reconciliation file format 'crlf\\+tabs'"):
        file_format("crlf+tabs")


# ---------------------------------------------------------------------- reading İYS's file by its content

EIGHT_NAMES = "creationDate,transactionId,recipient,recipientType,type,status,consentDate,source"
SEVEN_NAMES = "creationDate,transactionId,recipient,recipientType,type,consentDate,source"
RET_8 = f"2026-11-27 09:00:00,{'1' * 64},+905321110001,BIREYSEL,MESAJ,RET,2026-11-27 08:59:00,IYS_KISAMESAJ"
RET_7 = f"2026-11-27 09:00:00,{'1' * 64},+905321110001,BIREYSEL,MESAJ,2026-11-27 08:59:00,IYS_KISAMESAJ"
ONAY_8 = f"2026-11-27 10:00:00,{'2' * 64},ayse@example.com,TACIR,EPOSTA,ONAY,,IYS_WEB"
ONAY_7 = f"2026-11-27 10:00:00,{'2' * 64},ayse@example.com,TACIR,EPOSTA,,IYS_WEB"
READINGS = [
    (header, line_end, bom, columns)
    for header in (True, False)
    for line_end in ("\n", "\r\n")
    for bom in (False, True)
    for columns in ("eight", "seven_with_comma", "seven")
]
MOVEMENTS = (
    {
        "creationDate": "2026-11-27 09:00:00",
        "transactionId": "1" * 64,
        "recipient": "+905321110001",
        "recipientType": "BIREYSEL",
        "type": "MESAJ",
        "status": "RET",
        "consentDate": "2026-11-27 08:59:00",
        "source": "IYS_KISAMESAJ",
    },
    {
        "creationDate": "2026-11-27 10:00:00",
        "transactionId": "2" * 64,
        "recipient": "ayse@example.com",
        "recipientType": "TACIR",
        "type": "EPOSTA",
        "status": "ONAY",
        "consentDate": None,
        "source": "IYS_WEB",
    },
)


def served(header: bool, line_end: str, bom: bool, columns: str) -> bytes:
    """A file as İYS might serve it, written out by hand (not by the code under test)."""
    eight = columns == "eight"
    comma = "," if columns == "seven_with_comma" else ""
    lines = [EIGHT_NAMES if eight else SEVEN_NAMES] if header else []
    lines += [RET_8, ONAY_8] if eight else [RET_7, ONAY_7]
    text = "".join(line + comma + line_end for line in lines)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


@pytest.mark.parametrize(("header", "line_end", "bom", "columns"), READINGS)
def test_every_reading_and_combination_is_recognised_and_every_movement_read(header, line_end, bom, columns):
    data = served(header, line_end, bom, columns)
    detected = detect_file_format(data)
    assert detected.fmt == FileFormat(
        columns=EIGHT_COLUMNS if columns == "eight" else SEVEN_COLUMNS,
        header=header,
        line_end=line_end,
        bom=bom,
        trailing_delimiter=columns == "seven_with_comma",
    )
    # Our file written in the detected reading is byte for byte the file served.
    fmt = detected.fmt
    assert fmt.header_bytes() + b"".join(fmt.row_bytes(movement) for movement in MOVEMENTS) == data
    # Read back: both movements, the first one included, nothing unreadable.
    reading = FileReading()
    rows = list(read_file_rows(iter(data.splitlines(keepends=True)), fmt, reading))
    assert [row["transactionId"] for row in rows] == ["1" * 64, "2" * 64]
    assert rows[0]["recipient"] == "+905321110001" and rows[0].get("status") == ("RET" if columns == "eight" else None)
    assert rows[1]["consentDate"] == "" and rows[1]["source"] == "IYS_WEB"
    assert (reading.rows, reading.unreadable, reading.header) == (2, 0, header)
    assert ("status" in reading.columns) is (columns == "eight")


def test_a_file_without_header_keeps_its_first_movement_even_when_told_there_is_a_header():
    """Line 1 is a header only when it holds İYS's column names."""
    reading = FileReading()
    lines = [(RET_8 + "\n").encode(), (ONAY_8 + "\n").encode()]
    rows = list(read_file_rows(iter(lines), FILE_FORMATS["literal"], reading))
    assert [row["status"] for row in rows] == ["RET", "ONAY"] and reading.header is False


def test_a_header_in_another_order_or_case_names_the_columns():
    header = "TransactionID,creationdate,recipient,recipientType,type,status,consentDate,source\n"
    row = f"{'b' * 64},2026-11-27 10:00:00,x@example.com,BIREYSEL,EPOSTA,ONAY,2026-11-27 09:59:00,IYS_WEB\n"
    detected = detect_file_format((header + row).encode()).fmt
    assert detected.columns[:2] == ("transactionId", "creationDate")
    assert detected.header_bytes() == header.encode()  # our header is written as İYS spelled it
    assert file_format(detected.name) == detected
    parsed = next(read_file_rows(iter([header.encode(), row.encode()]), detected, FileReading()))
    assert parsed["transactionId"] == "b" * 64 and parsed["creationDate"] == "2026-11-27 10:00:00"


def test_every_unreadable_line_is_reported_with_its_number_and_reason_and_the_rest_is_read():
    lines = [
        (EIGHT_NAMES + "\n").encode(),
        (RET_8 + "\n").encode(),
        b"\n",
        b"a,b,c\n",
        b"\xff\xfe not utf-8\n",
        b"2026-11-27 10:00:00,,+905321110001,BIREYSEL,MESAJ,RET,,IYS_WEB\n",
        f"27.11.2026 10:00,{'3' * 64},+905321110001,BIREYSEL,MESAJ,RET,,IYS_WEB\n".encode(),
        (ONAY_8 + "\n").encode(),
    ]
    reading = FileReading()
    rows = list(read_file_rows(iter(lines), FILE_FORMATS["literal"], reading))
    assert [row["transactionId"] for row in rows] == ["1" * 64, "2" * 64]
    assert reading.unreadable == 5
    assert reading.unreadable_lines == [
        "line 3: blank line",
        "line 4: 3 fields, expected 8",
        "line 5: not UTF-8",
        "line 6: no transactionId",
        "line 7: creationDate is not YYYY-MM-DD HH:mm:ss",
    ]
    assert "+90532" not in " ".join(reading.unreadable_lines)  # no address in what is recorded


def test_a_first_line_that_is_neither_header_nor_movement_is_named():
    assert detect_file_format(b"").reason == "İYS's file is empty"
    assert "neither its column names nor a movement (2 fields)" in detect_file_format(b"hello,world\n").reason
    assert detect_file_format(b"\xff\xfe\n").reason == "the first line of İYS's file is not UTF-8"


# ---------------------------------------------------------------------- the hash method


@pytest.mark.parametrize("spelling", ["SHA384", "SHA-384", "sha384", "Sha_384", " SHA-384 "])
def test_both_spellings_of_sha384_are_read(spelling):
    assert normalise_hash_method(spelling) == "sha384"
    assert algorithm_for(spelling, "f" * 96) == "sha384"


def test_a_64_character_value_is_compared_as_sha256_whatever_hash_method_says():
    """İYS's examples are 64 hex characters under hashMethod SHA384: the length decides."""
    assert algorithm_for("SHA384", "F" * 64) == "sha256"
    assert describe_hash_method("SHA384", "f" * 64) == "sha256 (by the value's length; hashMethod 'SHA384')"
    assert algorithm_for(None, "f" * 96) == "sha384"
    with pytest.raises(ValueError, match="50 hex characters"):
        algorithm_for("SHA384", "f" * 50)
    with pytest.raises(ValueError, match="not hexadecimal"):
        algorithm_for("SHA384", "xyz")


def test_one_pass_hashes_with_every_algorithm_and_compares_in_lower_case():
    hasher = MultiHasher()
    for block in (b"creationDate,", b"transactionId\n"):
        hasher.update(block)
    digests = hasher.hexdigests()
    data = b"creationDate,transactionId\n"
    assert digests == {"sha384": hashlib.sha384(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
    assert hasher.size == len(data)
    assert hashes_match(digests, "SHA-384", hashlib.sha384(data).hexdigest().upper())
    assert hashes_match(digests, "SHA384", hashlib.sha256(data).hexdigest())
    assert not hashes_match(digests, "SHA384", hashlib.sha384(b"other").hexdigest())


# ---------------------------------------------------------------------- the window (Turkey time)


def test_the_window_is_d1_to_d7_in_turkey_time():
    # 22:30 UTC on the 27th is already 01:30 on the 28th in Turkey.
    window = reconciliation_window(datetime(2026, 11, 27, 22, 30, tzinfo=UTC))
    assert window == [date(2026, 11, 27) - timedelta(days=n) for n in range(0, 7)]
    assert window[0] == date(2026, 11, 27) and window[-1] == date(2026, 11, 21)


def test_near_midnight_the_edge_day_is_left_out():
    just_after = reconciliation_window(turkey(2026, 11, 28, 0, 5))
    assert just_after[0] == date(2026, 11, 26) and just_after[-1] == date(2026, 11, 21)  # no D-1: İYS may be behind
    just_before = reconciliation_window(turkey(2026, 11, 28, 23, 50))
    assert just_before[0] == date(2026, 11, 27) and just_before[-1] == date(2026, 11, 22)  # no D-7: İYS may be ahead
    assert len(reconciliation_window(turkey(2026, 11, 28, 12, 0))) == 7
    with pytest.raises(ValueError, match="timezone-aware"):
        reconciliation_window(datetime(2026, 11, 28, 12, 0))


def test_a_day_outside_the_window_is_refused_with_the_reason():
    now = turkey(2026, 11, 28, 12, 0)
    assert outside_window_reason(date(2026, 11, 21), now) is None
    assert "older than İYS's 7-day" in outside_window_reason(date(2026, 11, 20), now)
    assert "422 H502" in outside_window_reason(date(2026, 11, 20), now)
    assert "not a completed day" in outside_window_reason(date(2026, 11, 28), now)
    assert "not a completed day" in outside_window_reason(date(2026, 12, 1), now)
    assert "edge" in outside_window_reason(date(2026, 11, 21), turkey(2026, 11, 28, 23, 55))


def test_a_day_is_bounded_by_turkey_midnights():
    start, end = turkey_day_bounds(date(2026, 11, 27))
    assert start.astimezone(UTC) == datetime(2026, 11, 26, 21, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)


# ---------------------------------------------------------------------- summaries


def test_summaries_add_up_both_recipient_types_and_compare_approvals_and_rejections():
    bireysel = DailyChangeSummaryResponse.model_validate(
        {
            "changeStats": [
                {
                    "type": "MESAJ",
                    "consents": [{"source": "HS", "approval": 38, "rejection": 2, "pending": 1, "total": 41}],
                }
            ]
        }
    )
    tacir = DailyChangeSummaryResponse.model_validate(
        {"changeStats": [{"type": "MESAJ", "consents": [{"source": "IYS", "approval": 0, "rejection": 1, "total": 1}]}]}
    )
    iys = summary_from_iys([bireysel, tacir])
    assert iys["MESAJ"]["HS"] == {"approval": 38, "rejection": 2, "pending": 1, "total": 41}
    assert iys["MESAJ"]["IYS"] == {"approval": 0, "rejection": 1, "pending": 0, "total": 1}
    assert iys["EPOSTA"]["HS"]["total"] == 0
    ours = summary_from_counts([("MESAJ", "HS", "ONAY", 38), ("MESAJ", "HS", "RET", 2), ("MESAJ", "IYS", "RET", 1)])
    assert summary_differences(ours, iys) == []
    ours = summary_from_counts([("MESAJ", "HS", "ONAY", 37), ("MESAJ", "HS", "RET", 2)])
    assert summary_differences(ours, iys) == [
        "MESAJ/HS approval: ours 37, İYS 38",
        "MESAJ/IYS rejection: ours 0, İYS 1",
    ]


def test_agreement_answers_are_read_with_both_spellings():
    assert AgreementCaptured.model_validate({"agreementCaptured": True}).captured
    assert AgreementCaptured.model_validate({"aggrementCaptured": True}).captured
    info = AgreementInfo.model_validate({"processStatus": "completed", "hashValue": "ab", "hashMethod": "SHA-384"})
    assert (info.process_status, info.agreement_status) == ("completed", False)


# ---------------------------------------------------------------------- verdict tables


def info(status: str, hash_value: str | None = None) -> AgreementInfo:
    return AgreementInfo.model_validate({"processStatus": status, "hashValue": hash_value})


@pytest.mark.parametrize(
    ("answer", "waited_for", "empty", "verdict"),
    [
        (None, None, True, HashJobVerdict.NO_MOVEMENTS),
        (None, timedelta(minutes=1), False, HashJobVerdict.WAIT),
        (None, timedelta(minutes=15), False, HashJobVerdict.TOO_LONG),
        (info("queued"), timedelta(minutes=5), False, HashJobVerdict.WAIT),
        (info("queued"), timedelta(minutes=15), False, HashJobVerdict.TOO_LONG),
        (info("inprogress"), timedelta(minutes=14, seconds=59), False, HashJobVerdict.WAIT),
        (info("inprogress"), timedelta(hours=3), False, HashJobVerdict.TOO_LONG),
        (info("hashing"), None, False, HashJobVerdict.WAIT),
        (info("completed", "ab" * 48), timedelta(hours=3), False, HashJobVerdict.COMPLETED),
        (info("completed"), None, False, HashJobVerdict.WAIT),
        (info("error"), timedelta(hours=3), False, HashJobVerdict.ERROR),
        (info("ERROR"), None, False, HashJobVerdict.ERROR),
    ],
)
def test_hash_job_verdicts(answer, waited_for, empty, verdict):
    assert (
        hash_job_verdict(answer, waited_for=waited_for, max_wait=timedelta(minutes=15), day_is_empty=empty) is verdict
    )


def test_a_day_left_waiting_says_since_when_and_why():
    since = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 05:00 in Turkey
    reason = waiting_reason("queued", since, timedelta(minutes=15))
    assert reason.startswith("İYS's hash job was 'queued' since 2026-11-28 05:00 Turkey time, past the 15 min wait")
    assert "stays queued" in reason
    assert "had no hash for the day (204)" in waiting_reason("no_value", since, timedelta(minutes=15))
    waiting = {"status": "pending", "hash_waiting_since": since, "hash_iys": None}
    assert waiting_for_iys(waiting)
    assert not waiting_for_iys({**waiting, "status": "mismatch"})
    assert not waiting_for_iys({**waiting, "hash_waiting_since": None})


def test_a_day_has_its_last_chance_when_it_is_the_oldest_in_the_window():
    now = turkey(2026, 11, 28, 5, 0)
    assert last_chance(date(2026, 11, 21), now)
    assert not last_chance(date(2026, 11, 22), now)


def test_day_statuses():
    assert day_status(matched_first=True, matched_after_repair=None) is DayStatus.AGREED
    assert day_status(matched_first=False, matched_after_repair=True, stored=1) is DayStatus.REPAIRED_AND_AGREED
    # Equal once written in the reading İYS's file showed, nothing stored: agreed, not repaired.
    assert day_status(matched_first=False, matched_after_repair=True, stored=0) is DayStatus.AGREED
    assert day_status(matched_first=False, matched_after_repair=False, stored=3) is DayStatus.MISMATCH
    assert day_status(matched_first=False, matched_after_repair=None) is DayStatus.MISMATCH


def test_a_mismatch_says_what_differed_and_blames_the_format_only_when_nothing_else_differs():
    assert mask_transaction_id("0123456789abcdef" * 4) == "012345…cdef"
    difference = {
        "missing": {"MESAJ": {"IYS": 2}},
        "extra": {"EPOSTA": {"HS": 1}},
        "missing_total": 2,
        "changed_total": 0,
        "extra_total": 1,
        "examples": {"missing": ["111111…1111", "222222…2222"], "extra": ["777777…7777"]},
        "file": {"unreadable": 1, "unreadable_lines": ["line 9: blank line"]},
    }
    detail = mismatch_detail(
        algorithm="sha384", difference=difference, file_hash_is_iys_hash=True, fmt_name="literal", stored=0
    )
    assert detail == (
        "our hash still differs from İYS's (sha384); "
        "2 in İYS's file, missing from ours (MESAJ/IYS 2; first: 111111…1111, 222222…2222); "
        "1 ours, not in İYS's file (EPOSTA/HS 1; first: 777777…7777); "
        "1 lines of İYS's file could not be read (line 9: blank line)"
    )
    same = {"missing_total": 0, "changed_total": 0, "extra_total": 0, "file": {"unreadable": 0}}
    only_bytes = mismatch_detail(algorithm="sha384", difference=same, file_hash_is_iys_hash=True, fmt_name="crlf")
    assert "holds exactly our movements: only the bytes of our file differ from İYS's (read as crlf)" in only_bytes
    foreign = mismatch_detail(algorithm="sha384", difference=same, file_hash_is_iys_hash=False, fmt_name="literal")
    assert "İYS's own file does not hash to İYS's value either" in foreign and "only the bytes" not in foreign
    unresolved = mismatch_detail(
        algorithm="sha384", difference=difference, file_hash_is_iys_hash=True, fmt_name="x", stored=1, unresolved=1
    )
    assert "1 stored from İYS's file, 1 not stored (İYS's status unknown for them)" in unresolved


def test_a_difference_counts_by_channel_and_source():
    difference = Difference()
    difference.add("missing", "MESAJ", "IYS", 2)
    difference.add("missing", "MESAJ", "IYS", 1)
    difference.add("extra", "EPOSTA", "HS", 1)
    assert difference.to_json() == {
        "missing": {"MESAJ": {"IYS": 3}},
        "changed": {},
        "extra": {"EPOSTA": {"HS": 1}},
        "missing_total": 3,
        "changed_total": 0,
        "extra_total": 1,
        "examples": {},
    }
