"""Fixtures of the UI suite: the ``make airflow`` stack with throw-away state, and headless Chromium.

The stack is ``scripts/airflow_local.sh`` itself (what ``make airflow`` runs): the İYS simulator,
``airflow standalone`` with the DAGs and the provider and the connections (no pool: none is needed).
It gets free ports, a temporary ``IYS_LOCAL_DIR`` (so a throw-away ``AIRFLOW_HOME``) and two
throw-away databases on the session's PostgreSQL server (``postgres_server_uri`` in
tests/conftest.py), which are dropped afterwards. Readiness is polled, never slept for: the
script writes ``IYS_READY_FILE`` once the API server, scheduler, dag-processor and triggerer are
healthy.

The browser is Debian's Chromium (``/usr/bin/chromium``, or ``IYS_CHROMIUM``) driven by
Playwright; Playwright's own browser download is not used. When Chromium is missing and the test
runs as root, it is installed with ``apt-get install chromium`` (announced on stderr); otherwise
the suite fails with the command to run. Nothing is skipped.

Screenshots go to ``IYS_SCREENSHOT_DIR`` when set (``make screenshots`` sets it to docs/), else
into the stack's temporary directory.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from playwright.sync_api import expect

from tests_support import interruptible_like_a_terminal

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import local_stack  # noqa: E402  (scripts/ is not a package)

CHROMIUM = os.environ.get("IYS_CHROMIUM", "/usr/bin/chromium")
#: Flags that make Chromium start quietly and offline in a container, without a sandbox (root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STACK_START_TIMEOUT = 420  # seconds; a cold start takes about a minute on 2 cores
UI_TIMEOUT_MS = 60_000  # per Playwright action; the UI shares two cores with a running Airflow
# The same for every expect(): its own default (5 s) failed a DAG-list check on a busy runner. An
# expectation still fails at once when it is false for good, only a slow page gets longer.
expect.set_options(timeout=UI_TIMEOUT_MS)


# ---------------------------------------------------------------------------- the stack


def _free_port(consecutive: int = 1) -> int:
    """A port that is free now, followed by ``consecutive - 1`` more free ones."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + consecutive > 65535:
            continue
        if all(_port_is_free(port + i) for i in range(1, consecutive)):
            return port
    raise RuntimeError("no free port found")


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class AirflowStack:
    """``scripts/airflow_local.sh`` with throw-away state; ``info`` is what it announced."""

    def __init__(self, server_uri: str, workdir: pathlib.Path, extra_env: dict[str, str] | None = None) -> None:
        self.server_uri = server_uri
        self.workdir = workdir
        self.extra_env = dict(extra_env or {})
        self.db_name = f"iys_ui_{uuid.uuid4().hex[:8]}"
        self.log_file = workdir / "stack.log"
        self.process: subprocess.Popen | None = None
        self.info: dict = {}
        self._api: local_stack.AirflowApi | None = None

    @property
    def databases(self) -> tuple[str, str]:
        return self.db_name, f"{self.db_name}_airflow"

    def start(self) -> None:
        ready_file = self.workdir / "ready.json"
        # Nothing of the caller's Airflow or İYS configuration leaks in (tests/conftest.py sets
        # AIRFLOW_HOME and connections for the in-process tests); the script sets its own.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "IYS_", "_AIRFLOW"))}
        env.update(
            {
                "IYS_LOCAL_DIR": str(self.workdir),
                "IYS_SIM_PORT": str(_free_port()),
                "AIRFLOW_PORT": str(_free_port()),
                "IYS_PUSH_PORT": str(_free_port()),
                # The worker log server and the triggerer's (this + 1).
                "AIRFLOW_LOG_SERVER_PORT": str(_free_port(consecutive=2)),
                "IYS_DEMO_USERS": "200",
                "IYS_DEMO_DB": self.db_name,
                "IYS_READY_FILE": str(ready_file),
                "IYS_POSTGRES_MODE": "uri",
                "IYS_POSTGRES_URI": local_stack.ensure_database(self.server_uri, self.databases[0]),
                "AIRFLOW_METADATA_URI": local_stack.sqlalchemy_url(
                    local_stack.ensure_database(self.server_uri, self.databases[1])
                ),
                **self.extra_env,
            }
        )
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [str(ROOT / "scripts" / "airflow_local.sh")],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=interruptible_like_a_terminal,
            )
        self.info = local_stack.wait_for_stack(self.process, ready_file, STACK_START_TIMEOUT, self.log_tail)

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        standalone = self.workdir / "logs" / "airflow-standalone.log"
        if standalone.exists():
            text += "\n--- airflow-standalone.log ---\n" + standalone.read_text(errors="replace")[-chars:]
        return text[-2 * chars :]

    def stop(self) -> None:
        local_stack.stop_stack(self.process, timeout=120)
        for name in self.databases:
            local_stack.drop_database(self.server_uri, name)

    # REST API of the stack, for checks the UI should have caused ------------------------
    def api(self, path: str, payload: dict | None = None) -> dict:
        """GET ``/api/v2{path}``, or POST ``payload`` as JSON."""
        if self._api is None:
            self._api = local_stack.AirflowApi(
                self.info["api_url"], self.info["admin_user"], self.info["admin_password"], timeout=30
            )
        return self._api("GET", path) if payload is None else self._api("POST", path, json=payload)


@contextmanager
def running_stack(
    postgres_server_uri: str, request: pytest.FixtureRequest, workdir: pathlib.Path, extra_env: dict[str, str]
) -> Iterator[AirflowStack]:
    """A started :class:`AirflowStack` in ``workdir``, stopped after; its logs are kept if a test failed."""
    stack = AirflowStack(postgres_server_uri, workdir, extra_env=extra_env)
    failed_before = request.session.testsfailed
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if request.session.testsfailed > failed_before:
            sys.stderr.write(f"\n[tests/ui] kept the stack's logs in {workdir}/logs\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def wait_for_dag(stack: AirflowStack, dag_id: str, timeout: float = 180) -> None:
    """Until the DAG processor has parsed ``dag_id`` (the API answers 404 before)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            stack.api(f"/dags/{dag_id}")
            return
        except requests.HTTPError as error:
            if error.response.status_code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(2)


def trigger(stack: AirflowStack, dag_id: str, conf: dict | None = None) -> str:
    wait_for_dag(stack, dag_id)
    run = stack.api(f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
    return run["dag_run_id"]


def wait_for_run(stack: AirflowStack, dag_id: str, run_id: str, timeout: float) -> tuple[str, float]:
    """Final state of a run and the seconds it took to get there."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state = stack.api(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return state, time.monotonic() - started
        time.sleep(2)
    tis = stack.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    pytest.fail(f"{dag_id} {run_id} not finished after {timeout} s: {[(t['task_id'], t['state']) for t in tis]}")


def task_states(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for ti in stack.api(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]:
        states.setdefault(ti["task_id"], []).append(ti["state"])
    return states


@pytest.fixture(scope="session")
def airflow_stack(postgres_server_uri, request):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="iys-ui-stack-"))
    stack = AirflowStack(postgres_server_uri, workdir)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        if request.session.testsfailed:
            sys.stderr.write(f"\n[tests/ui] kept the stack's logs in {workdir}/logs\n")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------- the browser


def ensure_chromium() -> str:
    """Path of Debian's Chromium; installed with apt-get if missing and we may (root)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get") and CHROMIUM == "/usr/bin/chromium":
        sys.stderr.write("\n[tests/ui] /usr/bin/chromium is missing: apt-get install -y chromium ...\n")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
        if os.access(CHROMIUM, os.X_OK):
            return CHROMIUM
    pytest.fail(
        f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium) "
        "or point IYS_CHROMIUM at a Chromium binary",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    with sync_playwright() as playwright:
        # Playwright gives every launch a fresh temporary profile (--user-data-dir).
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def login_state(browser, airflow_stack):
    """Cookies of a session logged in through the login form (SimpleAuthManager's admin)."""
    info = airflow_stack.info
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{info['api_url']}/")
    page.locator("input[name=username]").fill(info["admin_user"])
    page.locator("input[name=password]").fill(info["admin_password"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{info['api_url']}/")
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def page(browser, login_state):
    """A fresh logged-in tab, 1280 px wide (screenshots are taken at that width)."""
    context = browser.new_context(storage_state=login_state, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(airflow_stack) -> pathlib.Path:
    configured = os.environ.get("IYS_SCREENSHOT_DIR")
    path = ROOT / configured if configured else airflow_stack.workdir / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path
