"""``make chaos``: run the chaos suite (tests/chaos) and print the fault matrix, one line per scenario.

Each scenario's row is written by the ``scenario`` fixture (tests/chaos/conftest.py) to the JSONL
file named by ``CHAOS_REPORT``: faults injected, İYS requests, the hook's retries, 429 answers,
token requests, İYS success ratio (2xx ÷ all requests; İYS may de-whitelist an IP whose ratio
stays under 70 %) and the result. Exit status is pytest's.

    .venv/bin/python bench/chaos.py [--junk-rows 1000000] [pytest args...]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from bench_support import add_results_argument, write_results

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _format_table():
    """The table layout of tests/chaos/conftest.py (loaded by path: this script is itself named chaos)."""
    import ast

    source = (ROOT / "tests" / "chaos" / "conftest.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "format_table")
    namespace: dict = {}
    exec(compile(ast.Module(body=[func], type_ignores=[]), "conftest.py", "exec"), namespace)
    return namespace["format_table"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--junk-rows", type=int, default=1_000_000, help="all-invalid source rows for the memory scenario"
    )
    add_results_argument(parser, "chaos")
    args, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="iys-chaos-") as tmp:
        report = pathlib.Path(tmp) / "rows.jsonl"
        env = {**os.environ, "CHAOS_REPORT": str(report), "CHAOS_JUNK_ROWS": str(args.junk_rows)}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "tests/chaos", *pytest_args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        elapsed = time.monotonic() - started
        rows = [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines()] if report.exists() else []
    format_table = _format_table()

    summary = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(("FAILED", "ERROR")) or " passed" in line or " failed" in line
    ]
    print(format_table(rows) if rows else "no scenario rows recorded")
    low = [r["scenario"] for r in rows if r["success_ratio"] is not None and r["success_ratio"] < 0.7]
    if low:
        print(
            f"\nsuccess ratio under İYS's 70 % threshold (sustained, this would risk de-whitelisting): {', '.join(low)}"
        )
    print()
    print("\n".join(summary[-40:]))
    print(f"chaos suite wall time: {elapsed:.0f} s")
    write_results(args, "chaos", {"scenarios": rows, "wall_s": elapsed, "pytest_exit_code": result.returncode})
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
