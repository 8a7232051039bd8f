"""End-to-end benchmark of ``iys_initial_sync``: real Airflow, real PostgreSQL, the İYS simulator.

Run from the repo root (``make bench`` / ``make bench USERS=100000``)::

    .venv/bin/python bench/bench_initial_sync.py --users 100000,1000000

For each size it starts from empty ``iys`` tables, COPYs N users into ``public.users`` (phones
and e-mails spelt messily, all normalising to the simulator's synthetic population), triggers
the DAG through the REST API (scheduler + LocalExecutor + mapped batches, ``--pool-slots`` of
them at a time) and waits for the run. It then prints one row per size and writes
``bench/results/initial_sync.md``:

* wall time (trigger → run finished), İYS requests (simulator counters), achieved req/s against
  the connection's ``rate_limit_per_second`` and % of the ceiling (the ceiling is
  ``users × 3 / 1000`` multi-status requests at that rate), 429 answers;
* users/s end to end, local users/s per core (users ÷ Σ ``local_seconds`` of the batch tasks:
  read + normalise + write, each task single-threaded), Postgres rows/s
  (iys.consents + iys.user_recipients rows ÷ Σ ``local_seconds``);
* peak RSS per batch task: ``peak_rss_mb`` from the task's XCom when the operator reports it,
  else the task process's ``VmHWM`` sampled from ``/proc`` every 100 ms.

Afterwards it checks that ``iys.consents`` holds exactly the ONAY rows the synthetic truth
says (``iys_simulator.synthetic.synthetic_status``).

The stack is ``scripts/airflow_local.sh`` itself, started with a throw-away ``AIRFLOW_HOME``,
throw-away databases (dropped at the end; ``--keep`` keeps them), other ports than the dev
stack, a DAG folder holding only ``iys_initial_sync`` (so no other DAG spends the İYS budget)
and the simulator's real 10 req/s limit plus ``--latency-ms`` + 0..``--jitter-ms`` latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
import requests
from iys_simulator.synthetic import synthetic_status

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_support import ThrowawayStack, add_results_argument, write_results  # noqa: E402

import local_stack  # noqa: E402  (scripts/local_stack.py: the dev stack's user generator and DB helpers)
from iys_provider.operators.initial_sync import DEFAULT_BATCH_SIZE  # noqa: E402

DAG_ID = "iys_initial_sync"
TYPES_PER_USER = 3  # MESAJ + ARAMA for the phone, EPOSTA for the e-mail
RECIPIENTS_PER_CALL = 1000
ONAY_RATIO, RET_RATIO = 0.6, 0.2  # SyntheticPopulation defaults
RESULTS = ROOT / "bench" / "results" / "initial_sync.md"
IYS_TABLES = (
    "iys.consents",
    "iys.user_recipients",
    "iys.rejected_recipients",
    "iys.user_sources",
    "iys.initial_sync_batches",
    "iys.initial_sync_scans",
    "iys.sync_state",
)
TASK_TITLE = re.compile(rb"^airflow worker -- ([0-9a-f]{8}-[0-9a-f-]{27})$")


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", flush=True)


# ---------------------------------------------------------------------------- the stack


def initial_sync_stack(args: argparse.Namespace) -> ThrowawayStack:
    """The stack with only ``iys_initial_sync``, the simulator's real 10 req/s and the run's latency."""
    env = {
        "IYS_SIM_LATENCY_MS": str(args.latency_ms),
        "IYS_SIM_LATENCY_JITTER_MS": str(args.jitter_ms),
        "IYS_RATE_LIMIT": str(args.rate_limit),
        "IYS_POOL_SLOTS": str(args.pool_slots),
        "IYS_INITIAL_SYNC_CRON": "none",  # only our triggered runs
        "IYS_PUSH": "0",  # no receiver: nothing but the initial sync on the stack
    }
    if args.parallelism:
        env["AIRFLOW_PARALLELISM"] = str(args.parallelism)
    return ThrowawayStack(args, (DAG_ID,), env, log=log)


class RssSampler(threading.Thread):
    """Peak RSS (VmHWM) of every task process, keyed by task-instance id, sampled from /proc.

    Task processes are titled ``airflow worker -- <ti uuid>`` by the Task SDK. VmHWM is the
    process's own high-water mark, so sampling only has to see the process once near its end.
    """

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak_kb: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                        match = TASK_TITLE.match(handle.read().replace(b"\x00", b" ").strip())
                    if not match:
                        continue
                    with open(f"/proc/{entry.name}/status", "rb") as handle:
                        for line in handle:
                            if line.startswith(b"VmHWM:"):
                                kb = int(line.split()[1])
                                ti_id = match.group(1).decode()
                                self.peak_kb[ti_id] = max(kb, self.peak_kb.get(ti_id, 0))
                                break
                except OSError:
                    continue

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class RequestTimeline(threading.Thread):
    """The simulator's multi-status call count, sampled every ``interval`` s: when calls started,
    stopped, and how evenly they flowed in between (where the rate is lost)."""

    def __init__(self, stack: ThrowawayStack, started: float, ceiling: float, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.stack, self.started, self.ceiling, self.interval = stack, started, ceiling, interval
        self.samples: list[tuple[float, int]] = []
        self.learned: list[tuple[float, float]] = []  # the shared learned rate (iys.rate_limiter) over time
        self._halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.stack.info["pg_dsn"], autocommit=True) as conn:
            while not self._halt.wait(self.interval):
                try:
                    calls = self.stack.sim("GET", "counters")["multi_status_calls"]
                except requests.RequestException:
                    continue
                now = time.time() - self.started
                self.samples.append((now, calls))
                if _has_table(conn, "iys.rate_limiter"):
                    # NULL: nothing learned yet, the configured rate applies.
                    rate = conn.execute("SELECT max(rate) FROM iys.rate_limiter").fetchone()[0]
                    self.learned.append((now, self.ceiling if rate is None else rate))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def phases(self, limit: float) -> dict[str, float | str]:
        moving = [(t, n) for (t, n), (_, before) in zip(self.samples[1:], self.samples, strict=False) if n > before]
        if not moving:
            return {}
        first = next(t for t, n in self.samples if n > 0) - self.interval
        last = moving[-1][0]
        total = moving[-1][1]
        # Whole seconds from the first call to the last, and how many of them fell short of 90 % of the limit.
        per_second: dict[int, int] = {}
        previous = 0
        for t, n in self.samples:
            if first <= t <= last + self.interval:
                per_second[int(t - first)] = per_second.get(int(t - first), 0) + n - previous
            previous = n
        seconds = sorted(per_second)[:-1]  # the last second is partial
        short = [s for s in seconds if per_second[s] < 0.9 * limit]
        learned = [rate for t, rate in self.learned if first <= t <= last]
        return {
            "trigger→first İYS call s": first,
            "first→last İYS call s": last - first,
            "İYS calls/s from first to last call": total / (last - first) if last > first else 0.0,
            # Flow well below the learned rate means the tasks did not keep the limiter busy.
            "learned rate from first to last call (mean / min)": f"{statistics.mean(learned):.2f} / {min(learned):.2f}"
            if learned
            else "n/a",
            "seconds under 90 % of the limit (of all)": f"{len(short)} of {len(seconds)}",
            "  of them in the first / last 10 s": f"{sum(s < 10 for s in short)} / {sum(s >= seconds[-1] - 10 for s in short)}"
            if seconds
            else "n/a",
            "last İYS call→run end s": 0.0,  # filled in by run_size
        }


# ---------------------------------------------------------------------------- one size


@dataclass
class Result:
    users: int
    batches: int
    wall: float
    requests: int
    status_requests: int
    rate_limit: float
    http_429: int
    local_seconds: float
    api_seconds: float
    rows_written: int
    rss_mb: list[float]
    rss_source: str
    onay_expected: int
    onay_found: int
    consents: int
    links: int
    rejected: int
    phases: dict

    @property
    def ideal_seconds(self) -> float:
        return self.users * TYPES_PER_USER / RECIPIENTS_PER_CALL / self.rate_limit

    @property
    def ceiling_pct(self) -> float:
        return 100 * self.ideal_seconds / self.wall

    @property
    def correct(self) -> bool:
        return (
            self.onay_found == self.onay_expected
            and self.consents == self.users * TYPES_PER_USER
            and self.links == self.users * 2
            and self.rejected == 0
        )


def reset_and_load(dsn: str, users: int) -> None:
    """Empty the iys tables (keeping the shared token and rate limiter) and COPY ``users`` users."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(local_stack.USERS_DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        existing = [t for t in IYS_TABLES if conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0]]
        conn.execute(f"TRUNCATE public.users{''.join(', ' + t for t in existing)} CASCADE")
        started = time.monotonic()
        with conn.transaction():
            local_stack.copy_users(conn, local_stack.bench_rows(1, users))
        conn.execute("VACUUM ANALYZE public.users")
        log(f"loaded {users:,} users with COPY in {time.monotonic() - started:.1f} s")


def expected_onay(users: int) -> int:
    total = 0
    for i in range(1, users + 1):
        phone = local_stack.synthetic_phone(i)
        total += synthetic_status(phone, "MESAJ", ONAY_RATIO, RET_RATIO) == "ONAY"
        total += synthetic_status(phone, "ARAMA", ONAY_RATIO, RET_RATIO) == "ONAY"
        total += synthetic_status(local_stack.synthetic_email(i), "EPOSTA", ONAY_RATIO, RET_RATIO) == "ONAY"
    return total


def task_instances(stack: ThrowawayStack, run_id: str) -> list[dict]:
    found, offset = [], 0
    while True:
        page = stack.api(
            "GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100, "offset": offset}
        )
        found.extend(page["task_instances"])
        offset += len(page["task_instances"])
        if not page["task_instances"] or offset >= page["total_entries"]:
            return found


def batch_xcoms(stack: ThrowawayStack, run_id: str, map_indexes: list[int]) -> list[dict]:
    values = []
    for index in map_indexes:
        entry = stack.api(
            "GET",
            f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/sync_batch/xcomEntries/return_value",
            params={"map_index": index, "deserialize": True, "stringify": False},
        )
        value = entry.get("value")
        values.append(json.loads(value) if isinstance(value, str) else value)
    return values


def seconds(ti: dict, start: str = "start_date", end: str = "end_date") -> tuple[float, float]:
    return datetime.fromisoformat(ti[start]).timestamp(), datetime.fromisoformat(ti[end]).timestamp()


def run_size(stack: ThrowawayStack, users: int, args: argparse.Namespace) -> Result:
    dsn = stack.info["pg_dsn"]
    log(f"=== {users:,} users ===")
    reset_and_load(dsn, users)
    stack.sim("POST", "counters/reset", {})
    stack.unpause(DAG_ID)
    sampler = RssSampler()
    sampler.start()
    triggered = time.time()
    timeline = RequestTimeline(stack, triggered, args.rate_limit)
    timeline.start()
    run = stack.api(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"logical_date": None, "conf": {"rescan": True, "batch_size": args.batch_size}},
    )
    run_id = run["dag_run_id"]
    log(f"triggered {run_id}")
    last_report = 0.0
    deadline = time.monotonic() + args.timeout_minutes * 60
    while True:
        run = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run['state']} after {args.timeout_minutes} min")
        if time.monotonic() - last_report > 30:
            with psycopg.connect(dsn) as conn:
                row = (
                    conn.execute(
                        "SELECT count(*) FILTER (WHERE b.finished_at IS NOT NULL), count(*) FROM iys.initial_sync_batches b "
                        "JOIN iys.initial_sync_scans s USING (scan_id) WHERE NOT s.abandoned"
                    ).fetchone()
                    if _has_table(conn, "iys.initial_sync_batches")
                    else (0, 0)
                )
            counters = stack.sim("GET", "counters")
            log(
                f"  {time.time() - triggered:6.0f} s: batches {row[0]}/{row[1]}, İYS requests {counters['requests']}, "
                f"429s {counters['http_429']}"
            )
            last_report = time.monotonic()
        time.sleep(1)
    sampler.stop()
    timeline.stop()
    wall = datetime.fromisoformat(run["end_date"]).timestamp() - triggered
    if run["state"] != "success":
        raise RuntimeError(f"run {run_id} {run['state']}; see the task logs under {stack.info['airflow_home']}/logs")
    counters = stack.sim("GET", "counters")

    tis = task_instances(stack, run_id)
    batch_tis = sorted((t for t in tis if t["task_id"] == "sync_batch"), key=lambda t: t["map_index"])
    xcoms = batch_xcoms(stack, run_id, [t["map_index"] for t in batch_tis])
    local_seconds = sum(x.get("local_seconds", 0) for x in xcoms)
    api_seconds = sum(x.get("api_seconds", 0) for x in xcoms)
    if all("peak_rss_mb" in x for x in xcoms):
        rss_mb, rss_source = [float(x["peak_rss_mb"]) for x in xcoms], "XCom peak_rss_mb"
    else:
        rss_mb = [sampler.peak_kb[t["id"]] / 1024 for t in batch_tis if t["id"] in sampler.peak_kb]
        rss_source = f"/proc VmHWM sampled ({len(rss_mb)}/{len(batch_tis)} tasks seen)"

    with psycopg.connect(dsn) as conn:
        onay_found, consents = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'ONAY'), count(*) FROM iys.consents"
        ).fetchone()
        links = conn.execute("SELECT count(*) FROM iys.user_recipients").fetchone()[0]
        rejected = conn.execute("SELECT count(*) FROM iys.rejected_recipients").fetchone()[0]

    by_task = {t["task_id"]: t for t in tis if t["task_id"] != "sync_batch"}
    starts = [seconds(t)[0] for t in batch_tis]
    ends = [seconds(t)[1] for t in batch_tis]
    durations = [e - s for s, e in zip(starts, ends, strict=True)]
    queued = [
        seconds(t, "queued_when", "start_date")[1] - seconds(t, "queued_when", "start_date")[0]
        for t in batch_tis
        if t.get("queued_when")
    ]
    window = max(ends) - min(starts) if batch_tis else 0.0
    phases = {
        "trigger→plan start s": seconds(by_task["plan_batches"])[0] - triggered,
        "plan_batches s": float(by_task["plan_batches"]["duration"] or 0),
        "plan end→first batch start s": min(starts) - seconds(by_task["plan_batches"])[1] if starts else 0,
        "batch window s": window,
        "last batch→finish_scan end s": seconds(by_task["finish_scan"])[1] - max(ends) if ends else 0,
        "batch task duration mean/max s": f"{statistics.mean(durations):.1f} / {max(durations):.1f}",
        "per batch: api s (mean)": api_seconds / len(xcoms),
        "per batch: local s (mean)": local_seconds / len(xcoms),
        "per batch: task overhead s (mean)": statistics.mean(durations) - (api_seconds + local_seconds) / len(xcoms),
        "batches running in parallel (mean)": sum(durations) / window if window else 0,
        "queued→start s (mean)": statistics.mean(queued) if queued else float("nan"),
        "İYS req/s during batch window": counters["multi_status_calls"] / window if window else 0,
        "token requests": counters["token_requests"],
    }
    for ti, x in zip(batch_tis, xcoms, strict=True):
        start, end = seconds(ti)
        log(
            f"  batch {ti['map_index']:>3}: {x.get('users', 0):>7,} users, {start - triggered:6.1f} → {end - triggered:6.1f} s, "
            f"İYS {x.get('api_seconds', 0):6.1f} s, write {x.get('write_seconds', 0):4.1f} s"
        )
    flow = timeline.phases(args.rate_limit)
    if flow:
        flow["last İYS call→run end s"] = wall - flow["trigger→first İYS call s"] - flow["first→last İYS call s"]
    phases.update(flow)
    log(f"run {run['state']} in {wall:.1f} s")
    return Result(
        users=users,
        batches=len(batch_tis),
        wall=wall,
        requests=counters["requests"],
        status_requests=counters["multi_status_calls"],
        rate_limit=args.rate_limit,
        http_429=counters["http_429"],
        local_seconds=local_seconds,
        api_seconds=api_seconds,
        rows_written=consents + links,
        rss_mb=rss_mb,
        rss_source=rss_source,
        onay_expected=expected_onay(users),
        onay_found=onay_found,
        consents=consents,
        links=links,
        rejected=rejected,
        phases=phases,
    )


def _has_table(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


# ---------------------------------------------------------------------------- report


HEADER = (
    "| users | batches | wall s | İYS requests | req/s (limit) | % of ceiling | 429s | users/s e2e "
    "| local users/s/core | PG rows/s | peak RSS/batch task MB (median / max) | correct |"
)


def row(r: Result) -> str:
    rss = f"{statistics.median(r.rss_mb):.0f} / {max(r.rss_mb):.0f}" if r.rss_mb else "n/a"
    return (
        f"| {r.users:,} | {r.batches} | {r.wall:.1f} | {r.requests:,} ({r.status_requests:,} status) "
        f"| {r.status_requests / r.wall:.2f} ({r.rate_limit:g}) | {r.ceiling_pct:.0f}% "
        f"(ideal {r.ideal_seconds:.1f} s) | {r.http_429} | {r.users / r.wall:,.0f} "
        f"| {r.users / r.local_seconds:,.0f} | {r.rows_written / r.local_seconds:,.0f} | {rss} "
        f"| {'yes' if r.correct else 'NO'} ({r.onay_found:,}/{r.onay_expected:,} ONAY) |"
    )


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        "# Initial sync benchmark",
        "",
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores; simulator latency {args.latency_ms}+0..{args.jitter_ms} ms, "
        f"limit 10 req/s; connection rate_limit_per_second {args.rate_limit:g}; {args.pool_slots} İYS tasks at a time; "
        f"batch_size {args.batch_size}.",
        "",
        HEADER,
        "|" + "---|" * (HEADER.count("|") - 1),
        *(row(r) for r in results),
        "",
        "Ceiling: users × 3 / 1000 multi-status requests at rate_limit_per_second. Local users/s and PG rows/s "
        "divide by Σ local_seconds (read + normalise + write) of the batch tasks. RSS: "
        + "; ".join(f"{r.users:,}: {r.rss_source}" for r in results)
        + ".",
        "",
        "## Where the time goes",
        "",
    ]
    keys = list(results[0].phases) if results else []
    lines.append("| phase | " + " | ".join(f"{r.users:,}" for r in results) + " |")
    lines.append("|---|" + "---|" * len(results))
    for key in keys:
        cells = [r.phases[key] if isinstance(r.phases[key], str) else f"{r.phases[key]:.2f}" for r in results]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="100000,1000000", help="comma-separated sizes")
    # The defaults are the headline setup of docs/benchmarks.md: İYS's own 10 req/s, 20 + 0–40 ms per request.
    parser.add_argument("--latency-ms", type=float, default=20, help="simulated İYS latency per request")
    parser.add_argument("--jitter-ms", type=float, default=40, help="plus a uniform random 0..N ms")
    parser.add_argument("--rate-limit", type=float, default=10, help="rate_limit_per_second of the connection")
    parser.add_argument(
        "--pool-slots", type=int, default=4, help="İYS tasks at a time (IYS_POOL_SLOTS of make airflow)"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="the DAG's batch_size param")
    parser.add_argument("--parallelism", type=int, default=0, help="[core] parallelism (default: the script's)")
    parser.add_argument("--sim-port", type=int, default=18099)
    parser.add_argument("--api-port", type=int, default=18080)
    parser.add_argument("--log-port", type=int, default=18793)
    parser.add_argument("--postgres-server", help="maintenance-DB URI of a server to create throw-away DBs on")
    parser.add_argument("--timeout-minutes", type=float, default=90)
    parser.add_argument("--keep", action="store_true", help="keep the workdir and databases")
    parser.add_argument("--output", default=str(RESULTS))
    add_results_argument(parser, "initial_sync")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.users.split(",") if s.strip()]
    # Ctrl-C and SIGTERM must reach the finally below, which stops the stack and drops the databases
    # (a shell that starts us in the background sets SIGINT to "ignore"; undo that).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    stack = initial_sync_stack(args)
    results: list[Result] = []
    try:
        stack.start()
        # The simulator knows users 1..max(sizes); smaller sizes use a prefix of them.
        stack.sim("POST", "seed_synthetic", {"count": max(sizes), "start": 1})
        for users in sizes:
            results.append(run_size(stack, users, args))
            print(HEADER.replace("| users", "\n| users"), row(results[-1]), sep="\n", flush=True)
    finally:
        stack.stop()
        if results:
            text = report(results, args)
            output = pathlib.Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            print("\n" + text + f"\n(written to {output})")
            figures = [
                {**dataclasses.asdict(r), "ideal_seconds": r.ideal_seconds, "ceiling_pct": r.ceiling_pct}
                for r in results
            ]
            write_results(args, "initial_sync", figures)
    return 0 if results and all(r.correct for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
