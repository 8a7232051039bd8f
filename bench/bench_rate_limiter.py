"""Benchmark of the shared learned request rate (issue #14): how close to İYS's limit, how many 429s.

Run from the repo root (``make bench-limiter`` / ``make bench-limiter LIMITER_SECONDS=120``)::

    .venv/bin/python bench/bench_rate_limiter.py --processes 4 --seconds 60

It starts the İYS simulator in a process of its own (real HTTP on 127.0.0.1, so this process's
sampling does not stall it and bunch its arrivals; its strict sliding window of
``--sim-limit`` requests per second, ``--latency-ms`` per request plus up to
``--latency-jitter-ms`` more, uniformly; ``Retry-After: 1`` on its 429s unless
``--no-retry-after``), creates a throw-away database on the PostgreSQL server for the shared
state, fetches one token, and starts the learned rate cold (at the configured rate, as a new
installation would). Then ``--processes`` processes call multi status (one recipient per call)
through the real ``IysHook`` as fast as the shared limiter lets them, all starting together, for
``--seconds`` seconds, with ``rate_limit_per_second`` = ``--rate``.

It prints the requests İYS saw, the accepted ones per second against the configured rate, the
429s and their share, the learned rate over time (from ``iys.rate_limiter``), the machine's load,
and one line per process; then one JSON line with all of it. Exit status 1 when the issue's
target is missed: accepted requests ≥ ``--target-rate`` per second (9.3) and 429s under
``--target-429-share`` (0.3 %) of the requests.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import shutil
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Airflow reads its configuration on import: a throw-away home first (shared with the worker
# processes, which import this module again), then the package.
AIRFLOW_HOME = os.environ.get("IYS_BENCH_LIMITER_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="iys-bench-limiter-")
os.environ.update(
    IYS_BENCH_LIMITER_AIRFLOW_HOME=AIRFLOW_HOME,
    AIRFLOW_HOME=AIRFLOW_HOME,
    AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__LOGGING__LOGGING_LEVEL=os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
)

import psycopg  # noqa: E402
from bench_support import (  # noqa: E402
    POSTGRES_SERVER_HELP,
    SimulatorProcess,
    add_results_argument,
    iys_connection_json,
    postgres_connection_json,
    postgres_server_uri,
    print_verdict,
    sim_control,
    write_results,
)

sys.path.insert(0, str(ROOT / "scripts"))
import local_stack  # noqa: E402

PHONE = "+905321234567"


def worker(index: int, environment: dict, ready, start, seconds: float, results) -> None:
    """One task process: multi-status calls through the real hook until ``seconds`` have passed."""
    os.environ.update(environment)
    try:
        from iys_provider.exceptions import IysApiError
        from iys_provider.hooks.iys import IysHook
        from iys_provider.models import ConsentType

        hook = IysHook(max_retry_seconds=seconds)
        hook._access_token()  # connection, Postgres and the shared token before the start, not during it
        hook.session  # noqa: B018  (opens the keep-alive session)
        ready.put(index)
        start.wait()
        began = time.monotonic()
        calls = failed = 0
        while time.monotonic() - began < seconds:
            try:
                hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
                calls += 1
            except IysApiError:
                failed += 1
        elapsed = time.monotonic() - began
        stats = hook.stats
        hook.close()
        results.put(
            {
                "process": index,
                "calls": calls,
                "failed_calls": failed,
                "requests": stats.requests,
                "http_429": stats.rate_limited,
                "retries": stats.retries,
                "rate_decreases": stats.rate_decreases,
                "last_rate": stats.rate,
                "seconds": round(elapsed, 2),
            }
        )
    except Exception as exc:  # reported by the parent, which fails the run
        results.put({"process": index, "error": repr(exc)})


def learned_rate(dsn: str) -> tuple[float | None, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT rate, rate_decreases FROM iys.rate_limiter").fetchone()
    return (row[0], row[1]) if row else (None, 0)


def accepted(counters: dict) -> int:
    return sum(n for status, n in counters["responses_by_status"].items() if status.startswith("2"))


def run(args: argparse.Namespace, dsn: str, sim_url: str) -> dict:
    """Warm up, start the processes together, sample the learned rate and İYS's counters; every figure."""
    from iys_provider.hooks.iys import IysHook

    sim_control(
        sim_url,
        "config",
        {
            "rate_limit_per_second": args.sim_limit,
            "latency_ms": args.latency_ms,
            "retry_after_header": not args.no_retry_after,
        },
    )
    sim_control(sim_url, "faults", {"latency_jitter_ms": args.latency_jitter_ms})
    sim_control(sim_url, "seed", {"consents": [_onay(PHONE)]})
    warm = IysHook()
    warm._access_token()  # the one token every process then reads from Postgres
    warm.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM iys.rate_limiter")  # a cold start: the rate learned from nothing

    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    environment = {name: os.environ[name] for name in ("AIRFLOW_CONN_IYS_DEFAULT", "AIRFLOW_CONN_IYS_POSTGRES")}
    procs = [
        ctx.Process(target=worker, args=(i, environment, ready, start, args.seconds, results), daemon=True)
        for i in range(args.processes)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=300)
    sim_control(sim_url, "counters/reset")
    load_before = os.getloadavg()
    start.set()
    began = time.monotonic()
    samples = []
    next_sample = 0.0
    while True:
        # A benchmark's sampling clock, not synchronisation: the processes run on by themselves.
        now = time.monotonic() - began
        if now >= next_sample:
            rate, decreases = learned_rate(dsn)
            counters = sim_control(sim_url, "counters", method="GET")
            samples.append(
                {
                    "t": round(now, 1),
                    "learned_rate": None if rate is None else round(rate, 3),
                    "rate_decreases": decreases,
                    "accepted": accepted(counters),
                    "http_429": counters["http_429"],
                }
            )
            if next_sample >= args.seconds:
                break
            next_sample = min(next_sample + args.sample_seconds, args.seconds)
        time.sleep(max(0.0, min(next_sample - (time.monotonic() - began), 0.5)))
    load_after = os.getloadavg()
    per_process = sorted((results.get(timeout=300) for _ in procs), key=lambda r: r["process"])
    for proc in procs:
        proc.join(timeout=60)
    counters = sim_control(sim_url, "counters", method="GET")
    in_window = samples[-1]
    requests_total = counters["requests"]
    return {
        "processes": args.processes,
        "seconds": args.seconds,
        "rate_limit_per_second": args.rate,
        "sim_limit_per_second": args.sim_limit,
        "latency_ms": args.latency_ms,
        "latency_jitter_ms": args.latency_jitter_ms,
        "retry_after_header": not args.no_retry_after,
        "requests": requests_total,
        "accepted": accepted(counters),
        "http_429": counters["http_429"],
        "h124": counters["h124"],
        "share_429": counters["http_429"] / requests_total if requests_total else None,
        "accepted_in_window": in_window["accepted"],
        "accepted_per_second": in_window["accepted"] / args.seconds,
        "requests_per_second_in_window": (in_window["accepted"] + in_window["http_429"]) / args.seconds,
        "final_learned_rate": in_window["learned_rate"],
        "rate_decreases": in_window["rate_decreases"],
        "samples": samples,
        "per_process": per_process,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def _onay(recipient: str) -> dict:
    return {
        "recipient": recipient,
        "type": "MESAJ",
        "status": "ONAY",
        "consentDate": "2024-03-01 10:00:00",
        "source": "HS_WEB",
    }


def failures(report: dict, args: argparse.Namespace) -> list[str]:
    found = [f"process {r['process']}: {r['error']}" for r in report["per_process"] if "error" in r]
    if report["accepted_per_second"] < args.target_rate:
        found.append(f"{report['accepted_per_second']:.2f} accepted requests/s, under {args.target_rate:g}")
    share = report["share_429"] or 0.0
    if share >= args.target_429_share:
        found.append(f"429s are {share:.2%} of the requests, not under {args.target_429_share:.2%}")
    return found


def print_report(report: dict, problems: list[str]) -> None:
    print(
        f"\n{report['processes']} processes × {report['seconds']:g} s of multi-status calls through IysHook, "
        f"rate_limit_per_second {report['rate_limit_per_second']:g}; the simulator's strict window allows "
        f"{report['sim_limit_per_second']} per second, latency {report['latency_ms']:g} ms + up to "
        f"{report['latency_jitter_ms']:g} ms, Retry-After {'1 s' if report['retry_after_header'] else 'not sent'}. "
        f"Load average {report['load_before'][0]} before, {report['load_after'][0]} after ({report['cpus']} CPUs).\n"
    )
    share = report["share_429"]
    rows = [
        ("requests İYS saw", f"{report['requests']:,}"),
        ("accepted (2xx)", f"{report['accepted']:,}"),
        (
            "accepted per second, in the window",
            f"{report['accepted_per_second']:.2f} of {report['rate_limit_per_second']:g} configured "
            f"({report['accepted_per_second'] / report['rate_limit_per_second']:.1%})",
        ),
        ("requests per second, in the window", f"{report['requests_per_second_in_window']:.2f}"),
        ("HTTP 429", f"{report['http_429']:,} ({'—' if share is None else f'{share:.3%}'} of the requests)"),
        ("learned rate at the end", f"{report['final_learned_rate']} /s after {report['rate_decreases']} decreases"),
    ]
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")

    print("\n| t (s) | learned rate (/s) | decreases | accepted so far | 429s so far |")
    print("|---|---|---|---|---|")
    for s in report["samples"]:
        print(
            f"| {s['t']:g} | {s['learned_rate'] or '— (no row yet)'} | {s['rate_decreases']} | {s['accepted']:,} | {s['http_429']} |"
        )

    print("\n| process | calls | requests | 429s | retries | decreases it caused | last rate | req/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report["per_process"]:
        if "error" in r:
            print(f"| {r['process']} | error: {r['error']} | | | | | | |")
            continue
        rate = "—" if r["last_rate"] is None else f"{r['last_rate']:.3f}"
        print(
            f"| {r['process']} | {r['calls']:,} | {r['requests']:,} | {r['http_429']} | {r['retries']} | "
            f"{r['rate_decreases']} | {rate} | {r['requests'] / r['seconds']:.2f} |"
        )
    print_verdict(report, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4, help="task processes sending at once")
    parser.add_argument("--seconds", type=float, default=60, help="how long they send")
    parser.add_argument("--rate", type=float, default=10, help="connection extra rate_limit_per_second")
    parser.add_argument("--sim-limit", type=int, default=10, help="the simulator's requests per second per IP")
    parser.add_argument("--latency-ms", type=float, default=20, help="simulator latency per request")
    parser.add_argument("--latency-jitter-ms", type=float, default=40, help="plus up to this much, uniformly")
    parser.add_argument("--no-retry-after", action="store_true", help="the simulator's 429s carry no Retry-After")
    parser.add_argument("--sample-seconds", type=float, default=5, help="learned-rate sample interval")
    parser.add_argument("--target-rate", type=float, default=9.3, help="accepted requests per second to reach")
    parser.add_argument("--target-429-share", type=float, default=0.003, help="429 share to stay under")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    parser.add_argument("--keep-db", action="store_true", help="keep the throw-away database")
    add_results_argument(parser, "rate_limiter")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)
    if args.processes < 1 or args.seconds <= 0 or args.rate <= 0 or args.sample_seconds <= 0:
        parser.error("--processes, --seconds, --rate and --sample-seconds must be positive")

    db_name = f"iys_bench_limiter_{uuid.uuid4().hex[:8]}"
    sim = SimulatorProcess(seed=args.seed).start()
    sim_url = sim.url
    try:
        dsn = local_stack.ensure_database(args.postgres_server, db_name)
        os.environ["AIRFLOW_CONN_IYS_POSTGRES"] = postgres_connection_json(dsn)
        os.environ["AIRFLOW_CONN_IYS_DEFAULT"] = iys_connection_json(sim_url, args.rate)
        report = run(args, dsn, sim_url)
    finally:
        sim.stop()
        if args.keep_db:
            print(f"kept database {db_name}", file=sys.stderr)
        else:
            local_stack.drop_database(args.postgres_server, db_name)
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
    report["database"] = db_name
    problems = failures(report, args)
    print_report(report, problems)
    write_results(args, "rate_limiter", {**report, "problems": problems})
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
