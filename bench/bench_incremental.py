"""Benchmark of an incremental night (issue #14): pull and apply 100,000 feed movements, push 10,000 outbox rows.

Run from the repo root (``make bench-incremental`` / ``make bench-incremental MOVEMENTS=20000 OUTBOX=2000``)::

    .venv/bin/python bench/bench_incremental.py --movements 100000 --outbox 10000

For each connection rate in ``--rates`` (the iys connection's ``rate_limit_per_second``; default
10, İYS's own limit, and 8) it starts the İYS simulator in a process of its own (real HTTP on
127.0.0.1, İYS's strict 10 requests/s per IP, ``--latency-ms`` + 0..``--latency-jitter-ms`` per
request), creates a throw-away database, and builds:

* what an initial sync leaves behind: N existing addresses (MESAJ, ARAMA, EPOSTA) that İYS holds,
  70 % ONAY and 30 % RET; our copy ``iys.consents`` has ONAY for the ONAY ones and no status for
  the others (multi status cannot tell RET from unknown), checked two days ago;
* M movements in İYS's two change feeds, spread over the hours before the hidden last hour: the
  IYS stream (citizens) and, ``--hs-share`` of them, the HS stream (the brand's other systems);
  on existing addresses and, ``--new-share`` of them, on addresses İYS did not hold before;
  mostly status flips; ``--replay-share`` of them served a second time under the same
  transaction id, as İYS does;
* after the pulls, K outbox rows in ``iys.consent_updates`` (brand_code set): RETs for addresses
  İYS holds as ONAY (sent), ONAYs for addresses the feed showed opting out (sent), ONAYs for ONAY
  addresses (SAME_STATUS), RETs for RET addresses (NOT_ONAY_IN_IYS), older rows of a re-sent
  address (SUPERSEDED), ONAYs for addresses İYS does not hold (one single status each,
  NOT_IN_IYS), bad numbers (rejected) and rows older than 3 business days (EXPIRED).

Then it times four phases, each alone, running the real operators outside Airflow (connections
as ``AIRFLOW_CONN_*``): pull the IYS stream, pull the HS stream (``IysPullChangesOperator``),
push the outbox (``IysPushConsentUpdatesOperator``), collect the batch results
(``IysBatchResultSensor.poke`` until done). For the benchmark the simulator's
``batch_result_delay`` and the connection's ``batch_result_delay_seconds`` are 0 (İYS requires
≥300 s), so the last phase measures our work, not İYS's queue.

Per phase it prints İYS requests by endpoint (simulator counters), wall seconds, the request
rate achieved against the configured one, the ceiling — the fewest requests the data allows
(movements ÷ 1000 per page + the empty answer that ends a feed; status checks ÷ 1000 per
channel + one single status per unknown address + batches ÷ 1000) at İYS's 10 req/s — and the
share of it reached, rows per second and the peak RSS of this process during the phase (the
simulator runs elsewhere). It checks that our copy equals İYS's truth after the pulls and at
the end, and that every outbox row ends in the state its kind calls for; writes the tables to
``bench/results/incremental.md`` (``--output``); the last line is JSON with every figure.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pathlib
import random
import shutil
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bench_support import (
    MAX_PER_CALL,
    POSTGRES_SERVER_HELP,
    ROOT,
    SimulatorProcess,
    add_results_argument,
    distinct_phones,
    iys_connection_json,
    local_stack,
    peak_rss_mb,
    postgres_connection_json,
    postgres_server_uri,
    reset_peak_rss,
    rss_mb,
    sim_control,
    use_throwaway_airflow_home,
    verdict,
    write_results,
)

# Airflow reads its configuration on import: a throw-away home first, then the package.
AIRFLOW_HOME = use_throwaway_airflow_home("iys-bench-incremental-airflow-")


import psycopg  # noqa: E402

from iys_provider.schema import migrate  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "incremental.md"
IYS_RATE = 10  # requests per second İYS accepts per IP: the ceiling
PAGE_SIZE = 1000  # İYS's largest change-feed page
TURKEY = ZoneInfo("Europe/Istanbul")
IYS_FORMAT = "%Y-%m-%d %H:%M:%S"
BRAND = local_stack.SIM_BRAND_CODE
TYPES = ("MESAJ", "MESAJ", "ARAMA", "EPOSTA")  # a quarter of the addresses are e-mails
IYS_SOURCES = ("IYS_WEB", "IYS_MOBIL", "IYS_CM")
HS_SOURCES = ("HS_WEB", "HS_MOBIL", "HS_CAGRI_MERKEZI", "HS_FIZIKSEL_ORTAM")
SEEDED_ONAY_SHARE = 0.7
MIN_SPAN_SECONDS = 28 * 3600
MAX_SPAN_SECONDS = 160 * 3600  # İYS serves 7 days minus the last hour
INJECT_CHUNK = 10_000
MAX_POKES = 20

#: Outbox kinds: (share of the outbox, status, expected final state, expected error code).
#: ``ret_onay`` takes what the others leave.
OUTBOX_KINDS = {
    "ret_onay": (None, "RET", "sent", None),
    "onay_after_ret": (0.10, "ONAY", "sent", None),
    "onay_onay": (0.10, "ONAY", "skipped", "SAME_STATUS"),
    "ret_ret": (0.15, "RET", "skipped", "NOT_ONAY_IN_IYS"),
    "superseded": (0.05, "ONAY", "skipped", "SUPERSEDED"),
    "onay_unknown": (0.005, "ONAY", "skipped", "NOT_IN_IYS"),
    "invalid": (0.01, "RET", "rejected", "INVALID_RECIPIENT_PHONE_INVALID"),
    "expired": (0.01, "RET", "rejected", "EXPIRED"),
}
# Consent dates of the outbox rows, seconds before the push (a superseded row is the older of two).
OUTBOX_AGE = {"superseded": 20 * 60, "expired": 10 * 86400}
DEFAULT_OUTBOX_AGE = 5 * 60

Key = tuple[str, str]  # (recipient, type); every address here is BIREYSEL


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def iys_text(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, TURKEY).strftime(IYS_FORMAT)


# ---------------------------------------------------------------------------- the data


class World:
    """Addresses, movements and İYS's truth, all drawn from one seed."""

    def __init__(self, args: argparse.Namespace, sim_now: float) -> None:
        rng = random.Random(args.seed)
        self.n_existing = max(args.movements // 2, args.outbox * 2, 100)
        self.n_replays = round(args.movements * args.replay_share)
        n_normal = args.movements - self.n_replays
        n_unknown = max(1, round(args.outbox * OUTBOX_KINDS["onay_unknown"][0]))
        phones = iter(distinct_phones(self.n_existing + n_normal + n_unknown, args.seed))
        emails = (f"bench.user{i}@example.com" for i in range(10**9))

        def new_key(index: int) -> Key:
            consent_type = TYPES[index % len(TYPES)]
            return (next(emails) if consent_type == "EPOSTA" else next(phones)), consent_type

        #: key -> (status, consent date, set by a movement)
        self.truth: dict[Key, tuple[str, str, bool]] = {}
        seeded_at = sim_now - 10 * 86400
        self.seed = []
        for i in range(self.n_existing):
            key = new_key(i)
            status = "ONAY" if rng.random() < SEEDED_ONAY_SHARE else "RET"
            self.truth[key] = (status, iys_text(seeded_at), False)
            self.seed.append(
                {
                    "recipient": key[0],
                    "type": key[1],
                    "status": status,
                    "consentDate": iys_text(seeded_at),
                    "creationDate": iys_text(seeded_at),
                    "source": "HS_WEB",
                }
            )

        span = min(max(MIN_SPAN_SECONDS, n_normal), MAX_SPAN_SECONDS)
        if n_normal > span:
            raise ValueError(f"at most {MAX_SPAN_SECONDS:,} movements fit İYS's window one second apart")
        feed_end = sim_now - 2 * 3600  # well before the hidden last hour
        feed_start = feed_end - span
        self.checked_at = datetime.fromtimestamp(feed_start - 86400, UTC)
        pool = list(self.truth)
        self.events: list[dict] = []
        self.new_keys = 0
        for i in range(n_normal):
            # At least one second apart, so an address's later movement always has a later date.
            created = int(feed_start + i * span / n_normal)
            stream = "HS" if rng.random() < args.hs_share else "IYS"
            if rng.random() < args.new_share:
                key = new_key(self.n_existing + self.new_keys)
                self.new_keys += 1
                pool.append(key)
                status = "ONAY" if rng.random() < 0.85 else "RET"
            else:
                key = rng.choice(pool)
                previous = self.truth[key][0]
                flip = rng.random() < 0.9
                status = ("RET" if previous == "ONAY" else "ONAY") if flip else previous
            consent_date = iys_text(created - 30)
            self.truth[key] = (status, consent_date, True)
            self.events.append(
                {
                    "recipient": key[0],
                    "type": key[1],
                    "status": status,
                    "source": rng.choice(HS_SOURCES if stream == "HS" else IYS_SOURCES),
                    "recipientType": "BIREYSEL",
                    "consentDate": consent_date,
                    "creationDate": iys_text(created),
                    "stream": stream,
                    "apply": True,
                }
            )
        self.replayed = sorted(rng.sample(range(n_normal), self.n_replays))
        self.unknown_phones = [next(phones) for _ in range(n_unknown)]
        self.rng = rng

    def stream_counts(self) -> dict[str, dict[str, int]]:
        """Per stream: movements served (replays included) and distinct transaction ids."""
        normal = Counter(event["stream"] for event in self.events)
        replays = Counter(self.events[i]["stream"] for i in self.replayed)
        return {s: {"movements": normal[s] + replays[s], "distinct": normal[s]} for s in ("IYS", "HS")}

    def outbox(self, size: int) -> list[tuple[str, str, str, int, str]]:
        """``(recipient, type, status, age seconds, kind)`` rows, shuffled, and checks enough addresses exist."""
        rng = self.rng
        counts = {
            kind: round(size * share) if kind != "onay_unknown" else len(self.unknown_phones)
            for kind, (share, *_) in OUTBOX_KINDS.items()
            if share is not None
        }
        counts["ret_onay"] = size - sum(counts.values())
        onay = [key for key, (status, _, _) in self.truth.items() if status == "ONAY"]
        ret_moved = [key for key, (status, _, moved) in self.truth.items() if status == "RET" and moved]
        rng.shuffle(onay)
        rng.shuffle(ret_moved)
        n_after_ret = counts["onay_after_ret"]
        ret_other = ret_moved[n_after_ret:] + [k for k, (s, _, moved) in self.truth.items() if s == "RET" and not moved]
        rng.shuffle(ret_other)
        needed_onay = counts["ret_onay"] + counts["onay_onay"] + counts["expired"]
        if counts["ret_onay"] < counts["superseded"] or len(onay) < needed_onay or len(ret_moved) < n_after_ret:
            raise ValueError("too few addresses for this outbox: raise --movements or lower --outbox")
        if len(ret_other) < counts["ret_ret"]:
            raise ValueError("too few RET addresses for this outbox: raise --movements or lower --outbox")
        taken = iter(onay)
        picks = {
            "ret_onay": [next(taken) for _ in range(counts["ret_onay"])],
            "onay_onay": [next(taken) for _ in range(counts["onay_onay"])],
            "expired": [next(taken) for _ in range(counts["expired"])],
            "onay_after_ret": ret_moved[:n_after_ret],
            "ret_ret": ret_other[: counts["ret_ret"]],
            "onay_unknown": [(phone, "MESAJ") for phone in self.unknown_phones],
            "invalid": [("12345", "MESAJ")] * counts["invalid"],
        }
        picks["superseded"] = picks["ret_onay"][: counts["superseded"]]
        rows = [
            (recipient, consent_type, OUTBOX_KINDS[kind][1], OUTBOX_AGE.get(kind, DEFAULT_OUTBOX_AGE), kind)
            for kind, keys in picks.items()
            for recipient, consent_type in keys
        ]
        rng.shuffle(rows)
        return rows


# ---------------------------------------------------------------------------- one run


def build(world: World, sim_url: str, dsn: str) -> None:
    """İYS's state and feeds, and our copy as an initial sync left it."""
    for start in range(0, len(world.seed), 5000):
        sim_control(sim_url, "seed", {"consents": world.seed[start : start + 5000]})
    transaction_ids: list[str] = []
    for start in range(0, len(world.events), INJECT_CHUNK):
        answer = sim_control(sim_url, "inject_events", {"events": world.events[start : start + INJECT_CHUNK]})
        transaction_ids.extend(event["transactionId"] for event in answer["events"])
    replays = [
        {**world.events[i], "transactionId": transaction_ids[i], "apply": False} for i in world.replayed
    ]  # the same movement again: same transaction id, same creation date
    for start in range(0, len(replays), INJECT_CHUNK):
        sim_control(sim_url, "inject_events", {"events": replays[start : start + INJECT_CHUNK]})
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY iys.consents (brand_code, recipient, recipient_type, type, status, checked_at) FROM STDIN"
            ) as copy,
        ):
            for event in world.seed:
                status = "ONAY" if event["status"] == "ONAY" else None
                copy.write_row((BRAND, event["recipient"], "BIREYSEL", event["type"], status, world.checked_at))
        conn.execute("VACUUM ANALYZE iys.consents")


def insert_outbox(dsn: str, rows: list[tuple]) -> dict[int, tuple[str, str]]:
    """The outbox rows, in the order given; returns row id -> (kind, channel)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = conn.execute(
            "INSERT INTO iys.consent_updates (brand_code, recipient, type, recipient_type, status, consent_date, source) "
            "SELECT %s, r, t, 'BIREYSEL', s, now() - make_interval(secs => a), 'HS_MOBIL' "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[]) WITH ORDINALITY AS x(r, t, s, a, i) "
            "ORDER BY i RETURNING id",
            (BRAND, *(list(column) for column in list(zip(*rows, strict=True))[:4])),
        ).fetchall()
        conn.execute("VACUUM ANALYZE iys.consent_updates")
    return {row_id: (row[4], row[1]) for (row_id,), row in zip(sorted(ids), rows, strict=True)}


def timed_phase(name: str, sim_url: str, work) -> tuple[dict, object]:
    """Run ``work()`` alone against freshly reset simulator counters; returns the phase figures and its result."""
    sim_control(sim_url, "counters/reset")
    gc.collect()
    rss_reset = reset_peak_rss()
    rss_at_start = rss_mb()
    started = time.monotonic()
    result = work()
    wall = time.monotonic() - started
    counters = sim_control(sim_url, "counters", method="GET")
    log(f"{name}: {wall:.2f} s, {counters['requests']} requests")
    return {
        "phase": name,
        "wall_seconds": wall,
        "requests": counters["requests"],
        "token_requests": counters["token_requests"],
        "by_endpoint": counters["by_endpoint"],
        "responses_by_status": counters["responses_by_status"],
        "http_429": counters["http_429"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_at_start_mb": None if rss_at_start is None else round(rss_at_start, 1),
        "peak_rss_since": "phase start" if rss_reset else "process start",
    }, result


def run_once(args: argparse.Namespace, rate: float) -> dict:
    from iys_provider.operators.changes import IysPullChangesOperator
    from iys_provider.operators.consent_updates import IysPushConsentUpdatesOperator
    from iys_provider.sensors.batch_results import IysBatchResultSensor

    db_name = f"iys_bench_incremental_{uuid.uuid4().hex[:8]}"
    load_before = os.getloadavg()[0]
    sim = SimulatorProcess(seed=args.seed, latency_ms=args.latency_ms, batch_result_delay=0).start()
    try:
        dsn = local_stack.ensure_database(args.postgres_server, db_name)
        os.environ["AIRFLOW_CONN_IYS_POSTGRES"] = postgres_connection_json(dsn)
        os.environ["AIRFLOW_CONN_IYS_DEFAULT"] = iys_connection_json(sim.url, rate)
        sim_control(sim.url, "faults", {"latency_jitter_ms": args.latency_jitter_ms})
        sim_now = sim_control(sim.url, "clock", method="GET")["epoch_ms"] / 1000
        log(f"rate {rate:g}: building {args.movements:,} movements and {args.outbox:,} outbox rows")
        world = World(args, sim_now)
        build(world, sim.url, dsn)
        streams = world.stream_counts()
        touched = {key for key, (_, _, moved) in world.truth.items() if moved}
        world.seed, world.events = [], []  # not ours to hold while measuring

        phases = []
        pulls = {}
        for stream in ("IYS", "HS"):
            operator = IysPullChangesOperator(task_id=f"pull_{stream.lower()}", stream=stream, page_size=PAGE_SIZE)
            figures, pulls[stream] = timed_phase(
                f"pull_{stream.lower()}", sim.url, lambda op=operator: op.execute(context={})
            )
            phases.append(figures)
        after_pull = compare_with_truth(dsn, sim.url, touched)

        outbox_rows = world.outbox(args.outbox)
        kinds = insert_outbox(dsn, outbox_rows)
        push = IysPushConsentUpdatesOperator(task_id="push_consent_updates")
        figures, push_result = timed_phase("push", sim.url, lambda: push.execute(context={}))
        phases.append(figures)

        sensor = IysBatchResultSensor(task_id="collect_batch_results")
        figures, (pokes, done, settled) = timed_phase("collect", sim.url, lambda: poke_until_done(sensor))
        phases.append(figures)

        final = compare_with_truth(dsn, sim.url, touched)
        outbox_check = check_outbox(dsn, kinds)
        simulator_rss = sim.peak_rss_mb()
    finally:
        sim.stop()
        if args.keep_db:
            log(f"kept database {db_name}")
        else:
            local_stack.drop_database(args.postgres_server, db_name)

    add_ceilings(phases, streams, Counter(kinds.values()), pulls, rate)
    return {
        "rate_limit_per_second": rate,
        "database": db_name,
        "database_dropped": not args.keep_db,
        "existing_addresses": world.n_existing,
        "new_addresses": world.new_keys,
        "replays": world.n_replays,
        "streams": streams,
        "pull_results": pulls,
        "push_result": push_result,
        "sensor_pokes": pokes,
        "sensor_done": done,
        "sensor_settled": settled,
        "outbox_kinds": dict(Counter(kind for kind, _ in kinds.values())),
        "outbox_check": outbox_check,
        "truth_after_pull": after_pull,
        "truth_at_end": final,
        "phases": phases,
        "simulator_peak_rss_mb": simulator_rss,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
    }


def poke_until_done(sensor) -> tuple[int, bool, dict]:
    pokes, settled = 0, {}
    while pokes < MAX_POKES:
        pokes += 1
        result = sensor.poke(context={})
        settled = dict(result.xcom_value or {})
        if result.is_done:
            return pokes, True, settled
        time.sleep(0.2)  # batch_result_delay is 0: an incomplete result is a matter of moments
    return pokes, False, settled


def add_ceilings(phases, streams, outbox: Counter, pulls, rate: float) -> None:
    """The fewest requests each phase's data allows (tokens aside), and what that costs at İYS's rate.

    ``outbox`` counts rows by (kind, channel)."""
    asked = Counter()  # addresses multi status is asked about, per channel (one channel per call)
    for (kind, consent_type), count in outbox.items():
        if kind not in ("invalid", "expired", "superseded"):  # settled before İYS is asked
            asked[consent_type] += count
    kinds = Counter()
    for (kind, _), count in outbox.items():
        kinds[kind] += count
    sends = kinds["ret_onay"] + kinds["onay_after_ret"]
    batches = math.ceil(sends / MAX_PER_CALL)
    fewest = {
        "pull_iys": math.ceil(streams["IYS"]["movements"] / PAGE_SIZE) + 1,
        "pull_hs": math.ceil(streams["HS"]["movements"] / PAGE_SIZE) + 1,
        # An ONAY for an address İYS may not hold costs one single status: Sync Mode never creates one.
        "push": sum(math.ceil(n / MAX_PER_CALL) for n in asked.values()) + kinds["onay_unknown"] + batches,
        "collect": batches,
    }
    rows = {
        "pull_iys": pulls["IYS"]["pulled"],
        "pull_hs": pulls["HS"]["pulled"],
        "push": sum(kinds.values()),
        "collect": sends,
    }
    for phase in phases:
        name = phase["phase"]
        api = phase["requests"] - phase["token_requests"]
        wall = phase["wall_seconds"]
        phase.update(
            api_requests=api,
            fewest_requests=fewest[name],
            ceiling_seconds=fewest[name] / IYS_RATE,
            seconds_at_configured_rate=fewest[name] / rate,
            requests_per_second=api / wall,
            share_of_ceiling=(fewest[name] / IYS_RATE) / wall,
            rows=rows[name],
            rows_per_second=rows[name] / wall,
        )
        if name.startswith("pull_"):
            phase["applied"] = pulls[name[5:].upper()]["applied"]
            phase["applied_per_second"] = phase["applied"] / wall


# ---------------------------------------------------------------------------- checks


def compare_with_truth(dsn: str, sim_url: str, touched: set[Key]) -> dict:
    """Our copy against İYS's state: status and consent date where we know one; ONAY/no status otherwise."""
    state = sim_control(sim_url, "state", method="GET")["consents"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        ours = {
            (r, t): (status, date)
            for r, t, status, date in conn.execute(
                "SELECT recipient, type, status, consent_date FROM iys.consents WHERE brand_code = %s", (BRAND,)
            )
        }
    mismatched, examples = 0, []
    for record in state:
        key = (record["recipient"], record["type"])
        status, date = ours.pop(key, (None, None))
        if date is not None:
            ok = status == record["status"] and date.astimezone(TURKEY).strftime(IYS_FORMAT) == record.get(
                "consentDate"
            )
        elif key in touched:
            ok = False  # a movement set it: our copy must know it with its date
        else:
            ok = status == ("ONAY" if record["status"] == "ONAY" else None)
        if not ok:
            mismatched += 1
            if len(examples) < 3:
                examples.append({"iys": [record["status"], record.get("consentDate")], "ours": [status, str(date)]})
    return {"addresses": len(state), "mismatched": mismatched, "unknown_to_iys": len(ours), "examples": examples}


def check_outbox(dsn: str, kinds: dict[int, tuple[str, str]]) -> dict:
    """Final state of every outbox row against the one its kind calls for."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, state, error_code FROM iys.consent_updates WHERE brand_code = %s", (BRAND,)
        ).fetchall()
    states = Counter((state, code) for _, state, code in rows)
    wrong = Counter()
    for row_id, state, code in rows:
        kind = kinds[row_id][0]
        _, _, want_state, want_code = OUTBOX_KINDS[kind]
        if (state, code) != (want_state, want_code):
            wrong[f"{kind}: {state}/{code or '-'}"] += 1
    return {
        "rows": len(rows),
        "states": [
            {"state": s, "error_code": c, "rows": n} for (s, c), n in sorted(states.items(), key=lambda i: -i[1])
        ],
        "wrong": dict(wrong),
    }


def failures(run: dict) -> list[str]:
    found = []
    for name in ("truth_after_pull", "truth_at_end"):
        check = run[name]
        if check["mismatched"] or check["unknown_to_iys"]:
            found.append(
                f"{name}: {check['mismatched']} addresses differ from İYS, {check['unknown_to_iys']} unknown to it"
            )
    for stream, counts in run["streams"].items():
        result = run["pull_results"][stream]
        if (result["pulled"], result["new"]) != (counts["movements"], counts["distinct"]):
            found.append(
                f"{stream} pull: {result['pulled']} movements ({result['new']} new), "
                f"expected {counts['movements']} ({counts['distinct']} new)"
            )
    if run["outbox_check"]["wrong"]:
        found.append(f"outbox rows in the wrong state: {run['outbox_check']['wrong']}")
    if not run["sensor_done"]:
        found.append("batch results not all collected")
    return found


# ---------------------------------------------------------------------------- report


def _endpoints(phase: dict) -> str:
    items = sorted(phase["by_endpoint"].items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{name} {count:,}" for name, count in items) or "—"


def _rows_cell(phase: dict) -> str:
    if "applied" in phase:
        return f"{phase['rows_per_second']:,.0f} pulled ({phase['applied_per_second']:,.0f} applied)"
    return f"{phase['rows_per_second']:,.0f}"


def run_table(run: dict) -> list[str]:
    rate = run["rate_limit_per_second"]
    lines = [
        f"| phase | requests by endpoint | 429 | wall s | req/s (of {rate:g}) | fewest requests | "
        f"ceiling s at {IYS_RATE}/s (at {rate:g}/s) | % of ceiling (of {rate:g}/s) | rows/s | peak RSS MB (at start) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in run["phases"]:
        at_rate = p["seconds_at_configured_rate"]
        lines.append(
            f"| {p['phase']} | {_endpoints(p)} | {p['http_429']} | {p['wall_seconds']:.2f} "
            f"| {p['requests_per_second']:.2f} | {p['fewest_requests']:,} | {p['ceiling_seconds']:.1f} ({at_rate:.1f}) "
            f"| {p['share_of_ceiling']:.0%} ({at_rate / p['wall_seconds']:.0%}) | {_rows_cell(p)} "
            f"| {p['peak_rss_mb']:.0f} ({p['rss_at_start_mb'] or 0:.0f}) |"
        )
    wall = sum(p["wall_seconds"] for p in run["phases"])
    api = sum(p["api_requests"] for p in run["phases"])
    fewest = sum(p["fewest_requests"] for p in run["phases"])
    tokens = sum(p["token_requests"] for p in run["phases"])
    lines.append(
        f"| **all** | {api:,} + {tokens} token | {sum(p['http_429'] for p in run['phases'])} | {wall:.2f} "
        f"| {api / wall:.2f} | {fewest:,} | {fewest / IYS_RATE:.1f} ({fewest / rate:.1f}) "
        f"| {fewest / IYS_RATE / wall:.0%} ({fewest / rate / wall:.0%}) | "
        f"| {max(p['peak_rss_mb'] for p in run['phases']):.0f} |"
    )
    load = run["load_average"]
    lines += [
        "",
        f"Load average (1 min) on the machine's {os.cpu_count()} cores: {load['before']:.2f} before this run, "
        f"{load['after']:.2f} after (other work on the machine slows the phases down).",
    ]
    return lines


def facts(run: dict) -> list[str]:
    lines = []
    for stream in ("IYS", "HS"):
        r = run["pull_results"][stream]
        lines.append(
            f"* {stream} stream: {r['pulled']:,} movements in {r['pages']} page(s), {r['new']:,} new "
            f"({r['pulled'] - r['new']:,} replays), {r['applied']:,} applied, {r['ignored_stale']:,} stale."
        )
    push = run["push_result"]
    lines.append(
        "* push: "
        + ", ".join(f"{k} {v:,}" for k, v in push.items() if isinstance(v, int) and v)
        + f"; sensor: {run['sensor_pokes']} "
        f"poke(s), "
        + ", ".join(f"{k} {v:,}" for k, v in run["sensor_settled"].items() if isinstance(v, int) and v)
        + "."
    )
    states = ", ".join(
        f"{s['state']}{'/' + s['error_code'] if s['error_code'] else ''} {s['rows']:,}"
        for s in run["outbox_check"]["states"]
    )
    wrong = sum(run["outbox_check"]["wrong"].values())
    lines.append(f"* outbox final states: {states}; rows not in their kind's expected state: {wrong}.")
    for name, label in (("truth_after_pull", "after the pulls"), ("truth_at_end", "at the end")):
        check = run[name]
        lines.append(
            f"* our copy {label}: {check['addresses']:,} addresses İYS holds, {check['mismatched']} differ, "
            f"{check['unknown_to_iys']} rows İYS does not hold."
        )
    return lines


def report_text(runs: list[dict], args: argparse.Namespace, problems: list[str]) -> str:
    first = runs[0]
    lines = [
        "# Incremental sync benchmark",
        "",
        f"{datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores. {args.movements:,} feed movements "
        f"({first['streams']['IYS']['movements']:,} IYS stream, {first['streams']['HS']['movements']:,} HS stream; "
        f"{first['replays']:,} served twice; {first['new_addresses']:,} on addresses new to İYS, the rest on "
        f"{first['existing_addresses']:,} existing ones), then an outbox of {args.outbox:,} rows ("
        + ", ".join(f"{kind} {n:,}" for kind, n in sorted(first["outbox_kinds"].items(), key=lambda i: -i[1]))
        + f"). Simulator: strict {IYS_RATE} req/s, latency {args.latency_ms:g}+0..{args.latency_jitter_ms:g} ms, "
        "batch_result_delay 0 (and the connection's batch_result_delay_seconds 0; İYS needs ≥300 s), in its own "
        "process. Operators run outside Airflow, one phase at a time.",
        "",
        f"Fewest requests: feed movements ÷ {PAGE_SIZE} per page + 1 empty answer per stream; push: addresses "
        f"asked ÷ {MAX_PER_CALL} per channel (multi status) + 1 single status per ONAY for an address İYS may not "
        f"hold + sends ÷ {MAX_PER_CALL} per batch; collect: 1 result call per batch; tokens aside. Ceiling: those "
        f"requests at İYS's {IYS_RATE} req/s; % of ceiling = ceiling ÷ wall. Peak RSS: this process "
        f"(the operators, on top of the benchmark's own data), reset at each phase, with its RSS when the phase "
        "started; the simulator runs in its own process.",
    ]
    for run in runs:
        lines += [
            "",
            f"## rate_limit_per_second {run['rate_limit_per_second']:g}",
            "",
            *run_table(run),
            "",
            *facts(run),
        ]
    lines += ["", f"Result: {verdict(problems)}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movements", type=int, default=100_000, help="change-feed movements, both streams")
    parser.add_argument("--outbox", type=int, default=10_000, help="outbox rows to push")
    parser.add_argument("--hs-share", type=float, default=0.35, help="share of movements in the HS stream")
    parser.add_argument("--new-share", type=float, default=0.25, help="share on addresses new to İYS")
    parser.add_argument("--replay-share", type=float, default=0.01, help="share served twice (one transaction id)")
    parser.add_argument("--rates", default="10,8", help="rate_limit_per_second values, one run each")
    parser.add_argument("--latency-ms", type=float, default=20, help="simulator latency per request")
    parser.add_argument("--latency-jitter-ms", type=float, default=40, help="plus up to this much, uniformly")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--postgres-server", help=POSTGRES_SERVER_HELP)
    parser.add_argument("--keep-db", action="store_true", help="keep the throw-away databases")
    parser.add_argument("--output", default=str(RESULTS), help="Markdown results file")
    add_results_argument(parser, "incremental")
    args = parser.parse_args()
    args.postgres_server = postgres_server_uri(args.postgres_server)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    shares = (args.hs_share, args.new_share, args.replay_share)
    if args.movements < 10 or args.outbox < 20 or not rates or not all(0 <= s <= 1 for s in shares):
        parser.error("--movements ≥ 10, --outbox ≥ 20, at least one rate, shares between 0 and 1")

    runs = []
    try:
        for rate in rates:
            runs.append(run_once(args, rate))
    finally:
        shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
    problems = [f"rate {run['rate_limit_per_second']:g}: {p}" for run in runs for p in failures(run)]
    text = report_text(runs, args, problems)
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    figures = {
        "movements": args.movements,
        "outbox": args.outbox,
        "runs": runs,
        "ok": not problems,
        "problems": problems,
    }
    write_results(args, "incremental", figures)
    print(json.dumps({**figures, "output": str(output)}, sort_keys=True, default=str))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
