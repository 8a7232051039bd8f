"""Benchmark of a nightly outbox of opt-outs (issue #10): RETs pushed to İYS without single status.

Run from the repo root (``make bench-outbox`` / ``make bench-outbox OUTBOX_RETS=3000``)::

    .venv/bin/python bench/bench_outbox_rets.py --rets 10000

It starts the İYS simulator in this process (real HTTP on 127.0.0.1, ``--latency-ms`` per
request plus jitter), creates a throw-away database on the PostgreSQL server, and builds the
night of issue #10's acceptance criterion:

* N distinct Turkish mobile numbers on channel MESAJ, each with one pending RET in the outbox
  ``iys.consent_updates`` (consent date five minutes ago, source HS_MOBIL);
* İYS (the simulator) holds ``--onay-share`` of them as ONAY (consent date 2024-03-01); of the
  others, ``--ret-held-share`` are held as RET (citizens who opted out through İYS already) and
  the rest are not held at all;
* our copy ``iys.consents`` is empty, as for a brand whose copy is stale or new, so nothing is
  decided from it.

Then it runs the real ``IysPushConsentUpdatesOperator.execute`` and ``IysBatchResultSensor.poke``
(until done) outside Airflow, with the connections given as ``AIRFLOW_CONN_*`` variables, and
prints rows by final state, İYS requests by endpoint and HTTP status, client errors (400, 401,
403, 404, 422: what İYS's success ratio counts against), single-status calls, 429s, tokens,
recipients created, wall times, the request rate achieved against the configured one and the
ideal request count; then one JSON line with all of it.

Exit status 1 when the criterion is not met: a single-status call, a 404, any client error, a
recipient created, or final states other than ``sent`` for every ONAY address and ``skipped``
``NOT_ONAY_IN_IYS`` for every other one.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import time
import uuid

from bench_support import (
    CLIENT_ERRORS,
    MAX_PER_CALL,
    POSTGRES_SERVER_HELP,
    add_results_argument,
    distinct_phones,
    iys_connection_json,
    local_stack,
    postgres_connection_json,
    postgres_server_uri,
    print_verdict,
    sim_control,
    simulator_account,
    use_throwaway_airflow_home,
    write_results,
)

# Airflow reads its configuration on import: a throw-away home first, then the package.
AIRFLOW_HOME = use_throwaway_airflow_home("iys-bench-outbox-airflow-")

import psycopg  # noqa: E402
from iys_simulator import SimulatorServer  # noqa: E402

from iys_provider.schema import migrate  # noqa: E402

IYS_CONSENT_DATE = "2024-03-01 10:00:00"
MAX_POKES = 20


def run(args: argparse.Namespace, dsn: str, sim_url: str) -> dict:
    """Seed İYS and the outbox, push, collect batch results; returns every figure of the report."""
    from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator
    from iys_provider.sensors.batch_results import IysBatchResultSensor

    phones = distinct_phones(args.rets, args.seed)
    n_onay = round(args.rets * args.onay_share)
    n_ret_held = round((args.rets - n_onay) * args.ret_held_share)
    onay, ret_held = phones[:n_onay], phones[n_onay : n_onay + n_ret_held]
    seeded = [
        {"recipient": r, "type": "MESAJ", "status": "ONAY", "consentDate": IYS_CONSENT_DATE, "source": "HS_WEB"}
        for r in onay
    ] + [
        {"recipient": r, "type": "MESAJ", "status": "RET", "consentDate": IYS_CONSENT_DATE, "source": "HS_WEB"}
        for r in ret_held
    ]
    for start in range(0, len(seeded), 5000):
        sim_control(sim_url, "seed", {"consents": seeded[start : start + 5000]})
    sim_control(sim_url, "config", {"batch_result_delay": 0, "latency_ms": args.latency_ms})
    sim_control(sim_url, "faults", {"latency_jitter_ms": args.latency_jitter_ms})

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        order = phones[:]
        random.Random(args.seed + 1).shuffle(order)  # the outbox does not come sorted by İYS's answer
        conn.execute(
            "INSERT INTO iys.consent_updates (brand_code, recipient, type, recipient_type, status, consent_date, source) "
            "SELECT %s, r, 'MESAJ', 'BIREYSEL', 'RET', now() - interval '5 minutes', 'HS_MOBIL' "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS t(r, i) ORDER BY i",
            (local_stack.SIM_BRAND_CODE, order),
        )
        conn.execute("VACUUM ANALYZE iys.consent_updates")
        local_copy = conn.execute("SELECT count(*) FROM iys.consents").fetchone()[0]

    sim_control(sim_url, "counters/reset")
    started = time.monotonic()
    push_counts = IysPushConsentUpdatesOperator(task_id="push_consent_updates").execute(context={})
    push_seconds = time.monotonic() - started
    push_counters = sim_control(sim_url, "counters", method="GET")

    sensor = IysBatchResultSensor(task_id="wait")
    pokes, sensor_settled = 0, {}
    started = time.monotonic()
    while pokes < MAX_POKES:
        pokes += 1
        result = sensor.poke(context={})
        for state, n in (result.xcom_value or {}).items():
            if isinstance(n, int):  # the counts, not the step's kind
                sensor_settled[state] = sensor_settled.get(state, 0) + n
        if result.is_done:
            break
        time.sleep(0.5)  # batch_result_delay is 0: a result not yet complete is a matter of moments
    sensor_seconds = time.monotonic() - started
    sensor_done = bool(result.is_done)
    counters = sim_control(sim_url, "counters", method="GET")

    with psycopg.connect(dsn, autocommit=True) as conn:
        states = [
            {"state": state, "error_code": code, "rows": n}
            for state, code, n in conn.execute(
                "SELECT state, error_code, count(*) FROM iys.consent_updates GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
            )
        ]
        sent_onay = conn.execute(
            "SELECT count(*) FROM iys.consent_updates WHERE state = 'sent' AND recipient = ANY(%s)", (onay,)
        ).fetchone()[0]

    by_status = counters["responses_by_status"]
    requests_total = counters["requests"]
    ok = sum(n for status, n in by_status.items() if status.startswith("2"))
    client_errors = {status: by_status.get(status, 0) for status in CLIENT_ERRORS}
    n_client_errors = sum(client_errors.values())
    batches = math.ceil(n_onay / MAX_PER_CALL)
    ideal = {
        "multi_status": math.ceil(args.rets / MAX_PER_CALL),
        "batch_submit": batches,
        "batch_result": batches,
    }
    ideal["total"] = sum(ideal.values())
    api_requests = requests_total - counters["token_requests"]
    total_seconds = push_seconds + sensor_seconds
    return {
        "rets": args.rets,
        "onay_in_iys": n_onay,
        "ret_in_iys": n_ret_held,
        "unknown_to_iys": args.rets - n_onay - n_ret_held,
        "local_copy_rows": local_copy,
        "latency_ms": args.latency_ms,
        "latency_jitter_ms": args.latency_jitter_ms,
        "rate_limit_per_second": args.rate,
        "push_result": push_counts,
        "sensor_pokes": pokes,
        "sensor_done": sensor_done,
        "sensor_settled": sensor_settled,
        "states": states,
        "sent_onay": sent_onay,
        "requests": requests_total,
        "api_requests": api_requests,
        "push_requests": push_counters["requests"],
        "by_endpoint": counters["by_endpoint"],
        "by_endpoint_status": counters["by_endpoint_status"],
        "responses_by_status": by_status,
        "client_errors": client_errors,
        "client_errors_total": n_client_errors,
        "success_ratio": ok / requests_total if requests_total else None,
        "single_status_calls": counters["single_status_calls"],
        "multi_status_calls": counters["multi_status_calls"],
        "batch_submits": counters["batch_submits"],
        "http_404": by_status.get("404", 0),
        "http_429": counters["http_429"],
        "token_requests": counters["token_requests"],
        "recipients_created": counters["recipients_created"],
        "writes": counters["writes"],
        "push_seconds": round(push_seconds, 3),
        "sensor_seconds": round(sensor_seconds, 3),
        "total_seconds": round(total_seconds, 3),
        "push_rate": round(push_counters["requests"] / push_seconds, 2) if push_seconds else None,
        "overall_rate": round(requests_total / total_seconds, 2) if total_seconds else None,
        "ideal_requests": ideal,
    }


def failures(report: dict) -> list[str]:
    """Why the night does not meet issue #10's criterion (empty: it does)."""
    found = []
    if report["single_status_calls"]:
        found.append(f"{report['single_status_calls']} single-status calls")
    if report["http_404"]:
        found.append(f"{report['http_404']} answers 404")
    if report["client_errors_total"]:
        found.append(f"{report['client_errors_total']} client errors")
    if report["recipients_created"]:
        found.append(f"{report['recipients_created']} recipients created in İYS")
    expected = {
        ("sent", None): report["onay_in_iys"],
        ("skipped", "NOT_ONAY_IN_IYS"): report["rets"] - report["onay_in_iys"],
    }
    actual = {(s["state"], s["error_code"]): s["rows"] for s in report["states"]}
    expected = {key: n for key, n in expected.items() if n}
    if actual != expected:
        found.append(f"final states {_states_text(actual)}, expected {_states_text(expected)}")
    elif report["sent_onay"] != report["onay_in_iys"]:
        found.append(f"only {report['sent_onay']} of the {report['onay_in_iys']} ONAY addresses sent")
    return found


def _states_text(states: dict) -> str:
    return ", ".join(f"{state}{'/' + code if code else ''}={n:,}" for (state, code), n in states.items()) or "none"


def print_report(report: dict, problems: list[str]) -> None:
    n = report["rets"]
    print(
        f"\nOutbox of {n:,} RETs on MESAJ: İYS holds {report['onay_in_iys']:,} as ONAY, {report['ret_in_iys']:,} "
        f"as RET and does not hold {report['unknown_to_iys']:,}; our copy iys.consents holds "
        f"{report['local_copy_rows']:,} rows (stale or new brand). Simulator latency {report['latency_ms']:g} ms "
        f"+ up to {report['latency_jitter_ms']:g} ms jitter; rate_limit_per_second {report['rate_limit_per_second']:g}.\n"
    )
    print("| final state | error_code | rows |")
    print("|---|---|---|")
    for s in report["states"]:
        print(f"| {s['state']} | {s['error_code'] or '—'} | {s['rows']:,} |")

    print("\n| endpoint | requests | by HTTP status |")
    print("|---|---|---|")
    for endpoint, count in sorted(report["by_endpoint"].items(), key=lambda item: (-item[1], item[0])):
        statuses = report["by_endpoint_status"].get(endpoint, {})
        print(f"| {endpoint} | {count:,} | {', '.join(f'{s}: {c:,}' for s, c in sorted(statuses.items()))} |")
    print(
        f"| **all** | **{report['requests']:,}** | "
        f"{', '.join(f'{s}: {c:,}' for s, c in sorted(report['responses_by_status'].items()))} |"
    )

    ideal = report["ideal_requests"]
    ratio = report["success_ratio"]
    rows = [
        ("single-status calls", f"{report['single_status_calls']:,}"),
        ("HTTP 404", f"{report['http_404']:,}"),
        (
            "client errors (400/401/403/404/422)",
            f"{report['client_errors_total']:,} ({', '.join(f'{s}: {c}' for s, c in report['client_errors'].items())})",
        ),
        ("success ratio (2xx ÷ all)", "—" if ratio is None else f"{ratio:.1%}"),
        ("HTTP 429", f"{report['http_429']:,}"),
        ("token requests", f"{report['token_requests']:,}"),
        ("recipients created in İYS", f"{report['recipients_created']:,}"),
        ("writes (consents İYS applied)", f"{report['writes']:,}"),
        ("multi-status calls", f"{report['multi_status_calls']:,} (ideal {ideal['multi_status']:,})"),
        ("batch submits", f"{report['batch_submits']:,} (ideal {ideal['batch_submit']:,})"),
        ("batch results", f"{report['by_endpoint'].get('batch_result', 0):,} (ideal {ideal['batch_result']:,})"),
        ("İYS API requests (without token)", f"{report['api_requests']:,} (ideal {ideal['total']:,})"),
        ("push wall time", f"{report['push_seconds']:.2f} s ({report['push_requests']:,} requests)"),
        (
            "sensor wall time",
            f"{report['sensor_seconds']:.2f} s ({report['sensor_pokes']} poke{'' if report['sensor_pokes'] == 1 else 's'})",
        ),
        ("total wall time", f"{report['total_seconds']:.2f} s"),
        ("request rate, push", f"{report['push_rate']} req/s of {report['rate_limit_per_second']:g} configured"),
        (
            "request rate, push + sensor",
            f"{report['overall_rate']} req/s of {report['rate_limit_per_second']:g} configured",
        ),
        (
            "push returned",
            ", ".join(f"{k} {v:,}" for k, v in report["push_result"].items() if isinstance(v, int) and v) or "nothing",
        ),
    ]
    print("\n| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print_verdict(report, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rets", type=int, default=10_000, help="pending RETs in the outbox")
    parser.add_argument("--onay-share", type=float, default=0.5, help="share of them İYS holds as ONAY")
    parser.add_argument(
        "--ret-held-share",
        type=float,
        default=0.2,
        help="share of the others İYS holds as RET (the rest it does not hold at all)",
    )
    parser.add_argument("--latency-ms", type=float, default=40, help="simulator latency per request")
    parser.add_argument("--latency-jitter-ms", type=float, default=20, help="plus up to this much, uniformly")
    parser.add_argument("--rate", type=float, default=8, help="connection extra rate_limit_per_second")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    parser.add_argument("--keep-db", action="store_true", help="keep the throw-away database")
    add_results_argument(parser, "outbox_rets")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)
    if not 0 <= args.onay_share <= 1 or not 0 <= args.ret_held_share <= 1 or args.rets < 1:
        parser.error("--rets must be positive, the shares between 0 and 1")

    db_name = f"iys_bench_outbox_{uuid.uuid4().hex[:8]}"
    sim = SimulatorServer(host="127.0.0.1", port=0, seed=args.seed, **simulator_account()).start()
    try:
        dsn = local_stack.ensure_database(args.postgres_server, db_name)
        os.environ["AIRFLOW_CONN_IYS_POSTGRES"] = postgres_connection_json(dsn)
        os.environ["AIRFLOW_CONN_IYS_DEFAULT"] = iys_connection_json(sim.url, args.rate)
        report = run(args, dsn, sim.url)
    finally:
        sim.stop()
        if args.keep_db:
            print(f"kept database {db_name}", file=sys.stderr)
        else:
            local_stack.drop_database(args.postgres_server, db_name)
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
    report["database"] = db_name
    report["database_dropped"] = not args.keep_db
    problems = failures(report)
    print_report(report, problems)
    write_results(args, "outbox_rets", {**report, "problems": problems})
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
