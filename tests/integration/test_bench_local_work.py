"""bench/bench_local_work.py runs the real write path end to end and reports what it wrote."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_local_work_benchmark_writes_every_row_and_drops_its_database(postgres_server_uri):
    import psycopg

    with psycopg.connect(postgres_server_uri) as admin:
        before = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_local_work.py"),
            "--users",
            "3000",
            "--batch-size",
            "1000",
            "--postgres-server",
            postgres_server_uri,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "3,000 users, 3 batches of 1,000" in result.stdout
    # Every bench user has one valid phone (MESAJ + ARAMA) and one valid e-mail (EPOSTA).
    assert "9,000 consents + 6,000 user links + 3,000 fingerprints" in result.stdout
    with psycopg.connect(postgres_server_uri) as admin:
        after = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
    assert not {name for name in after - before if name.startswith("iys_bench_local_")}
