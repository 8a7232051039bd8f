"""bench/bench_local_work.py runs the real write path end to end and reports what it wrote."""

from __future__ import annotations

from tests_support import run_bench_script


def test_local_work_benchmark_writes_every_row_and_drops_its_database(postgres_server_uri):
    result = run_bench_script(
        "bench_local_work.py", ["--users", "3000", "--batch-size", "1000"], postgres_server_uri, "iys_bench_local_"
    )
    assert result.returncode == 0, result.stderr
    assert "3,000 users, 3 batches of 1,000" in result.stdout
    # Every bench user has one valid phone (MESAJ + ARAMA) and one valid e-mail (EPOSTA).
    assert "9,000 consents + 6,000 user links + 3,000 fingerprints" in result.stdout
