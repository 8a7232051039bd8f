"""bench/bench_sendable.py reads iys.sendable before and after the open opt-outs count, and drops its database."""

from __future__ import annotations

import re

from tests_support import run_bench_script


def test_sendable_benchmark_prints_each_read_before_and_after(postgres_server_uri):
    result = run_bench_script(
        "bench_sendable.py",
        ["--users", "3000", "--open-rets", "90", "--repeat", "1"],
        postgres_server_uri,
        "iys_bench_sendable_",
    )
    assert result.returncode == 0, result.stderr
    before, after, held = map(
        lambda s: int(s.replace(",", "")),
        re.search(
            r"^iys.sendable rows: ([\d,]+) before, ([\d,]+) after \(([\d,]+) held out\)$", result.stdout, re.M
        ).groups(),
    )
    # Each open RET names a user's address on one channel (user g·7, every third an e-mail).
    assert 0 < held <= 90 and before - after == held
    for read in ("count per channel", "audience export", "one user"):
        assert re.search(rf"^{read} +[0-9.]+ / +[0-9.]+ +[0-9.]+ / +[0-9.]+ +[0-9.]+×$", result.stdout, re.M), read
    assert re.search(r"^verdict: worst median ratio [0-9.]+× \((within|above) the 1.2× goal\)$", result.stdout, re.M)
