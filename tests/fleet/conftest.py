"""Fixtures of the fleet suite: Airflow with the CeleryExecutor and two workers, as on several machines.

:class:`FleetStack` starts, each in its own process group: the İYS simulator (its real 10 req/s
limit, with latency), ``airflow api-server``, ``airflow scheduler``, ``airflow dag-processor``
and two ``airflow celery worker`` processes with distinct Celery hostnames and distinct task
instance hostnames (``fleet_worker_hostname.py``). Airflow's metadata, Celery's result backend
and the İYS tables live in throw-away databases on the session's PostgreSQL server, dropped
afterwards; the broker is Redis.

Redis: the machine's server at 127.0.0.1:6379 (database 7) when it answers, else a
``redis-server`` this suite starts on a free port (installed with apt-get when missing and we
are root). Runs sharing one Redis database do not see each other's tasks: every stack sends its
tasks to a queue of its own (``[operators] default_queue``), and removes that queue's keys at
the end.

Readiness is polled, never slept for. Logs are kept when a test failed, as in tests/ui.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import local_stack  # noqa: E402  (scripts/ is not a package)

DAG_ID = "iys_initial_sync"
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/7"
STACK_START_TIMEOUT = 420  # seconds; `airflow db migrate` alone takes about a minute on 2 cores
STOP_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.5, alive=None):
    """``condition()``'s first truthy value; fails naming ``what`` at the deadline or when ``alive()`` says no."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def stop_process_group(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the group (a Celery worker then finishes its tasks), SIGKILL it if it hangs on."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    # Children (a worker's pool, task processes) may outlive their leader: the group goes either way.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# ---------------------------------------------------------------------------- Redis


def _redis_answers(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary:
        return binary
    if os.geteuid() == 0 and shutil.which("apt-get"):
        sys.stderr.write("\n[tests/fleet] redis-server is missing: apt-get install -y redis-server ...\n")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
        binary = shutil.which("redis-server")
        if binary:
            return binary
    pytest.fail("no Redis at 127.0.0.1:6379 and no redis-server binary: apt-get install -y redis-server", pytrace=False)


@pytest.fixture(scope="session")
def redis_broker_url(tmp_path_factory) -> Iterator[str]:
    """The Celery broker: the machine's Redis when it answers, else one started here (no persistence)."""
    if _redis_answers(MACHINE_REDIS_URL):
        yield MACHINE_REDIS_URL
        return
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    with open(directory / "redis.log", "wb") as log:
        process = subprocess.Popen(
            [_redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:

        def running() -> None:
            if process.poll() is not None:
                pytest.fail(f"redis-server exited {process.returncode}: {(directory / 'redis.log').read_text()}")

        wait_until(lambda: _redis_answers(url), 30, "redis-server answering PING", interval=0.1, alive=running)
        sys.stderr.write(f"\n[tests/fleet] no Redis at 127.0.0.1:6379; started redis-server on port {port}\n")
        yield url
    finally:
        stop_process_group(process, timeout=10)


# ---------------------------------------------------------------------------- the stack


@dataclass(frozen=True)
class FleetSettings:
    users: int
    rate_limit: float  # rate_limit_per_second of the iys connection
    sim_rate_limit: int = 10  # the simulator's per-IP limit (İYS's)
    latency_ms: float = 80
    jitter_ms: float = 70
    worker_concurrency: int = 2  # task slots per worker


class FleetStack:
    """The CeleryExecutor deployment of this package, on one machine, with throw-away state."""

    def __init__(self, server_uri: str, broker_url: str, workdir: pathlib.Path, settings: FleetSettings) -> None:
        self.server_uri = server_uri
        self.broker_url = broker_url
        self.workdir = workdir
        self.settings = settings
        tag = uuid.uuid4().hex[:8]
        self.db_name = f"iys_fleet_{tag}"
        self.queue = f"iys_fleet_{tag}"
        #: Celery hostnames, also the task instances' hostnames (what ``hostname_callable`` returns).
        self.workers = (f"iys-fleet-a-{tag}", f"iys-fleet-b-{tag}")
        self.logs = workdir / "logs"
        self.processes: dict[str, subprocess.Popen] = {}
        self.api_url = ""
        self.sim_url = ""
        self.pg_dsn = ""
        self.admin_password = secrets.token_urlsafe(12)
        self._api: local_stack.AirflowApi | None = None
        self._databases: list[str] = []

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._start_simulator()
        self.pg_dsn = self._database(self.db_name)
        env = self._airflow_env(local_stack.sqlalchemy_url(self._database(f"{self.db_name}_airflow")))
        self._run("db-migrate", [*self._airflow, "db", "migrate"], env, timeout=STACK_START_TIMEOUT)
        self._seed_users()
        self._spawn("api-server", [*self._airflow, "api-server", "--workers", "1"], env)
        self._spawn("scheduler", [*self._airflow, "scheduler"], env)
        self._spawn("dag-processor", [*self._airflow, "dag-processor"], env)
        for index, hostname in enumerate(self.workers):
            worker_env = {
                **env,
                # Two machines: each has its own hostname and its own log server port.
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "fleet_worker_hostname.hostname",
                "IYS_FLEET_WORKER_HOSTNAME": hostname,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests" / "fleet"), env.get("PYTHONPATH")])),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            }
            argv = [
                *self._airflow,
                "celery",
                "worker",
                "--celery-hostname",
                hostname,
                "--queues",
                self.queue,
                "--concurrency",
                str(self.settings.worker_concurrency),
                "--pid",
                str(self.workdir / f"worker-{index}.pid"),  # both share AIRFLOW_HOME, where the default lives
            ]
            self._spawn(f"worker-{'ab'[index]}", argv, worker_env)
        wait_until(self._healthy, STACK_START_TIMEOUT, "scheduler and dag-processor healthy", alive=self._alive)
        wait_until(self._workers_consume_queue, STACK_START_TIMEOUT, "both workers on the queue", alive=self._alive)

    @property
    def _airflow(self) -> list[str]:
        return [sys.executable, "-m", "airflow"]

    def _database(self, name: str) -> str:
        self._databases.append(name)
        return local_stack.ensure_database(self.server_uri, name)

    def _start_simulator(self) -> None:
        port = free_port()
        self.sim_url = f"http://127.0.0.1:{port}"
        argv = [
            sys.executable,
            "-m",
            "iys_simulator",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--username={local_stack.SIM_USERNAME}",
            f"--password={local_stack.SIM_PASSWORD}",
            f"--iys-code={local_stack.SIM_IYS_CODE}",
            f"--brand-code={local_stack.SIM_BRAND_CODE}",
            f"--rate-limit={self.settings.sim_rate_limit}",
            f"--latency-ms={self.settings.latency_ms}",
            "--seed=1",
        ]
        self._spawn("simulator", argv, {**os.environ})
        wait_until(self._simulator_answers, 60, "the İYS simulator", interval=0.1, alive=self._alive)
        self.sim("POST", "faults", {"latency_jitter_ms": self.settings.jitter_ms})

    def _simulator_answers(self) -> bool:
        try:
            return requests.get(f"{self.sim_url}/__sim/counters", timeout=2).ok
        except requests.ConnectionError:
            return False

    def _airflow_env(self, metadata_url: str) -> dict[str, str]:
        # Nothing of the caller's Airflow or İYS configuration (tests/conftest.py sets some) leaks in.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "IYS_", "_AIRFLOW"))}
        home = self.workdir / "airflow-home"
        dags = self.workdir / "dags"
        home.mkdir(exist_ok=True)
        dags.mkdir(exist_ok=True)
        # Only the DAG under test, so nothing else spends the İYS budget.
        (dags / f"{DAG_ID}.py").symlink_to(ROOT / "dags" / f"{DAG_ID}.py")
        passwords = self.workdir / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.admin_password}))
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        connections = local_stack.connections(self.pg_dsn, self.sim_url, rate_limit=self.settings.rate_limit)
        # Celery's database result backend takes SQLAlchemy URLs behind "db+".
        result_backend = "db+" + metadata_url
        env.update(
            {
                "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")]),
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.settings.worker_concurrency),
                # Every task of this stack goes to its own queue (the DAG processor stamps it on the
                # tasks at parse time): another run on the same Redis cannot take our tasks.
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
                # Shared by the API server and every worker, or tasks fail "Invalid auth token".
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "IYS_INITIAL_SYNC_CRON": "none",
                "IYS_INCREMENTAL_SYNC_CRON": "none",
                "AIRFLOW_CONN_IYS_DEFAULT": json.dumps(connections["iys_default"]),
                "AIRFLOW_CONN_IYS_POSTGRES": json.dumps(connections["iys_postgres"]),
            }
        )
        return env

    def _seed_users(self) -> None:
        import psycopg

        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            with conn.transaction():
                conn.execute(local_stack.USERS_DDL)
                local_stack.copy_users(conn, local_stack.bench_rows(1, self.settings.users))
            conn.execute("ANALYZE public.users")
        self.sim("POST", "seed_synthetic", {"count": self.settings.users, "start": 1})

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop() takes the worker's pool and tasks along
            )

    def _run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:
            result = subprocess.run(
                argv,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[2:])} exited {result.returncode}:\n{self.log_tail(name)}")

    def _alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{self.log_tail(name)}")

    def _healthy(self) -> bool:
        try:
            health = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return all(
            (health.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "dag_processor")
        )

    def _workers_consume_queue(self) -> bool:
        """Both workers answer Celery's remote control and consume this stack's queue."""
        from celery import Celery

        app = Celery(broker=self.broker_url)
        try:
            replies = app.control.inspect(destination=[f"celery@{name}" for name in self.workers], timeout=2)
            queues = replies.active_queues() or {}
        finally:
            app.close()
        return all(any(q["name"] == self.queue for q in queues.get(f"celery@{name}", [])) for name in self.workers)

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        # Newest first: workers before the scheduler and the API server their tasks report to.
        try:
            for name in reversed(list(self.processes)):
                stop_process_group(self.processes[name])
        finally:
            try:
                for name in self._databases:
                    local_stack.drop_database(self.server_uri, name)
            finally:
                self._forget_queue()

    def _forget_queue(self) -> None:
        """Remove this stack's queue, and its entries in kombu's routing tables, from the shared Redis database."""
        import redis

        client = redis.Redis.from_url(self.broker_url)
        try:
            client.delete(self.queue)
            for key in client.scan_iter(match="_kombu.binding.*"):
                for member in client.smembers(key):
                    if self.queue.encode() in member:
                        client.srem(key, member)
                if not client.scard(key):
                    client.delete(key)
        finally:
            client.close()

    # ------------------------------------------------------------------ APIs
    def api(self, method: str, path: str, **kwargs) -> dict:
        """``/api/v2{path}`` of the stack's API server, as the admin."""
        if self._api is None:
            self._api = local_stack.AirflowApi(self.api_url, "admin", self.admin_password)
        return self._api(method, path, **kwargs)

    def sim(self, method: str, path: str, payload: dict | None = None) -> dict:
        response = requests.request(method, f"{self.sim_url}/__sim/{path}", json=payload, timeout=60)
        response.raise_for_status()
        return response.json()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture
def start_fleet(postgres_server_uri, redis_broker_url, request):
    """``start_fleet(**FleetSettings)``: a started :class:`FleetStack`, stopped after the test.

    Its logs stay in a temporary directory (named on stderr) when the test failed or the stack did
    not come up; otherwise the directory is removed.
    """
    stacks: list[FleetStack] = []
    failed_before = request.session.testsfailed
    started: list[bool] = []

    def start(**settings) -> FleetStack:
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-fleet-"))
        stack = FleetStack(postgres_server_uri, redis_broker_url, workdir, FleetSettings(**settings))
        stacks.append(stack)
        stack.start()
        started.append(True)
        return stack

    yield start
    for stack in stacks:
        stack.stop()
        if request.session.testsfailed > failed_before or len(started) < len(stacks):
            sys.stderr.write(f"\n[tests/fleet] kept the stack's logs in {stack.logs}\n")
        else:
            shutil.rmtree(stack.workdir, ignore_errors=True)
