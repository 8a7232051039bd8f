"""Crashing the push path for real: a PostgreSQL of its own, the receiver as a process, a burst client.

* :class:`KillablePostgres`: a PostgreSQL server for one test (pgserver's binaries), its postmaster a
  plain child process, so SIGKILL hits this server and never the suite's shared one.
* :class:`ReceiverProcess`: ``iys-push-receiver`` exactly as deployed (console script, TLS, connections
  from the environment), started, SIGKILLed and started again.
* :class:`PushBurst`: several threads posting one movement per list, as İYS does by default, recording
  every answer (status, latency); after the n-th 2xx it crashes a part of the system, keeps pushing
  through the outage, pauses once enough outage answers are in, and, once resumed, redelivers every
  movement not answered 2xx until all are (İYS delivers at least once).

Every wait polls a condition with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import requests
from push_support import PUSH_PASSWORD, PUSH_USERNAME, ThrowawayTls

from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE

#: İYS gives a push receiver this long to answer (İYS OpenAPI v3.2.0, registration rules).
IYS_ANSWER_SECONDS = 5.0
#: The client waits longer than İYS would, so that a slow answer is measured instead of cut off.
CLIENT_TIMEOUT = (3.0, 15.0)
RECIPIENT_TYPES = ("MESAJ", "ARAMA")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], object], what: str, *, timeout: float, interval: float = 0.02):
    """Poll ``condition`` until it is truthy (returned) or ``timeout`` seconds have passed (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # the pace of polling a condition, not a synchronisation


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# --------------------------------------------------------------------------- a PostgreSQL to kill


class KillablePostgres:
    """A throw-away PostgreSQL server on a free port, its postmaster a direct child of the test.

    initdb and postgres refuse to run as root; as root the server runs as pgserver's own system
    user (created by pgserver the same way when the suite falls back to it).
    """

    def __init__(self) -> None:
        import pgserver

        self.bin = Path(pgserver.pg_config(["--bindir"]).strip())
        self.user: str | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="iys-killable-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.folder.chmod(0o755)
        self.data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            from pgserver.utils import ensure_user_exists

            self.user = "pgserver"
            entry = ensure_user_exists(self.user)
            for path in (self.folder, self.data):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [self.bin / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            user=self.user,
            timeout=120,
        )
        if self.user is not None:
            owner = pwd.getpwnam(self.user)
            self.log.touch()
            os.chown(self.log, owner.pw_uid, owner.pw_gid)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def connection_json(self) -> str:
        """``AIRFLOW_CONN_*`` JSON of a postgres connection to this server."""
        return json.dumps(
            {"conn_type": "postgres", "host": "127.0.0.1", "port": self.port, "login": "postgres", "schema": "postgres"}
        )

    def accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> float:
        """Start the postmaster (crash recovery first, after a kill); seconds until it accepts connections."""
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.bin / "postgres", "-D", self.data, "-c", "listen_addresses=127.0.0.1", "-p", str(self.port)]
                + ["-k", str(self.folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                start_new_session=True,
            )

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"postgres exited with {self.process.returncode}:\n{tail(self.log)}")
            return self.accepts_connections()

        wait_for(up, "PostgreSQL to accept connections", timeout=60)
        return time.monotonic() - started

    def kill(self) -> float:
        """SIGKILL the postmaster, as an OOM killer would; returns the seconds until its children are gone.

        The backends notice their postmaster's death and exit on their own; a new postmaster
        refuses to start while any of them still holds the shared memory.
        """
        import psutil

        assert self.process is not None
        started = time.monotonic()
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

        def gone(child: psutil.Process) -> bool:
            try:
                return child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(lambda: all(gone(child) for child in children), "the killed postmaster's children to exit", timeout=60)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- the receiver as a process


class ReceiverProcess:
    """``iys-push-receiver`` serving TLS on a fixed free port (the same after a restart, as İYS's URL is)."""

    def __init__(self, *, conn_id: str, postgres_conn_id: str, tls: ThrowawayTls, env: dict[str, str], log: Path):
        self.conn_id = conn_id
        self.postgres_conn_id = postgres_conn_id
        self.tls = tls
        self.env = env
        self.log = log
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def channel_url(self, channel: str) -> str:
        return f"{self.url}/iys-push/{self.conn_id}/{channel}"

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", verify=str(self.tls.ca_file), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def start(self) -> float:
        """Start the process; seconds until ``/healthz`` answers (its pool is open by then)."""
        started = time.monotonic()
        command = [
            str(Path(sys.executable).with_name("iys-push-receiver")),
            *("--connections", self.conn_id, "--postgres-conn-id", self.postgres_conn_id),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--certfile", str(self.tls.cert_file), "--keyfile", str(self.tls.key_file)),
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the receiver exited with {self.process.returncode}:\n{tail(self.log)}")
            return self.healthy()

        wait_for(up, "the push receiver's /healthz", timeout=120)
        return time.monotonic() - started

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


# --------------------------------------------------------------------------- movements and their truth


def make_movements(count: int, *, recipients: int, seed: int) -> list[dict]:
    """``count`` citizen movements, one second apart, over ``recipients`` numbers × MESAJ/ARAMA, mixed ONAY/RET."""
    rng = random.Random(seed)
    numbers = [f"+90532{rng.randrange(10**7):07d}" for _ in range(recipients)]
    start = datetime(2025, 6, 2, 9, 0, 0)
    movements = []
    for i in range(count):
        at = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        movements.append(
            {
                "iysCode": SIM_IYS_CODE,
                "brandCode": SIM_BRAND_CODE,
                "consentDate": at,
                "creationDate": at,
                "source": rng.choice(("IYS_MOBIL", "IYS_KISAMESAJ", "IYS_WEB")),
                "recipient": rng.choice(numbers),
                "recipientType": "BIREYSEL",
                "status": rng.choice(("ONAY", "RET")),
                "type": rng.choice(RECIPIENT_TYPES),
                "transactionId": f"crash-{seed}-{i:05d}",
            }
        )
    return movements


def newest_per_address(movements: list[dict]) -> dict[tuple[str, str], tuple[str, str]]:
    """(recipient, type) -> (status, transactionId) of its latest movement (consent dates are all distinct)."""
    newest: dict[tuple[str, str], dict] = {}
    for movement in movements:
        key = (movement["recipient"], movement["type"])
        if key not in newest or movement["consentDate"] > newest[key]["consentDate"]:
            newest[key] = movement
    return {key: (m["status"], m["transactionId"]) for key, m in newest.items()}


# --------------------------------------------------------------------------- the burst


@dataclass(frozen=True)
class Answer:
    transaction_id: str
    status: int | None  # None: no HTTP answer at all (refused, reset, timed out)
    error: str | None
    started: float  # time.monotonic() when the request left
    latency: float

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class PushBurst:
    """Posts single-movement lists from ``threads`` threads and records every answer.

    After the ``crash_after``-th 2xx, the worker that received it runs ``crash`` (and blocks until it
    returns); the others keep pushing. Once ``outage_answers`` answers to requests sent after the
    crash are in, the burst pauses until :meth:`resume`.
    """

    def __init__(
        self,
        url_for: Callable[[str], str],
        ca_file: Path,
        *,
        crash_after: int,
        crash: Callable[[], object],
        outage_answers: int,
        threads: int = 8,
    ) -> None:
        self.url_for = url_for
        self.ca_file = str(ca_file)
        self.crash_after = crash_after
        self.crash = crash
        self.outage_answers = outage_answers
        self.threads = threads
        self.answers: list[Answer] = []
        self.crashed_at: float | None = None  # when ``crash`` returned: the part is down
        self.crash_result: object = None
        self.resumed_at: float | None = None
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._go.set()
        self._crash_claimed = False
        self._in_flight = 0
        self._local = threading.local()
        self._workers: list[threading.Thread] = []
        self._queue: queue.SimpleQueue[dict] = queue.SimpleQueue()

    # ---- one request

    def post(self, movement: dict) -> Answer:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.auth = (PUSH_USERNAME, PUSH_PASSWORD)
        body = json.dumps({"list": [movement]})
        started = time.monotonic()
        try:
            response = session.post(
                self.url_for(movement["type"]),
                data=body,
                headers={"Content-Type": "application/json"},
                verify=self.ca_file,  # per request: REQUESTS_CA_BUNDLE would override Session.verify
                timeout=CLIENT_TIMEOUT,
            )
            status, error = response.status_code, None
            if not 200 <= status < 300:
                error = response.text[:200]
        except requests.RequestException as exc:
            session.close()  # a dead keep-alive connection must not be reused
            self._local.session = None
            status, error = None, type(exc).__name__
        answer = Answer(movement["transactionId"], status, error, started, time.monotonic() - started)
        with self._lock:
            self.answers.append(answer)
        return answer

    # ---- the first pass, with the crash in the middle

    def start(self, movements: list[dict]) -> None:
        for movement in movements:
            self._queue.put(movement)
        self._workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()

    def _work(self) -> None:
        try:
            while True:
                if not self._go.wait(timeout=600):
                    raise AssertionError("the burst was never resumed")
                try:
                    movement = self._queue.get_nowait()
                except queue.Empty:
                    return
                with self._lock:
                    self._in_flight += 1
                answer = self.post(movement)
                with self._lock:
                    self._in_flight -= 1
                    crash_now = (
                        answer.acknowledged
                        and not self._crash_claimed
                        and sum(a.acknowledged for a in self.answers) >= self.crash_after
                    )
                    self._crash_claimed |= crash_now
                    if (
                        self.resumed_at is None
                        and self.crashed_at is not None
                        and len(self.during_outage()) >= self.outage_answers
                    ):
                        self._go.clear()
                if crash_now:
                    self.crash_result = self.crash()
                    self.crashed_at = time.monotonic()
        except BaseException as exc:  # reported by join(), never lost in a thread
            self.errors.append(exc)
            raise

    def quiet(self) -> bool:
        """Paused with no request in flight (nothing can reach the crashed part), or the pass is over."""
        with self._lock:
            paused = not self._go.is_set() and self._in_flight == 0
        return paused or not any(worker.is_alive() for worker in self._workers)

    def resume(self) -> None:
        self.resumed_at = time.monotonic()
        self._go.set()

    def join(self, timeout: float = 300) -> None:
        wait_for(lambda: not any(w.is_alive() for w in self._workers), "the burst's first pass", timeout=timeout)
        assert not self.errors, self.errors

    # ---- at-least-once

    def redeliver(self, movements: list[dict], *, timeout: float = 180) -> int:
        """Send every movement not yet answered 2xx again, round after round, until all are; returns rounds."""
        deadline = time.monotonic() + timeout
        rounds = 0
        while pending := [m for m in movements if m["transactionId"] not in self.acknowledged()]:
            if time.monotonic() > deadline:
                last = {a.transaction_id: a for a in self.answers}
                sample = [last[m["transactionId"]] for m in pending[:3]]
                raise AssertionError(f"{len(pending)} movements never answered 2xx, e.g. {sample}")
            rounds += 1
            self._queue = queue.SimpleQueue()
            for movement in pending:
                self._queue.put(movement)
            self._workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
            for worker in self._workers:
                worker.start()
            self.join(timeout=max(deadline - time.monotonic(), 1))
        return rounds

    # ---- what happened

    def acknowledged(self) -> set[str]:
        with self._lock:
            return {a.transaction_id for a in self.answers if a.acknowledged}

    def during_outage(self) -> list[Answer]:
        """Answers to requests that left after the crash completed and before the burst was resumed."""
        if self.crashed_at is None:
            return []
        end = self.resumed_at if self.resumed_at is not None else float("inf")
        return [a for a in self.answers if self.crashed_at <= a.started < end]

    def statuses(self) -> Counter:
        with self._lock:
            return Counter(a.status if a.status is not None else a.error for a in self.answers)

    def attempts(self) -> Counter:
        with self._lock:
            return Counter(a.transaction_id for a in self.answers)

    def acknowledgements(self) -> Counter:
        with self._lock:
            return Counter(a.transaction_id for a in self.answers if a.acknowledged)

    def first_acknowledged_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` until the first 2xx to a request sent after it."""
        with self._lock:
            ends = [a.started + a.latency for a in self.answers if a.acknowledged and a.started >= moment]
        return min(ends) - moment if ends else None
