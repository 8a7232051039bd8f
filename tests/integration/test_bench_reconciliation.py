"""bench/bench_reconciliation.py hashes every movement of each day it made and drops its database."""

from __future__ import annotations

from tests_support import run_bench_script


def test_reconciliation_benchmark_hashes_each_day_and_drops_its_database(postgres_server_uri):
    result = run_bench_script(
        "bench_reconciliation.py", ["--days", "2000,6000"], postgres_server_uri, "iys_bench_reconciliation_"
    )
    assert result.returncode == 0, result.stderr
    assert "     2,000 " in result.stdout and "     6,000 " in result.stdout
    assert "peak RSS grew" in result.stdout and "from 2,000 to 6,000 movements" in result.stdout
