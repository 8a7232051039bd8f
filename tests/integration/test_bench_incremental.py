"""bench/bench_incremental.py pulls a night of feed movements, pushes an outbox, and reports each phase."""

from __future__ import annotations

import json

from tests_support import run_bench_script

MOVEMENTS, OUTBOX = 2000, 200
PHASES = ["pull_iys", "pull_hs", "push", "collect"]


def test_incremental_benchmark_applies_every_movement_settles_the_outbox_and_drops_its_database(
    postgres_server_uri, tmp_path
):
    output = tmp_path / "incremental.md"
    args = ["--movements", str(MOVEMENTS), "--outbox", str(OUTBOX), "--rates", "10", "--output", str(output)]
    result = run_bench_script("bench_incremental.py", args, postgres_server_uri, "iys_bench_incremental_")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["problems"] == []
    (run,) = report["runs"]
    assert run["rate_limit_per_second"] == 10 and run["database_dropped"]

    # Every movement of both feeds pulled; a movement served twice is stored once.
    streams, pulls = run["streams"], run["pull_results"]
    assert streams["IYS"]["movements"] + streams["HS"]["movements"] == MOVEMENTS
    assert run["replays"] > 0 and run["new_addresses"] > 0
    for stream in ("IYS", "HS"):
        assert streams[stream]["movements"] > 0
        assert pulls[stream]["pulled"] == streams[stream]["movements"]
        assert pulls[stream]["new"] == streams[stream]["distinct"]
    assert sum(streams[s]["movements"] - streams[s]["distinct"] for s in streams) == run["replays"]

    # Our copy is İYS's truth, after the pulls and after the outbox went out.
    for check in (run["truth_after_pull"], run["truth_at_end"]):
        assert check["addresses"] >= run["existing_addresses"]
        assert (check["mismatched"], check["unknown_to_iys"]) == (0, 0)

    # Each outbox row ends as its kind calls for.
    kinds = run["outbox_kinds"]
    assert sum(kinds.values()) == OUTBOX and all(kinds.values())
    sent = kinds["ret_onay"] + kinds["onay_after_ret"]
    states = {(s["state"], s["error_code"]): s["rows"] for s in run["outbox_check"]["states"]}
    assert states == {
        ("sent", None): sent,
        ("skipped", "SAME_STATUS"): kinds["onay_onay"],
        ("skipped", "NOT_ONAY_IN_IYS"): kinds["ret_ret"],
        ("skipped", "SUPERSEDED"): kinds["superseded"],
        ("skipped", "NOT_IN_IYS"): kinds["onay_unknown"],
        ("rejected", "INVALID_RECIPIENT_PHONE_INVALID"): kinds["invalid"],
        ("rejected", "EXPIRED"): kinds["expired"],
    }
    assert run["outbox_check"]["wrong"] == {}
    assert run["push_result"]["submitted"] == sent
    assert run["sensor_done"] and run["sensor_settled"]["sent"] == sent

    # Per phase: the fewest requests the data allows (retries after a 429 aside), and the figures.
    phases = run["phases"]
    assert [p["phase"] for p in phases] == PHASES
    by_phase = {p["phase"]: p for p in phases}
    for phase in phases:
        assert phase["api_requests"] - phase["http_429"] == phase["fewest_requests"], phase
        assert phase["wall_seconds"] > 0 and phase["peak_rss_mb"] > 0 and phase["rows_per_second"] > 0
        assert phase["ceiling_seconds"] == phase["fewest_requests"] / 10
    assert sum(p["token_requests"] for p in phases) == 1
    assert (
        by_phase["pull_iys"]["by_endpoint"]["changes"] - by_phase["pull_iys"]["http_429"] == pulls["IYS"]["pages"] + 1
    )
    assert by_phase["push"]["by_endpoint"]["single_status"] - by_phase["push"]["http_429"] <= kinds["onay_unknown"]
    assert "single_status" not in by_phase["collect"]["by_endpoint"]

    text = output.read_text()
    assert text in result.stdout
    assert "| phase | requests by endpoint | 429 | wall s | req/s (of 10) |" in text
    for name in PHASES:
        assert f"\n| {name} | " in text
    assert "Result: pass" in text
