"""Shared machinery of the chaos suite: a world of users, the İYS truth, DAG runs and the invariants.

Every scenario builds the same kind of world (messy users in ``public.users``, the simulator
seeded with a random status per address), injects one kind of failure, runs the real DAGs with
``dag.test()`` (tasks in-process, real HTTP to the simulator, real Postgres), and ends with
:func:`assert_brand_promise`:

* consents equal İYS's truth: every status we hold equals the simulator's, and every address
  İYS lists as ONAY is ONAY for us (the sendable set is exact);
* every change event stored exactly once;
* no outbox row lost (none left pending/failed/submitted) or sent twice (İYS applied exactly one
  write per row we call sent, and none for the others);
* zero recipients created in İYS;
* token requests within the hourly limit;
* the İYS success ratio (2xx ÷ all requests), reported.
"""

from __future__ import annotations

import os
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests_support import (  # noqa: F401 (re-exported)
    SIM_BRAND_CODE,
    build_users,
    recipients_of,
    run_dag,
    sim_control,
    task_states,
)

TYPES_BY_KIND = {"phone": ("MESAJ", "ARAMA"), "email": ("EPOSTA",)}
OLD = "2024-03-01 10:00:00"
TOKEN_LIMIT_PER_HOUR = 10  # iys_connection_json_with() default; the simulator's İYS-side limit too


# --------------------------------------------------------------------------- world


def addresses_of(users) -> list[tuple[str, str]]:
    """(recipient, consent type) of every valid address of ``users``, from the truth they were built from."""
    return [(recipient, ctype) for kind, recipient in recipients_of(users) for ctype in TYPES_BY_KIND[kind]]


def load_users(pg, users, *, create: bool = False) -> None:
    if create:
        pg.execute("DROP TABLE IF EXISTS public.users")
        pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text)")
    with pg.cursor() as cur, cur.copy("COPY public.users (id, phone, email) FROM STDIN") as copy:
        for row in users:
            copy.write_row(row)


def seed_truth(sim, keys, seed: int) -> dict[tuple[str, str], str | None]:
    """A random İYS status (ONAY, RET or none) for every address; returns the truth seeded."""
    rng = random.Random(seed)
    truth = {key: rng.choice(("ONAY", "RET", None)) for key in keys}
    consents = [
        {"recipient": r, "type": t, "status": s, "consentDate": OLD, "source": "HS_WEB"}
        for (r, t), s in truth.items()
        if s is not None
    ]
    if consents:
        sim_control(sim, "seed", {"consents": consents})
    return truth


def fresh_world(sim, pg, *, users: int = 240, seed: int = 7) -> list[tuple]:
    """Empty ``iys`` schema, ``users`` messy users, İYS seeded; returns the users."""
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    people = build_users(users, seed)
    load_users(pg, people, create=True)
    seed_truth(sim, addresses_of(people), seed + 1)
    return people


# --------------------------------------------------------------------------- İYS truth


def sim_truth(sim) -> dict[tuple[str, str], str]:
    state = sim_control(sim, "state", method="GET")
    return {
        (c["recipient"], c["type"]): c["status"]
        for c in state["consents"]
        if c.get("brandCode", SIM_BRAND_CODE) == SIM_BRAND_CODE and c.get("recipientType", "BIREYSEL") == "BIREYSEL"
    }


def sim_events(sim) -> list[dict[str, Any]]:
    return sim_control(sim, "events", method="GET")["events"]


def counters(sim) -> dict[str, Any]:
    return sim_control(sim, "counters", method="GET")


#: The simulator's counters of injected faults (``GET /__sim/counters``).
FAULT_COUNTERS = ("injected_errors", "dropped_connections", "latency_spikes", "http_429", "h124")


def fault_counts(sim) -> dict[str, int]:
    c = counters(sim)
    return {name: c[name] for name in FAULT_COUNTERS}


def assert_faults_fired(before: dict[str, int], after: dict[str, int], fired: tuple[str, ...], phase: str) -> None:
    """Each counter in ``fired`` grew between the two snapshots: the faults were really injected.

    A scenario whose faults never fired would pass as the baseline does and prove nothing.
    """
    idle = [name for name in fired if after[name] <= before[name]]
    assert not idle, f"{phase}: no {', '.join(idle)} although injected ({before} -> {after})"


def iys_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --------------------------------------------------------------------------- running the DAGs


# --------------------------------------------------------------------------- incremental traffic


@dataclass
class IncrementalTraffic:
    """What happened in İYS and in the brand's database between the initial and incremental sync."""

    outbox_ids: list[int] = field(default_factory=list)
    expected_outbox: dict[int, str] = field(default_factory=dict)  # id -> final state
    new_users: list[tuple] = field(default_factory=list)


def make_incremental_traffic(
    sim, pg, people, *, seed: int = 5, outbox_rows: int = 12, new_users: int = 20
) -> IncrementalTraffic:
    """Citizen changes (IYS stream), another system's write (HS stream), sign-ups and outbox rows."""
    from iys_provider.hooks.iys import IysHook
    from iys_provider.models import Consent

    rng = random.Random(seed)
    traffic = IncrementalTraffic()
    truth = sim_truth(sim)
    keys = sorted(addresses_of(people))
    rng.shuffle(keys)
    onay = [k for k in keys if truth.get(k) == "ONAY"]
    ret = [k for k in keys if truth.get(k) == "RET"]
    unknown = [k for k in keys if k not in truth]

    # Citizens change their minds through İYS's own channels.
    for recipient, ctype in onay[:8]:
        sim_control(
            sim, "citizen_change", {"recipient": recipient, "type": ctype, "status": "RET", "source": "IYS_MOBIL"}
        )
    for recipient, ctype in ret[:5]:
        sim_control(
            sim, "citizen_change", {"recipient": recipient, "type": ctype, "status": "ONAY", "source": "IYS_WEB"}
        )
    # Another system of the brand writes through the API (HS stream).
    hook = IysHook()
    try:
        for recipient, ctype in ret[5:7]:
            hook.add_consent(
                Consent(
                    recipient=recipient,
                    type=ctype,
                    status="ONAY",
                    source="HS_CAGRI_MERKEZI",
                    consent_date=iys_now() - timedelta(minutes=3),
                )
            )
    finally:
        hook.close()

    # New sign-ups; İYS knows some of their addresses.
    traffic.new_users = build_users(new_users, seed + 100, prefix="n")
    load_users(pg, traffic.new_users)
    fresh_keys = [k for k in addresses_of(traffic.new_users) if k not in truth]
    seed_truth(sim, fresh_keys, seed + 200)

    # The brand's own updates: opt-outs of ONAY addresses (sent), opt-ins of addresses İYS never
    # heard of (skipped: Sync Mode never creates a recipient), a repeat of İYS's status (skipped).
    when = iys_now() - timedelta(minutes=2)
    plan: list[tuple[tuple[str, str], str, str]] = []
    for key in onay[8 : 8 + max(outbox_rows - 4, 0)]:
        plan.append((key, "RET", "sent"))
    for key in unknown[:2]:
        plan.append((key, "ONAY", "skipped"))
    for key in ret[7:9]:
        plan.append((key, "RET", "skipped"))
    for (recipient, ctype), status, final in plan:
        row_id = pg.execute(
            "INSERT INTO iys.consent_updates (brand_code, recipient, type, recipient_type, status, consent_date, source) "
            "VALUES (%s, %s, %s, 'BIREYSEL', %s, %s, 'HS_MOBIL') RETURNING id",
            (SIM_BRAND_CODE, recipient, ctype, status, when),
        ).fetchone()[0]
        traffic.outbox_ids.append(row_id)
        traffic.expected_outbox[row_id] = final
    return traffic


def make_feed_visible(sim) -> None:
    """İYS withholds the last hour of movements; move its clock past that hour."""
    sim_control(sim, "clock", {"advance_seconds": 3700})


def synced_world_with_traffic(
    sim, pg, *, users: int = 240, feed_visible: bool = True, **traffic_options
) -> tuple[list[tuple], IncrementalTraffic]:
    """The start of every incremental scenario: a fresh world, a successful initial sync, then traffic."""
    people = fresh_world(sim, pg, users=users)
    assert run_dag("iys_initial_sync", {"batch_size": 100}).state == "success"
    traffic = make_incremental_traffic(sim, pg, people, **traffic_options)
    if feed_visible:
        make_feed_visible(sim)
    return people, traffic


# --------------------------------------------------------------------------- invariants


@dataclass
class Metrics:
    requests: int
    retries: int
    success_ratio: float
    by_status: dict[str, int]
    token_requests: int
    faults_injected: int
    http_429: int = 0

    def line(self) -> str:
        return (
            f"requests={self.requests} retries={self.retries} success={self.success_ratio:.1%} "
            f"tokens={self.token_requests} injected={self.faults_injected} by_status={self.by_status}"
        )


def metrics(sim, retries: int) -> Metrics:
    c = counters(sim)
    by_status = dict(c["responses_by_status"])
    if c["dropped_connections"]:
        by_status["dropped"] = c["dropped_connections"]
    ok = sum(n for status, n in c["responses_by_status"].items() if status.startswith("2"))
    total = c["requests"]
    return Metrics(
        requests=total,
        retries=retries,
        success_ratio=ok / total if total else 1.0,
        by_status=by_status,
        token_requests=c["token_requests"],
        faults_injected=c["injected_errors"] + c["dropped_connections"],
        http_429=c["http_429"],
    )


def consents_in_db(pg) -> dict[tuple[str, str], str | None]:
    rows = pg.execute(
        "SELECT recipient, type, status FROM iys.consents WHERE brand_code = %s AND recipient_type = 'BIREYSEL'",
        (SIM_BRAND_CODE,),
    ).fetchall()
    return {(r, t): s for r, t, s in rows}


def linked_addresses(pg) -> set[tuple[str, str]]:
    rows = pg.execute("SELECT DISTINCT kind, recipient FROM iys.user_recipients WHERE recipient IS NOT NULL").fetchall()
    return {(recipient, ctype) for kind, recipient in rows for ctype in TYPES_BY_KIND[kind]}


def consent_mismatches(pg, sim, users) -> list[str]:
    """Every disagreement between our consents and İYS's truth for the users' addresses."""
    truth = sim_truth(sim)
    ours = consents_in_db(pg)
    problems = []
    expected_keys = set(addresses_of(users))
    linked = linked_addresses(pg)
    if missing := expected_keys - linked:
        problems.append(f"{len(missing)} valid addresses not linked to their user, e.g. {sorted(missing)[:3]}")
    for key in sorted(expected_keys | set(ours)):
        iys_status, our_status = truth.get(key), ours.get(key)
        if key not in ours and key in expected_keys:
            problems.append(f"{key}: never checked (İYS {iys_status})")
        elif our_status is not None and our_status != iys_status:
            problems.append(f"{key}: we hold {our_status}, İYS holds {iys_status}")
        elif iys_status == "ONAY" and our_status != "ONAY":
            problems.append(f"{key}: İYS ONAY, we hold {our_status} (not sendable)")
    return problems


def assert_brand_promise(
    pg,
    sim,
    users,
    *,
    expected_event_ids: set[str] | None = None,
    traffic: IncrementalTraffic | None = None,
    token_limit: int = TOKEN_LIMIT_PER_HOUR,
) -> None:
    """Nothing lost, nothing created, nothing leaked, İYS never hammered."""
    problems = consent_mismatches(pg, sim, users)
    assert not problems, f"{len(problems)} consents differ from İYS:\n" + "\n".join(problems[:20])

    if expected_event_ids is not None:
        stored = [row[0] for row in pg.execute("SELECT transaction_id FROM iys.consent_events").fetchall()]
        duplicated = [tx for tx, n in Counter(stored).items() if n > 1]
        assert not duplicated, f"events stored more than once: {duplicated[:5]}"
        assert set(stored) == expected_event_ids, (
            f"missing events {sorted(expected_event_ids - set(stored))[:5]}, "
            f"unexpected events {sorted(set(stored) - expected_event_ids)[:5]}"
        )

    c = counters(sim)
    if traffic is not None:
        rows = pg.execute(
            "SELECT id, state, error_code, transaction_id, recipient, type, status FROM iys.consent_updates WHERE id = ANY(%s)",
            (traffic.outbox_ids,),
        ).fetchall()
        assert len(rows) == len(traffic.outbox_ids), "outbox rows disappeared"
        got = {row[0]: row[1] for row in rows}
        assert got == traffic.expected_outbox, {
            row[0]: row[1:4] for row in rows if traffic.expected_outbox[row[0]] != row[1]
        }
        truth = sim_truth(sim)
        sent = [row for row in rows if row[1] == "sent"]
        for _, _, _, transaction_id, recipient, ctype, status in sent:
            assert transaction_id, "a sent row lacks İYS's transaction id"
            assert truth[(recipient, ctype)] == status
        # HS writes through the API: the other system's 2 + exactly one per row we call sent.
        hs_writes = [e for e in sim_events(sim) if e["stream"] == "HS"]
        per_key = Counter((e["recipient"], e["type"]) for e in hs_writes)
        for _, _, _, _, recipient, ctype, _ in sent:
            assert per_key[(recipient, ctype)] == 1, f"{recipient} {ctype} written {per_key[(recipient, ctype)]} times"
        assert c["writes"] == len(sent) + 2, (
            f"İYS applied {c['writes']} writes for {len(sent)} sent rows (+2 by another system)"
        )

    assert c["recipients_created"] == 0
    assert c["token_requests"] <= token_limit, f"{c['token_requests']} token requests in the hour"
    stored_token_requests = pg.execute(
        "SELECT count(*) FROM iys.token_requests WHERE requested_at > now() - interval '1 hour'"
    ).fetchone()[0]
    assert stored_token_requests <= token_limit


# --------------------------------------------------------------------------- instrumentation


class RetryCounter:
    """Counts the hook's in-process retries (its ``before_sleep`` callback), all hooks together."""

    def __init__(self, monkeypatch) -> None:
        from iys_provider.hooks.iys import IysHook

        self.count = 0
        original = IysHook._log_retry
        counter = self

        def counting(self_hook, state):
            counter.count += 1
            return original(self_hook, state)

        monkeypatch.setattr(IysHook, "_log_retry", counting)


class OnRequest:
    """Run ``action`` once, in the task's own thread, when the hook sends its n-th matching request.

    The trigger is deterministic (a request count, not a timer): e.g. revoke the token after the
    third multi-status call, or kill the task's Postgres backends while it is mid-batch.
    """

    def __init__(self, monkeypatch, *, path_contains: str, nth: int, action, after: bool = False) -> None:
        from iys_provider.hooks.iys import IysHook

        self.seen = 0
        self.fired = False
        self.lock = threading.Lock()
        original = IysHook._send
        trigger = self

        def send(self_hook, method, path, **kwargs):
            fire = False
            with trigger.lock:
                if path_contains in path and not trigger.fired:
                    trigger.seen += 1
                    if trigger.seen >= nth:
                        trigger.fired = fire = True
            if fire and not after:
                action()
            response = original(self_hook, method, path, **kwargs)
            if fire and after:
                action()
            return response

        monkeypatch.setattr(IysHook, "_send", send)


def terminate_task_backends(pg) -> int:
    """``pg_terminate_backend`` on every other session of this database (the task's connections)."""
    rows = pg.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchall()
    return sum(1 for (ok,) in rows if ok)


def report_path() -> str | None:
    return os.environ.get("CHAOS_REPORT")
