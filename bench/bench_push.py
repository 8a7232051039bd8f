"""Push end to end: a citizen's RET made in İYS (the simulator) until the user is out of ``iys.sendable``.

Run from the repo root::

    .venv/bin/python bench/bench_push.py --movements 1000 --seconds 60

It starts ``scripts/airflow_local.sh`` with throw-away state (``airflow standalone`` with
LocalExecutor and a triggerer, the simulator, the push receiver on https with a throw-away CA,
registered with the simulator as a brand registers with İYS), loads ``--users`` users and runs
``iys_initial_sync`` so that ``iys.sendable`` is filled. Then ``--movements`` citizens say no
(RET through ``IYS_*`` sources) at an even pace over ``--seconds``, each on a different user and
channel that is sendable. A poller reads ``iys.sendable`` every ``--poll-ms`` and notes when each
one leaves it. Printed, and written to ``bench/results/push.json``:

* latency from the citizen's change (the simulator's control call returning: the movement exists
  in İYS and is queued for push) to the user leaving ``iys.sendable``: p50, p95, p99, max;
* the receiver's answer time as İYS sees it (the simulator's delivery log), and deliveries per status;
* the ``iys_push`` DAG: runs started by the inbox's event trigger, their states, and the time from
  the last movement to the end of the run that announced it;
* checks: every movement in the inbox once and applied, every consent RET as in İYS, İYS's test
  records never stored, no İYS request from the receiver (it never calls İYS).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import threading
import time
from datetime import datetime

import psycopg
import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_support import ThrowawayStack, add_results_argument, write_results  # noqa: E402

import local_stack  # noqa: E402  (scripts/local_stack.py)

NAME = "push"
DAGS = ("iys_initial_sync", "iys_push")


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", flush=True)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values), 4),
        "p95": round(percentile(values, 0.95), 4),
        "p99": round(percentile(values, 0.99), 4),
        "max": round(max(values), 4),
        "count": len(values),
    }


def push_stack(args: argparse.Namespace) -> ThrowawayStack:
    """The stack with the initial sync and the push DAG, and the push receiver registered with the simulator."""
    env = {
        "IYS_PUSH": "1",
        "IYS_PUSH_PORT": str(args.push_port),
        "IYS_INITIAL_SYNC_CRON": "none",
        "IYS_PUSH_POLL_SECONDS": str(args.trigger_poll_seconds),
    }
    return ThrowawayStack(args, DAGS, env, log=log)


def run_initial_sync(stack: ThrowawayStack, users: int) -> float:
    dsn = stack.info["pg_dsn"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(local_stack.USERS_DDL.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        conn.execute("TRUNCATE public.users")
        with conn.transaction():
            local_stack.copy_users(conn, local_stack.bench_rows(1, users))
    stack.sim("POST", "seed_synthetic", {"count": users, "start": 1})
    stack.unpause("iys_initial_sync")
    started = time.monotonic()
    run = stack.api("POST", "/dags/iys_initial_sync/dagRuns", json={"logical_date": None, "conf": {"rescan": True}})
    while True:
        state = stack.api("GET", f"/dags/iys_initial_sync/dagRuns/{run['dag_run_id']}")["state"]
        if state in ("success", "failed"):
            break
        time.sleep(1)
    if state != "success":
        raise RuntimeError("the initial sync failed; the benchmark needs iys.sendable filled")
    return time.monotonic() - started


class SendablePoller(threading.Thread):
    """Notes, every ``poll`` seconds, when each watched (user, channel) is no longer in ``iys.sendable``."""

    def __init__(self, dsn: str, poll: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.poll = dsn, poll
        self.lock = threading.Lock()
        self.watched: dict[tuple[str, str], float] = {}  # pair -> when the citizen's change was made
        self.gone: dict[tuple[str, str], float] = {}
        self.stopping = threading.Event()
        self.queries = 0

    def watch(self, pair: tuple[str, str], made_at: float) -> None:
        with self.lock:
            self.watched[pair] = made_at

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stopping.is_set():
                with self.lock:
                    pending = [pair for pair in self.watched if pair not in self.gone]
                if pending:
                    still = set(
                        conn.execute(
                            "SELECT user_id::text, type FROM iys.sendable WHERE user_id::text = ANY(%s)",
                            ([user for user, _ in pending],),
                        ).fetchall()
                    )
                    seen_at = time.monotonic()
                    self.queries += 1
                    with self.lock:
                        for pair in pending:
                            if pair not in still:
                                self.gone[pair] = seen_at
                self.stopping.wait(self.poll)

    def latencies(self) -> list[float]:
        with self.lock:
            return [self.gone[pair] - made for pair, made in self.watched.items() if pair in self.gone]


def sendable_pairs(dsn: str, count: int) -> list[tuple[str, str, str]]:
    """(user, channel, recipient) of ``count`` sendable users, each user once, channels mixed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute(
            "SELECT DISTINCT ON (user_id) user_id::text, type, recipient FROM iys.sendable "
            "ORDER BY user_id, md5(user_id::text || type) LIMIT %s",
            (count,),
        ).fetchall()
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} sendable users; raise --users")
    return found


def push_runs(stack: ThrowawayStack) -> list[dict]:
    return stack.api("GET", "/dags/iys_push/dagRuns", params={"limit": 100, "order_by": "start_date"})["dag_runs"]


def run(args: argparse.Namespace) -> dict:
    stack = push_stack(args)
    stack.start()
    try:
        dsn = stack.info["pg_dsn"]
        sync_seconds = run_initial_sync(stack, args.users)
        log(f"initial sync of {args.users:,} users in {sync_seconds:.1f} s")
        stack.unpause("iys_push")
        pairs = sendable_pairs(dsn, args.movements)
        with psycopg.connect(dsn, autocommit=True) as conn:
            inbox_before = conn.execute("SELECT count(*) FROM iys.push_inbox").fetchone()[0]
        stack.sim("POST", "counters/reset", {})
        poller = SendablePoller(dsn, args.poll_ms / 1000)
        poller.start()
        session = requests.Session()
        interval = args.seconds / args.movements
        started = time.monotonic()
        sent_ids = []
        for i, (user, channel, recipient) in enumerate(pairs):
            due = started + i * interval
            while (wait := due - time.monotonic()) > 0:
                time.sleep(wait)  # pacing the load generator, not synchronising on a result
            made_at = time.monotonic()
            response = session.post(
                f"{stack.info['sim_url']}/__sim/citizen_change",
                json={"recipient": recipient, "type": channel, "status": "RET", "source": "IYS_KISAMESAJ"},
                timeout=30,
            )
            response.raise_for_status()
            sent_ids.append(response.json()["transactionId"])
            poller.watch((user, channel), made_at)
        last_made = time.monotonic()
        pacing_seconds = last_made - started
        idle = stack.sim("POST", "push/wait_idle", {"timeout": 60})
        deadline = time.monotonic() + 60
        while len(poller.gone) < len(pairs) and time.monotonic() < deadline:
            time.sleep(0.1)
        poller.stopping.set()
        poller.join()
        # The push DAG: wait for the triggered runs to settle.
        deadline = time.monotonic() + 180
        while True:
            runs = push_runs(stack)
            with psycopg.connect(dsn, autocommit=True) as conn:
                unannounced = conn.execute("SELECT count(*) FROM iys.push_inbox WHERE announced_at IS NULL").fetchone()[
                    0
                ]
            if (
                not unannounced and all(r["state"] in ("success", "failed") for r in runs)
            ) or time.monotonic() > deadline:
                break
            time.sleep(1)
        deliveries = [
            d for d in stack.sim("GET", "push/deliveries")["deliveries"] if set(d["transactionIds"]) & set(sent_ids)
        ]
        with psycopg.connect(dsn, autocommit=True) as conn:
            inbox = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE applied_at IS NOT NULL), sum(deliveries), "
                "count(*) FILTER (WHERE announced_at IS NULL) FROM iys.push_inbox WHERE transaction_id = ANY(%s)",
                (sent_ids,),
            ).fetchone()
            rets = conn.execute(
                "SELECT count(*) FROM iys.consents WHERE transaction_id = ANY(%s) AND status = 'RET'", (sent_ids,)
            ).fetchone()[0]
            test_records = conn.execute(
                "SELECT count(*) FROM iys.consents WHERE recipient ILIKE 'pushtest@%%'"
            ).fetchone()[0]
            still_sendable = conn.execute(
                "SELECT count(*) FROM iys.sendable s JOIN unnest(%s::text[], %s::text[]) AS p(u, t) "
                "ON s.user_id::text = p.u AND s.type = p.t",
                ([u for u, _, _ in pairs], [c for _, c, _ in pairs]),
            ).fetchone()[0]
        last_run_end = max(
            (datetime.fromisoformat(r["end_date"]).timestamp() for r in runs if r.get("end_date")), default=None
        )
        wall_last_made = time.time() - (time.monotonic() - last_made)
        answers = [(d["answered_at"] - d["sent_at"]) / 1000 for d in deliveries if d.get("answered_at")]
        statuses: dict[str, int] = {}
        for d in deliveries:
            statuses[str(d["status"] or d["error"])] = statuses.get(str(d["status"] or d["error"]), 0) + 1
        return {
            "users": args.users,
            "movements": len(pairs),
            "pacing_seconds": round(pacing_seconds, 2),
            "sync_seconds": round(sync_seconds, 1),
            "sendable_exit_seconds": spread(poller.latencies()),
            "left_sendable": len(poller.gone),
            "poller_queries": poller.queries,
            "receiver_answer_seconds": spread(answers),
            "delivery_statuses": statuses,
            "simulator_idle": idle,
            "push_dag_runs": {
                "runs": len(runs),
                "states": {s: sum(r["state"] == s for r in runs) for s in {r["state"] for r in runs}},
                "last_run_end_after_last_movement_seconds": round(last_run_end - wall_last_made, 1)
                if last_run_end
                else None,
            },
            "checks": {
                "inbox_rows": inbox[0],
                "inbox_applied": inbox[1],
                "inbox_deliveries": inbox[2],
                "inbox_unannounced": inbox[3],
                "inbox_rows_before": inbox_before,
                "consents_ret": rets,
                "test_records_stored": test_records,
                "still_sendable": still_sendable,
            },
        }
    finally:
        stack.stop()


def failures(result: dict) -> list[str]:
    checks, n = result["checks"], result["movements"]
    problems = []
    if result["left_sendable"] != n or checks["still_sendable"]:
        problems.append(f"{n - result['left_sendable']} users never left iys.sendable")
    if (checks["inbox_rows"], checks["inbox_applied"], checks["consents_ret"]) != (n, n, n):
        problems.append(f"inbox/consents do not hold each movement once, applied: {checks}")
    if checks["test_records_stored"]:
        problems.append("İYS's test record was stored as a consent")
    if checks["inbox_unannounced"]:
        problems.append(f"{checks['inbox_unannounced']} movements never announced by the push DAG")
    if result["sendable_exit_seconds"].get("p95", 99) > 5:
        problems.append(f"p95 {result['sendable_exit_seconds']['p95']} s is over İYS Push's 5-s goal")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--movements", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--users", type=int, default=3000, help="users loaded (at least --movements sendable)")
    parser.add_argument("--poll-ms", type=float, default=20, help="how often iys.sendable is read")
    parser.add_argument(
        "--trigger-poll-seconds", type=float, default=30, help="[iys] push_poll_seconds (default: its default)"
    )
    parser.add_argument("--sim-port", type=int, default=18199)
    parser.add_argument("--push-port", type=int, default=18195)
    parser.add_argument("--api-port", type=int, default=18180)
    parser.add_argument("--log-port", type=int, default=18793)
    parser.add_argument("--postgres-server", help="maintenance-DB URI of the PostgreSQL server to use")
    parser.add_argument("--keep", action="store_true", help="keep the stack's folder and databases")
    add_results_argument(parser, NAME)
    args = parser.parse_args()
    result = run(args)
    problems = failures(result)
    exit_ = result["sendable_exit_seconds"]
    answer = result["receiver_answer_seconds"]
    print()
    print(
        f"İYS Push, {result['movements']} citizen RETs over {result['pacing_seconds']} s "
        f"({result['movements'] / result['pacing_seconds']:.1f}/s), airflow standalone (LocalExecutor + triggerer)"
    )
    print("| measure | p50 | p95 | p99 | max |")
    print("|---|---|---|---|---|")
    print(
        f"| citizen's change → out of iys.sendable (s) | {exit_['p50']} | {exit_['p95']} | {exit_['p99']} | {exit_['max']} |"
    )
    print(
        f"| receiver's answer as İYS sees it (s) | {answer['p50']} | {answer['p95']} | {answer['p99']} | {answer['max']} |"
    )
    print(f"deliveries by status: {result['delivery_statuses']}; push DAG runs: {result['push_dag_runs']}")
    print(f"checks: {result['checks']}")
    write_results(args, NAME, {**result, "problems": problems})
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
