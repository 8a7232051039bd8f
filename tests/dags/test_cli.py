"""What the README tells data engineers to type: backfills, rescans and triggers from the CLI."""

from __future__ import annotations

import subprocess
import sys


def airflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", *args], capture_output=True, text=True, timeout=300)


def test_backfill_and_rescan_from_the_cli(airflow_db):
    assert airflow("dags", "reserialize").returncode == 0

    backfill = airflow(
        "backfill",
        "create",
        "--dag-id",
        "iys_incremental_sync",
        "--from-date",
        "2026-11-01",
        "--to-date",
        "2026-11-04",
        "--dry-run",
    )
    assert backfill.returncode == 0, backfill.stderr
    # Nightly at 02:00 Istanbul is 23:00 UTC the evening before.
    assert backfill.stdout.count("23:00:00+00:00") == 3, backfill.stdout

    rescan = airflow("dags", "trigger", "iys_initial_sync", "-c", '{"rescan": true, "batch_size": 2000}')
    assert rescan.returncode == 0, rescan.stderr
    bad = airflow("dags", "trigger", "iys_initial_sync", "-c", '{"batch_size": 0}')
    assert bad.returncode != 0
    assert "batch_size" in bad.stdout + bad.stderr
