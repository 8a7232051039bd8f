"""bench/bench_dashboard.py fills a throw-away database, times every panel query and drops the database."""

from __future__ import annotations

import re

from tests_support import run_bench_script

PANELS = (
    "brands (selector)",
    "consents by channel × status",
    "sendable users (recorded by the sync)",
    "initial sync",
    "last 30 runs",
    "outbox by state and code",
    "outbox: unsent RETs by day",
    "quarantine by reason",
    "İYS budget (per IP)",
    "reconciliation",
    "push receiver (per channel)",
    "whole page (read_panels)",
)


def test_dashboard_benchmark_times_each_panel_query(postgres_server_uri):
    result = run_bench_script(
        "bench_dashboard.py",
        ["--users", "5000", "--runs", "100", "--repeat", "2"],
        postgres_server_uri,
        "iys_bench_dashboard_",
    )
    assert result.returncode == 0, result.stderr
    # MESAJ and ARAMA per distinct phone (95 % of users, 0.5 % sharing) plus EPOSTA for 70 %.
    assert re.search(r"^filled 5,000 users \(1[0-9],[0-9]{3} consent rows, 100 runs\)", result.stdout, re.M)
    for panel in PANELS:
        assert re.search(rf"^\| 5,000 \| {re.escape(panel)} \| [0-9.]+ \| [0-9.]+ \| ✓ \|$", result.stdout, re.M), panel
    assert re.search(r"^\| 5,000 \| counting sendable users .*\| by the sync \|$", result.stdout, re.M)
    # The raw results hold every timing the table shows, each the medians' source.
    timings = {t["query"]: t for t in result.raw_results["figures"]["timings"]}
    assert set(PANELS) <= set(timings)
    assert all(len(t["times_ms"]) == 2 and t["users"] == 5000 for t in timings.values() if t["page_query"])
