"""bench/bench_normalize.py normalises a phone and an e-mail per synthetic user and writes its raw results."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_normalize_benchmark_counts_one_phone_and_one_email_outcome_per_user(tmp_path):
    results = tmp_path / "normalize.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_normalize.py"), "3000", "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    raw = json.loads(results.read_text())
    assert raw["benchmark"] == "normalize" and raw["figures"]["rows"] == 3000
    outcomes = raw["figures"]["outcomes"]
    # Every user yields exactly one phone outcome and one e-mail outcome, whatever the verdicts.
    assert sum(outcomes.values()) == 2 * 3000
    assert outcomes["PHONE_OK"] > 0 and outcomes["EMAIL_OK"] > 0
    assert "rows=3000 " in run.stdout
