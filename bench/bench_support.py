"""What the benchmarks that run operators outside Airflow share: a throw-away Airflow home, the İYS
simulator, the two connections as ``AIRFLOW_CONN_*`` JSON, test addresses and peak memory."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import pathlib
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, datetime

import requests
from psycopg import conninfo

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import local_stack  # noqa: E402  (scripts/local_stack.py: simulator account and throw-away databases)

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_SERVER_HELP = (
    "maintenance-DB URI of the PostgreSQL server to create throw-away databases on "
    "(default: the one at 127.0.0.1:5432 when it answers, else an embedded server, as the tests do)"
)

RESULTS_DIR = ROOT / "bench" / "results"
# Never written into a results file: a server URI may carry a password, and where it goes is no figure.
_PRIVATE_ARGUMENTS = frozenset({"postgres_server", "results"})

MAX_PER_CALL = 1000  # recipients per multi-status call and consents per batch (İYS's limits)
CLIENT_ERRORS = ("400", "401", "403", "404", "422")  # İYS's success ratio: these count as failures
MOBILE_PREFIXES = ("532", "542", "505", "555")


def use_throwaway_airflow_home(prefix: str) -> str:
    """Point Airflow at a fresh home; call before anything imports airflow (it reads its config on import)."""
    home = tempfile.mkdtemp(prefix=prefix)
    os.environ.update(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL=os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
    )
    return home


def distinct_phones(count: int, seed: int) -> list[str]:
    """``count`` distinct +905XXXXXXXXX numbers on the prefixes the tests use, in random order."""
    rng = random.Random(seed)
    per_prefix = 10**7
    if count > len(MOBILE_PREFIXES) * per_prefix:
        raise ValueError("too many numbers for the prefixes")
    picks = rng.sample(range(len(MOBILE_PREFIXES) * per_prefix), count)
    return [f"+90{MOBILE_PREFIXES[p // per_prefix]}{p % per_prefix:07d}" for p in picks]


def sim_control(url: str, path: str, payload: dict | None = None, method: str = "POST") -> dict:
    response = requests.request(method, f"{url}/__sim/{path}", json=payload, timeout=300)
    response.raise_for_status()
    return response.json() if response.content else {}


def postgres_connection_json(dsn: str) -> str:
    params = conninfo.conninfo_to_dict(dsn)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": params.get("host") or "127.0.0.1",
            "port": int(params.get("port") or 5432),
            "login": params.get("user") or "postgres",
            "password": params.get("password"),
            "schema": params["dbname"],
        }
    )


def iys_connection_json(url: str, rate: float) -> str:
    """The simulator account as an ``iys`` connection; batch results are polled at once (the
    benchmarks set the simulator's ``batch_result_delay`` to 0 too, instead of İYS's 300 s)."""
    return json.dumps(
        {
            "conn_type": "iys",
            "host": url,
            "login": local_stack.SIM_USERNAME,
            "password": local_stack.SIM_PASSWORD,
            "extra": {
                "iys_code": local_stack.SIM_IYS_CODE,
                "brand_code": local_stack.SIM_BRAND_CODE,
                "shared_state_conn_id": "iys_postgres",
                "verify_ssl": False,
                "rate_limit_per_second": rate,
                "auth_requests_per_hour": 10,
                "batch_result_delay_seconds": 0,
            },
        }
    )


def simulator_account() -> dict:
    """``SimulatorServer`` keyword arguments of the account :func:`iys_connection_json` logs in with."""
    return {
        "username": local_stack.SIM_USERNAME,
        "password": local_stack.SIM_PASSWORD,
        "iys_code": local_stack.SIM_IYS_CODE,
        "brand_codes": [local_stack.SIM_BRAND_CODE],
    }


_SIMULATOR_MAIN = """
import json, sys
from iys_simulator import SimulatorServer
sim = SimulatorServer(host="127.0.0.1", port=0, **json.loads(sys.argv[1])).start()
print(sim.url, flush=True)
sys.stdin.read()
sim.stop()
"""


class SimulatorProcess:
    """The simulator in a process of its own, so its CPU and memory are not counted as ours.

    It serves until its stdin is closed (``stop``), so it never outlives the benchmark.
    """

    def __init__(self, **config) -> None:
        self.config = {**simulator_account(), **config}
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> SimulatorProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SIMULATOR_MAIN, json.dumps(self.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.stop()
            raise RuntimeError("the simulator process did not start")
        return self

    def peak_rss_mb(self) -> float | None:
        return _vm_hwm_mb(f"/proc/{self.process.pid}/status") if self.process else None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def reset_peak_rss() -> bool:
    """Start a new peak-RSS measurement for this process (Linux: ``clear_refs`` 5); False where unsupported."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """This process's peak RSS since :func:`reset_peak_rss` (else since it started)."""
    hwm = _vm_hwm_mb("/proc/self/status")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float | None:
    """This process's resident memory now (None where ``/proc`` does not tell)."""
    return _proc_status_mb("/proc/self/status", "VmRSS:")


def _vm_hwm_mb(status_path: str) -> float | None:
    return _proc_status_mb(status_path, "VmHWM:")


def _proc_status_mb(status_path: str, field: str) -> float | None:
    try:
        for line in pathlib.Path(status_path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def print_peak_rss_growth(small: dict, large: dict, small_rows: int, large_rows: int) -> None:
    """How much peak RSS grew from the smallest day to the largest (each a result with ``peak_rss`` and
    ``fresh_peak``): flat means memory does not grow with the day's size."""
    note = "" if small["fresh_peak"] and large["fresh_peak"] else " (peak since process start: clear_refs unavailable)"
    print(
        f"\npeak RSS grew {large['peak_rss'] - small['peak_rss']:+.1f} MB from {small_rows:,} to {large_rows:,} "
        f"movements ({large_rows / small_rows:.0f}× the day){note}"
    )


def verdict(problems: list[str]) -> str:
    """``pass``, or ``FAIL — `` and the problems: how every benchmark with a target ends."""
    return "FAIL — " + "; ".join(problems) if problems else "pass"


def print_verdict(report: dict, problems: list[str]) -> None:
    """The verdict line, then the whole report as one JSON line (what the benchmarks' tests read)."""
    print(f"\nresult: {verdict(problems)}")
    print(json.dumps({**report, "ok": not problems, "problems": problems}, sort_keys=True))


def postgres_server_uri(explicit: str | None = None) -> str:
    """The server a benchmark makes its throw-away databases on, as tests/conftest.py chooses it.

    ``explicit`` (``--postgres-server``) when given; else the machine's own at 127.0.0.1:5432 when it
    answers; else an embedded server (pgserver, a requirement of ``make install``) in a temporary data
    directory, stopped and removed when the benchmark exits.
    """
    if explicit:
        return explicit
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return LOCAL_POSTGRES
    except OSError:
        pass
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its commands' output would bury the figures
    data_dir = tempfile.mkdtemp(prefix="iys-bench-pgserver-")
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    atexit.register(server.cleanup)  # runs before the removal above (atexit is last in, first out)
    print(f"[bench] no PostgreSQL at 127.0.0.1:5432: an embedded server in {data_dir}", file=sys.stderr)
    return server.get_uri()


def add_results_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """``--results``: where the run's raw figures go as JSON (``bench/results/<name>.json`` by default:
    the files docs/benchmarks.md quotes are kept in the repository, so a table can be checked against its run)."""
    parser.add_argument(
        "--results",
        default=str(RESULTS_DIR / f"{name}.json"),
        help=f"raw results as JSON (default: bench/results/{name}.json)",
    )


def write_results(args: argparse.Namespace, name: str, figures) -> pathlib.Path:
    """Write this run's figures with what produced them: arguments, commit, machine and time."""
    path = pathlib.Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "arguments": {key: value for key, value in sorted(vars(args).items()) if key not in _PRIVATE_ARGUMENTS},
        "commit": _commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        "figures": figures,
    }
    path.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    print(f"(raw results: {path})", file=sys.stderr, flush=True)
    return path


def _commit() -> str | None:
    """The checkout's commit, marked ``-dirty`` when it has uncommitted changes (None outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if dirty else head


# ---------------------------------------------------------------------------- the whole local stack


class ThrowawayStack:
    """``scripts/airflow_local.sh`` with throw-away state: its own folder, databases and ports, a DAG
    folder holding only ``dag_ids``; ``env`` adds the benchmark's own settings. ``args`` gives
    ``sim_port``, ``api_port``, ``log_port``, ``postgres_server`` and ``keep``."""

    def __init__(self, args: argparse.Namespace, dag_ids: tuple[str, ...], env: dict[str, str], *, log) -> None:
        import uuid

        self.args, self.dag_ids, self.extra_env, self.log = args, dag_ids, env, log
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-bench-"))
        self.db_name = f"iys_bench_{uuid.uuid4().hex[:8]}"
        self.server_uri: str | None = None
        self.process: subprocess.Popen | None = None
        self.info: dict = {}
        self.rest: local_stack.AirflowApi | None = None

    def start(self) -> None:
        args = self.args
        dags = self.workdir / "dags"
        dags.mkdir()
        for dag_id in self.dag_ids:
            (dags / f"{dag_id}.py").symlink_to(ROOT / "dags" / f"{dag_id}.py")
        ready_file = self.workdir / "ready.json"
        env = {
            **os.environ,
            "IYS_LOCAL_DIR": str(self.workdir),
            "IYS_SIM_PORT": str(args.sim_port),
            "AIRFLOW_PORT": str(args.api_port),
            "AIRFLOW_LOG_SERVER_PORT": str(args.log_port),
            "IYS_DEMO_USERS": "0",
            "IYS_DEMO_DB": self.db_name,
            "IYS_READY_FILE": str(ready_file),
            "AIRFLOW_DAGS_FOLDER": str(dags),
            **self.extra_env,
        }
        env.pop("IYS_POSTGRES_URI", None)
        self.server_uri = args.postgres_server or (LOCAL_POSTGRES if _reachable(LOCAL_POSTGRES) else None)
        if self.server_uri:
            # Throw-away databases on that server; dropped in stop().
            env["IYS_POSTGRES_URI"] = local_stack.ensure_database(self.server_uri, self.db_name)
            env["AIRFLOW_METADATA_URI"] = local_stack.sqlalchemy_url(
                local_stack.ensure_database(self.server_uri, f"{self.db_name}_airflow")
            )
            env["IYS_POSTGRES_MODE"] = "uri"
        else:
            env["IYS_POSTGRES_MODE"] = "embedded"  # data directory inside the throw-away workdir
        self.log(f"starting the stack in {self.workdir} (log: {self.workdir}/stack.log)")
        self.process = subprocess.Popen(
            [str(ROOT / "scripts" / "airflow_local.sh")],
            cwd=ROOT,
            env=env,
            stdout=open(self.workdir / "stack.log", "wb"),  # noqa: SIM115 - lives as long as the stack
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.info = local_stack.wait_for_stack(
            self.process, ready_file, 420, lambda: (self.workdir / "stack.log").read_text()[-3000:]
        )
        self.log(f"stack ready: Airflow {self.info['api_url']}, simulator {self.info['sim_url']}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.log("stopping the stack")
        local_stack.stop_stack(self.process, timeout=90)
        if self.args.keep:
            self.log(f"kept {self.workdir} and databases {self.db_name}, {self.db_name}_airflow")
            return
        if self.server_uri:
            for name in (self.db_name, f"{self.db_name}_airflow"):
                local_stack.drop_database(self.server_uri, name)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def api(self, method: str, path: str, **kwargs) -> dict:
        """The stack's REST API (``/api/v2``) as its admin."""
        if self.rest is None:
            self.rest = local_stack.AirflowApi(
                self.info["api_url"], self.info["admin_user"], self.info["admin_password"]
            )
        return self.rest(method, path, **kwargs)

    def unpause(self, dag_id: str, timeout: float = 240) -> None:
        """Wait until the DAG processor has parsed ``dag_id``, and unpause it."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.api("GET", f"/dags/{dag_id}").get("is_paused"):
                    self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                return
            except requests.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)  # polling the API until the DAG appears, with a deadline

    def sim(self, method: str, path: str, payload: dict | None = None) -> dict:
        """The simulator's control API."""
        response = requests.request(method, f"{self.info['sim_url']}/__sim/{path}", json=payload, timeout=60)
        response.raise_for_status()
        return response.json()


def _reachable(uri: str) -> bool:
    import psycopg

    try:
        psycopg.connect(uri, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False
