"""Fixtures of the chaos suite: a scenario recorder whose rows ``make chaos`` prints as a table."""

from __future__ import annotations

import json

import pytest
from chaos.chaos_support import RetryCounter, metrics, report_path

from tests_support import iys_connection_json_with, sim_control

_ROWS: list[dict] = []
_REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


class Scenario:
    """One row of the fault matrix: what was injected, and what İYS saw."""

    def __init__(self, sim, monkeypatch, name: str) -> None:
        self.sim = sim
        self.name = name
        self.faults: list[str] = []
        self.retries = RetryCounter(monkeypatch)
        self.notes: list[str] = []

    def inject(self, description: str, faults: dict | None = None, config: dict | None = None) -> None:
        if description not in self.faults:
            self.faults.append(description)
        if config:
            sim_control(self.sim, "config", config)
        if faults:
            sim_control(self.sim, "faults", faults)

    def calm(self) -> None:
        """No faults (e.g. while the test itself prepares traffic through the API)."""
        sim_control(self.sim, "faults", {"reset": True})

    def reseed_faults(self, seed: int) -> None:
        """Reset the simulator with ``seed``, so its fault sequence is reproducible."""
        sim_control(self.sim, "config", {"seed": seed})
        sim_control(self.sim, "reset", {"keep_config": True})


@pytest.fixture
def chaos_sim(sim, monkeypatch):
    """The simulator with batch results available at once (no 300 s wait) on both sides."""
    monkeypatch.setenv("AIRFLOW_CONN_IYS_DEFAULT", iys_connection_json_with(sim.url, batch_result_delay_seconds=0))
    sim_control(sim, "config", {"batch_result_delay": 0})
    return sim


@pytest.fixture
def scenario(request, chaos_sim, monkeypatch):
    """Records the scenario's row (faults, requests, retries, success ratio, result) at teardown."""
    row = Scenario(chaos_sim, monkeypatch, request.node.name.removeprefix("test_"))
    yield row
    reports = request.node.stash.get(_REPORTS, {})
    failed = any(r.failed for r in reports.values())
    try:
        m = metrics(chaos_sim, row.retries.count)
    except Exception as exc:  # the row must still be written
        m = None
        row.notes.append(f"no counters: {exc!r}")
    entry = {
        "scenario": row.name,
        "faults": "; ".join(row.faults) or "none",
        "injected": m.faults_injected if m else None,
        "http_429": m.http_429 if m else None,
        "requests": m.requests if m else None,
        "retries": m.retries if m else None,
        "token_requests": m.token_requests if m else None,
        "success_ratio": round(m.success_ratio, 4) if m else None,
        "by_status": m.by_status if m else None,
        "result": "FAIL" if failed else "pass",
        "notes": "; ".join(row.notes),
    }
    if failed and "call" in reports and reports["call"].failed:
        entry["error"] = str(reports["call"].longrepr).strip().splitlines()[-1][:300]
    _ROWS.append(entry)
    if path := report_path():
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")


def format_table(rows: list[dict]) -> str:
    header = ("scenario", "faults injected", "requests", "retries", "429s", "tokens", "success", "result")
    lines = [
        (
            r["scenario"],
            f"{r['faults']} [{r['injected'] if r['injected'] is not None else '-'} injected]",
            str(r["requests"]),
            str(r["retries"]),
            str(r["http_429"]),
            str(r["token_requests"]),
            f"{r['success_ratio']:.1%}" if r["success_ratio"] is not None else "-",
            r["result"],
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    widths[1] = min(widths[1], 90)
    out = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    for line in lines:
        out.append(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return "\n".join(out)


def pytest_terminal_summary(terminalreporter):
    if _ROWS:
        terminalreporter.section("İYS chaos matrix")
        terminalreporter.write_line(format_table(_ROWS))
