"""Helpers shared by tests (importable: ``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import random
from datetime import timedelta

from airflow.sdk import RetryDecision, RetryPolicy

SIM_USERNAME = "iys-test-user"
SIM_PASSWORD = "s3cret-iys-password"
SIM_IYS_CODE = 700001
SIM_BRAND_CODE = 700001


def iys_connection_json_with(url: str, *, password: str = SIM_PASSWORD, **extra_overrides) -> str:
    """``AIRFLOW_CONN_*`` JSON of an ``iys`` connection to the simulator at ``url``."""
    extra = {
        "iys_code": SIM_IYS_CODE,
        "brand_code": SIM_BRAND_CODE,
        "shared_state_conn_id": "iys_postgres",
        "verify_ssl": False,
        "rate_limit_per_second": 8,
        "auth_requests_per_hour": 10,
    }
    extra.update(extra_overrides)
    return json.dumps({"conn_type": "iys", "host": url, "login": SIM_USERNAME, "password": password, "extra": extra})


def sim_control(sim, path: str, payload: dict | None = None, method: str = "POST"):
    """Call the simulator's control API (``/__sim/<path>``) and return the decoded answer."""
    import requests

    response = requests.request(method, f"{sim.url}/__sim/{path}", json=payload, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def load_dag(dag_id: str):
    """The DAG as Airflow parses it from the project's dags/ folder (so dag.test() can serialise it)."""
    import pathlib

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(pathlib.Path(__file__).resolve().parents[1] / "dags"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def _phone(rng: random.Random) -> tuple[str, str]:
    national = f"5{rng.choice(['32', '42', '05', '55'])}{rng.randrange(10**7):07d}"
    spelt = rng.choice(
        [
            f"0{national[:3]} {national[3:6]} {national[6:8]} {national[8:]}",
            national,
            f"+90 ({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]}",
            f"90{national}",
            f" +90{national} ",
        ]
    )
    return national, spelt


class UserRow(tuple):
    """``(id, phone, email)`` as a users table holds them, plus the truth the row was built from.

    ``phone_recipient`` and ``email_recipient`` are the addresses İYS knows the user by (``None`` for
    a blank or junk value), fixed when the row is generated (the mobile number before it is spelt
    out, the e-mail before it is padded or capitalised), never derived from the product's
    normaliser: a normaliser that drops or mangles a valid address disagrees with them.
    """

    phone_recipient: str | None
    email_recipient: str | None

    def __new__(cls, user_id: str, phone: str | None, email: str | None, *, phone_recipient, email_recipient):
        row = super().__new__(cls, (user_id, phone, email))
        row.phone_recipient = phone_recipient
        row.email_recipient = email_recipient
        return row

    def __getnewargs_ex__(self):
        return tuple(self), {"phone_recipient": self.phone_recipient, "email_recipient": self.email_recipient}


JUNK_PHONES = ["0212 123 45 67", "12345", "+9005321234567", "abc", "   "]  # landline, short, 9005 form, text, blank
JUNK_EMAILS = ["not-an-email", "çiğdem@example.com", "a@b.c", "x y@example.com"]  # İYS refuses each


def build_users(count: int, seed: int, prefix: str = "u") -> list[UserRow]:
    """Users as real tables hold them: many spellings, shared numbers, blanks and junk (with their truth)."""
    rng = random.Random(seed)
    users: list[UserRow] = []
    for i in range(count):
        national, phone = _phone(rng)
        phone_recipient: str | None = f"+90{national}"
        if i % 10 == 3 and users and users[-1][1]:
            phone, phone_recipient = users[-1][1], users[-1].phone_recipient  # a family sharing a number
        email_spellings = [
            (f"{prefix}ser{i}@Example.com", f"{prefix}ser{i}@example.com"),
            (f" {prefix}ser{i}@example.com ", f"{prefix}ser{i}@example.com"),
            (f"{prefix}.{i}+tag@mail.example.org", f"{prefix}.{i}+tag@mail.example.org"),
        ]
        email, email_recipient = rng.choice(email_spellings)
        if i % 17 == 0:
            phone, phone_recipient = rng.choice(JUNK_PHONES), None
        if i % 13 == 0:
            email, email_recipient = rng.choice(JUNK_EMAILS), None
        if i % 11 == 0:
            phone, phone_recipient = None, None
        if i % 19 == 0:
            email, email_recipient = None, None
        users.append(
            UserRow(f"{prefix}{i:05d}", phone, email, phone_recipient=phone_recipient, email_recipient=email_recipient)
        )
    return users


def recipients_of(users) -> list[tuple[str, str]]:
    """``(kind, recipient)`` of every valid address of ``users`` (their truth, see :class:`UserRow`), in order."""
    found = []
    for user in users:
        if user.phone_recipient is not None:
            found.append(("phone", user.phone_recipient))
        if user.email_recipient is not None:
            found.append(("email", user.email_recipient))
    return list(dict.fromkeys(found))


def run_dag(dag_id: str, conf: dict | None = None):
    """``dag.test()`` with Airflow's task retries kept but their delays removed.

    A failed task is retried by Airflow exactly as in production (same try counting, a fresh
    operator and hook, İYS's retry policy deciding whether it is tried again), only without
    waiting, so a scenario shows that a *task* retry absorbs what the hook's in-process retries
    could not. ``dag.test()`` waits out a retry's delay, and the policy's delay for a token block
    is the block's hour.
    """
    dag = load_dag(dag_id)
    for task in dag.tasks:
        task.retry_delay = timedelta(0)
        task.retry_exponential_backoff = False
        if task.retry_policy is not None:
            task.retry_policy = WithoutDelay(task.retry_policy)
    return dag.test(run_conf=conf or {})


class WithoutDelay(RetryPolicy):
    """``policy``'s verdicts, a retry's delay removed."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def evaluate(self, exception, try_number, max_tries, context=None) -> RetryDecision:
        decision = self.policy.evaluate(exception, try_number, max_tries, context)
        if decision.retry_delay is None:
            return decision
        return dataclasses.replace(decision, retry_delay=timedelta(0))


def task_states(run) -> dict[str, list[str]]:
    from airflow.utils.session import create_session

    states: dict[str, list[str]] = {}
    with create_session() as session:
        from airflow.models.taskinstance import TaskInstance

        for ti in session.query(TaskInstance).filter(
            TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id
        ):
            states.setdefault(ti.task_id, []).append(f"{ti.state}(try {ti.try_number})")
    return states


def run_bench_script(script: str, args: list[str], postgres_server_uri: str, db_prefix: str):
    """Run ``bench/<script>`` against the test server; returns its finished process, with the raw results
    it wrote (``--results``, into a temporary file: the repository's results stay those of real runs) as
    ``result.raw_results``.

    Also checks that the benchmark dropped every throw-away database (named ``<db_prefix>…``) it made, and
    that a run that succeeded wrote its raw results without the server's URI.
    """
    import json
    import pathlib
    import subprocess
    import sys
    import tempfile

    import psycopg

    def databases() -> set[str]:
        with psycopg.connect(postgres_server_uri) as admin:
            return {row[0] for row in admin.execute("SELECT datname FROM pg_database")}

    before = databases()
    with tempfile.TemporaryDirectory(prefix="iys-bench-results-") as folder:
        results_file = pathlib.Path(folder) / "results.json"
        result = subprocess.run(
            [
                sys.executable,
                str(pathlib.Path(__file__).resolve().parents[1] / "bench" / script),
                *args,
                "--postgres-server",
                postgres_server_uri,
                "--results",
                str(results_file),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        result.raw_results = json.loads(results_file.read_text()) if results_file.exists() else None
    left = {name for name in databases() - before if name.startswith(db_prefix)}
    assert not left, f"{script} left its databases behind: {sorted(left)}"
    if result.returncode == 0:
        raw = result.raw_results
        assert raw is not None, f"{script} wrote no raw results"
        assert raw["benchmark"] == pathlib.Path(script).stem.removeprefix("bench_")
        assert raw["figures"], f"{script} wrote empty figures"
        assert raw["arguments"] and raw["machine"]["cpus"] >= 1
        assert postgres_server_uri not in json.dumps(raw), "the server URI (it may hold a password) was written"
    return result


def rebuilt_trigger(trigger, **overrides):
    """The trigger as the triggerer rebuilds it from its serialized form (``overrides`` replace kwargs)."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**kwargs, **overrides})


def first_event_after(trigger, *, looked, then, deadline: float = 60.0):
    """Run ``trigger`` until ``looked()`` holds (checked while it waits), call ``then()``, return its first event.

    Fails if the trigger fires before ``looked()`` holds or nothing comes within ``deadline`` seconds.
    """
    import asyncio

    async def main():
        loop = asyncio.get_running_loop()
        events = trigger.run()
        first = asyncio.ensure_future(events.__anext__())
        end = loop.time() + deadline
        try:
            while not await asyncio.to_thread(looked):
                assert not first.done(), f"the trigger fired before the condition held: {first.result()}"
                assert loop.time() < end, "the trigger never got to the condition"
                await asyncio.wait({first}, timeout=0.02)
            then()
            return await asyncio.wait_for(first, deadline)
        finally:
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
            await events.aclose()

    return asyncio.run(main())


def interruptible_like_a_terminal() -> None:
    """``preexec_fn`` for a child that must see Ctrl-C: SIGINT back to its default.

    A shell runs background jobs with SIGINT ignored, and an ignored signal is inherited and cannot be
    trapped by a shell script, so a test suite started in the background (``nohup make test &``)
    would otherwise test a Ctrl-C the child never receives. In a terminal it is never ignored.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
