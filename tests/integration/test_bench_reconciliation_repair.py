"""bench/bench_reconciliation_repair.py repairs the share of each day it dropped, in both kinds of file, and drops its database."""

from __future__ import annotations

import pytest

from tests_support import run_bench_script


@pytest.mark.parametrize("reading", ["literal", "no_header+crlf+faq_seven_columns"])
def test_repair_benchmark_stores_what_it_dropped_and_drops_its_database(postgres_server_uri, reading):
    result = run_bench_script(
        "bench_reconciliation_repair.py",
        ["--days", "2000,6000", "--missing", "0.2", "--reading", reading],
        postgres_server_uri,
        "iys_bench_reconciliation_repair_",
    )
    assert result.returncode == 0, result.stderr
    assert "     2,000 " in result.stdout and "     6,000 " in result.stdout
    assert "peak RSS grew" in result.stdout and "from 2,000 to 6,000 movements" in result.stdout
    assert ("statuses from multi status" in result.stdout) is (reading != "literal")
