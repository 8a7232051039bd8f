"""bench/bench_outbox_rets.py pushes a night of RETs (issue #10) and reports what İYS was asked."""

from __future__ import annotations

import json
import math

from tests_support import run_bench_script

RETS = 3000


def test_outbox_benchmark_sends_rets_without_single_status_and_drops_its_database(postgres_server_uri):
    result = run_bench_script("bench_outbox_rets.py", ["--rets", str(RETS)], postgres_server_uri, "iys_bench_outbox_")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["problems"] == []

    onay = RETS // 2
    assert (report["rets"], report["onay_in_iys"], report["local_copy_rows"]) == (RETS, onay, 0)
    assert report["ret_in_iys"] + report["unknown_to_iys"] == RETS - onay
    assert report["unknown_to_iys"] > 0  # some addresses İYS does not hold at all: the 404 risk
    states = {(s["state"], s["error_code"]): s["rows"] for s in report["states"]}
    assert states == {("sent", None): onay, ("skipped", "NOT_ONAY_IN_IYS"): RETS - onay}
    assert report["sent_onay"] == onay  # the ones sent are exactly the addresses İYS holds as ONAY

    assert report["single_status_calls"] == 0
    assert "single_status" not in report["by_endpoint"]
    assert report["http_404"] == 0
    assert report["client_errors_total"] == 0
    assert report["success_ratio"] == 1.0
    assert report["recipients_created"] == 0
    assert report["multi_status_calls"] == math.ceil(RETS / 1000)
    assert report["batch_submits"] == math.ceil(onay / 1000)
    assert report["writes"] == onay
    assert report["sensor_done"]
    assert report["api_requests"] == report["ideal_requests"]["total"]
    assert "| single-status calls | 0 |" in result.stdout
