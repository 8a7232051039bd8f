"""bench/bench_plan.py plans for real, counts the calls its batches imply and drops its database."""

from __future__ import annotations

import re

from tests_support import run_bench_script


def test_plan_benchmark_times_both_cases_and_counts_calls_against_the_floor(postgres_server_uri):
    result = run_bench_script(
        "bench_plan.py",
        ["--users", "3000", "--batch-size", "1000", "--repeat", "2", "--compare-batch-size", "500"],
        postgres_server_uri,
        "iys_bench_plan_",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\| 3,000 \| first plan \| \*\*[0-9.]+\*\* \|.*\| 3 \(≤1,000\) \| — \|$", result.stdout, re.M)
    # 1 % of the users are known but gone from the source: the plan forgets them.
    assert re.search(r"^\| 3,000 \| 3,030 known users \|.*\| 30 forgotten \|$", result.stdout, re.M)
    floor, equal, planned = map(
        int, re.search(r"^\| 3,000 \| (\d+) \| 6 × ≤500: (\d+) .*\| 3 planned: (\d+) ", result.stdout, re.M).groups()
    )
    # Half the batch size, twice the part-filled calls; never below the floor.
    assert floor <= planned < equal
    calls = result.raw_results["figures"]["calls"]
    assert calls == [
        {
            "users": 3000,
            "floor": floor,
            "equal_batches": {"batches": 6, "batch_size": 500, "calls": equal},
            "this_plan": {"batches": 3, "calls": planned},
        }
    ]
    assert [plan["forgotten"] for plan in result.raw_results["figures"]["plans"]] == [None, 30]
