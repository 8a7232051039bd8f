"""The reconciliation's pure rules: İYS's file format, the hash method, the 7-day window, the verdict tables."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import pytest

from iys_provider.models import IYS_TIMEZONE
from iys_provider.reconciliation import (
    FILE_FORMATS,
    AgreementCaptured,
    AgreementInfo,
    DailyChangeSummaryResponse,
    DayStatus,
    Difference,
    HashJobVerdict,
    MultiHasher,
    algorithm_for,
    day_status,
    describe_hash_method,
    file_format,
    hash_job_verdict,
    hashes_match,
    normalise_hash_method,
    outside_window_reason,
    parse_file_lines,
    reconciliation_window,
    summary_differences,
    summary_from_counts,
    summary_from_iys,
    turkey_day_bounds,
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
    ],
)
def test_each_documented_variant_is_selectable_by_name(name, header, row):
    fmt = FILE_FORMATS[name]
    assert (fmt.header_bytes(), fmt.row_bytes(MOVEMENT)) == (header, row)


def test_a_value_with_a_comma_or_quote_is_quoted_as_rfc_4180_says():
    row = file_format("literal").row_bytes({**MOVEMENT, "recipient": 'a,"b"@example.com'})
    assert b',"a,""b""@example.com",' in row


def test_an_unknown_format_names_the_known_ones():
    with pytest.raises(
        ValueError, match="known: \\['crlf', 'faq_seven_columns', 'literal', 'no_header', 'utf8_bom'\\]"
    ):
        file_format("tsv")


def test_the_file_reads_back_by_its_header_or_by_the_format():
    lines = [HEADER, ROW]
    assert list(parse_file_lines(iter(lines), file_format("literal"))) == [
        {
            "creationDate": "2026-11-27 23:58:53",
            "transactionId": "a" * 64,
            "recipient": "+905321110001",
            "recipientType": "BIREYSEL",
            "type": "MESAJ",
            "status": "RET",
            "consentDate": "",
            "source": "IYS_AHS_HAT_KAPATMA",
        }
    ]
    # İYS's header in another order decides the columns.
    reordered = "transactionId,creationDate,recipient,recipientType,type,status,consentDate,source\n"
    row = f"{'b' * 64},2026-11-27 10:00:00,x@example.com,BIREYSEL,EPOSTA,ONAY,2026-11-27 09:59:00,IYS_WEB\n"
    parsed = next(parse_file_lines(iter([reordered, row]), file_format("literal")))
    assert parsed["transactionId"] == "b" * 64 and parsed["creationDate"] == "2026-11-27 10:00:00"
    assert next(parse_file_lines(iter([ROW]), file_format("no_header")))["status"] == "RET"
    with pytest.raises(ValueError, match="line 2 of İYS's file has 3 fields, expected 8"):
        list(parse_file_lines(iter([HEADER, "a,b,c\n"]), file_format("literal")))


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
    ("answer", "queued_for", "empty", "verdict"),
    [
        (None, None, True, HashJobVerdict.NO_MOVEMENTS),
        (None, None, False, HashJobVerdict.WAIT),
        (info("queued"), timedelta(minutes=5), False, HashJobVerdict.WAIT),
        (info("queued"), timedelta(hours=2), False, HashJobVerdict.STUCK),
        (info("inprogress"), None, False, HashJobVerdict.WAIT),
        (info("hashing"), None, False, HashJobVerdict.WAIT),
        (info("completed", "ab" * 48), None, False, HashJobVerdict.COMPLETED),
        (info("completed"), None, False, HashJobVerdict.WAIT),
        (info("error"), None, False, HashJobVerdict.ERROR),
        (info("ERROR"), None, False, HashJobVerdict.ERROR),
    ],
)
def test_hash_job_verdicts(answer, queued_for, empty, verdict):
    assert hash_job_verdict(answer, queued_for=queued_for, max_queued=timedelta(hours=2), day_is_empty=empty) is verdict


def test_day_statuses():
    assert day_status(matched_first=True, matched_after_repair=None) is DayStatus.AGREED
    assert day_status(matched_first=False, matched_after_repair=True) is DayStatus.REPAIRED_AND_AGREED
    assert day_status(matched_first=False, matched_after_repair=False) is DayStatus.MISMATCH
    assert day_status(matched_first=False, matched_after_repair=None) is DayStatus.MISMATCH


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
    }
