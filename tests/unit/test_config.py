"""The deployment settings: ``[iys]``, ``AIRFLOW__IYS__*`` and the ``IYS_*`` aliases, read once and checked."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from airflow.sdk import conf

from iys_provider.config import (
    OPTIONS,
    IysConfigError,
    IysSettings,
    connection_environment_variable,
    load_settings,
    provider_config,
    shell_can_export,
    variable_environment_variable,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_settings(monkeypatch):
    """Every test starts from an installation that sets nothing."""
    for option in OPTIONS:
        monkeypatch.delenv(option.airflow_variable, raising=False)
        monkeypatch.delenv(option.alias, raising=False)


@pytest.fixture
def airflow_cfg():
    """Options as if written in airflow.cfg's [iys] section (conf.set), removed afterwards."""
    written: list[str] = []

    def write(option: str, value: str) -> None:
        if not conf.has_section("iys"):
            conf.add_section("iys")
        conf.set("iys", option, value)
        written.append(option)

    yield write
    for option in written:
        conf.remove_option("iys", option)


def test_nothing_set_gives_the_documented_defaults():
    assert load_settings() == IysSettings(
        connections=("iys_default",),
        pool=None,
        api_concurrency=4,
        pool_check_seconds=300,
        queue=None,
        initial_sync_cron="0 1 * * *",
        incremental_sync_cron="0 2 * * *",
        reconciliation_cron="0 5 * * *",
        consent_events_retention_days=None,
        finished_updates_retention_days=None,
        reconciliation_archive="default",
        reconciliation_file_format="auto",
        reconciliation_hash_wait_minutes=15,
        dashboard_postgres_conn_id="iys_postgres",
    )


def test_the_spellings_of_an_option():
    option = next(o for o in OPTIONS if o.name == "api_concurrency")
    assert (option.airflow_variable, option.alias) == ("AIRFLOW__IYS__API_CONCURRENCY", "IYS_API_CONCURRENCY")


def test_airflow_spelling_then_alias_then_airflow_cfg(monkeypatch, airflow_cfg):
    airflow_cfg("api_concurrency", "6")
    assert load_settings().api_concurrency == 6
    monkeypatch.setenv("IYS_API_CONCURRENCY", "5")
    assert load_settings().api_concurrency == 5  # the environment wins over the file, as in Airflow
    monkeypatch.setenv("AIRFLOW__IYS__API_CONCURRENCY", "5")
    assert load_settings().api_concurrency == 5  # both spellings agreeing is fine
    monkeypatch.delenv("IYS_API_CONCURRENCY")
    monkeypatch.setenv("AIRFLOW__IYS__API_CONCURRENCY", "3")
    assert load_settings().api_concurrency == 3


def test_both_environment_spellings_disagreeing_is_an_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW__IYS__POOL", "iys_api")
    monkeypatch.setenv("IYS_POOL", "other")
    with pytest.raises(
        IysConfigError, match=r"AIRFLOW__IYS__POOL='iys_api' and IYS_POOL='other' disagree; set one of them"
    ):
        load_settings()


def test_an_empty_alias_is_ignored(monkeypatch, airflow_cfg):
    """docker-compose passes an unset variable as an empty string: the next source decides."""
    airflow_cfg("queue", "from_cfg")
    for option in OPTIONS:
        monkeypatch.setenv(option.alias, "")
    settings = load_settings()
    assert settings.queue == "from_cfg"
    assert settings.model_dump(exclude={"queue"}) == IysSettings().model_dump(exclude={"queue"})


def test_an_empty_value_means_the_default(monkeypatch, airflow_cfg):
    """As in Airflow, AIRFLOW__IYS__<OPTION> wins over airflow.cfg even when empty; empty is the default."""
    airflow_cfg("queue", "from_cfg")
    for option in OPTIONS:
        monkeypatch.setenv(option.airflow_variable, "  ")
    assert load_settings() == IysSettings()


def test_text_is_parsed_into_values(monkeypatch):
    for name, value in {
        "IYS_CONNECTIONS": " iys_a , iys-b.2 ,",
        "IYS_POOL": "iys_api",
        "AIRFLOW__IYS__POOL_CHECK_SECONDS": "12.5",
        "IYS_QUEUE": "iys",
        "IYS_INITIAL_SYNC_CRON": "none",
        "IYS_INCREMENTAL_SYNC_CRON": "OFF",
        "IYS_RECONCILIATION_CRON": "30 6 * * 1-5",
        "IYS_CONSENT_EVENTS_RETENTION_DAYS": "90",
        "AIRFLOW__IYS__FINISHED_UPDATES_RETENTION_DAYS": "none",
        "IYS_RECONCILIATION_ARCHIVE": "file:///var/lib/iys",
        "IYS_RECONCILIATION_FILE_FORMAT": "no_header+crlf",
        "IYS_RECONCILIATION_HASH_WAIT_MINUTES": "2.5",
        "IYS_DASHBOARD_POSTGRES_CONN_ID": "iys_readonly",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.connections == ("iys_a", "iys-b.2")
    assert (settings.pool, settings.pool_check_seconds, settings.queue) == ("iys_api", 12.5, "iys")
    assert (settings.initial_sync_cron, settings.incremental_sync_cron) == (None, None)
    assert settings.reconciliation_cron == "30 6 * * 1-5"
    assert (settings.consent_events_retention_days, settings.finished_updates_retention_days) == (90, None)
    assert settings.reconciliation_archive == "file:///var/lib/iys"
    assert settings.reconciliation_file_format == "no_header+crlf"
    assert settings.reconciliation_hash_wait_minutes == 2.5
    assert settings.dashboard_postgres_conn_id == "iys_readonly"


@pytest.mark.parametrize("value", ["none", "None", "default_pool"])
def test_the_default_pool_spellings_mean_no_pool(value, monkeypatch):
    monkeypatch.setenv("IYS_POOL", value)
    assert load_settings().pool is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("IYS_API_CONCURRENCY", "0", "IYS_API_CONCURRENCY must be a whole number of at least 1, not '0'"),
        ("AIRFLOW__IYS__API_CONCURRENCY", "four", "AIRFLOW__IYS__API_CONCURRENCY must be a whole number of at least 1"),
        ("IYS_API_CONCURRENCY", "2.5", "IYS_API_CONCURRENCY must be a whole number of at least 1, not '2.5'"),
        ("IYS_POOL_CHECK_SECONDS", "-1", r"IYS_POOL_CHECK_SECONDS must be a number of seconds \(0 or more\), not '-1'"),
        ("IYS_POOL_CHECK_SECONDS", "nan", "IYS_POOL_CHECK_SECONDS must be a number of seconds"),
        ("IYS_INITIAL_SYNC_CRON", "nightly", "IYS_INITIAL_SYNC_CRON='nightly' is not a cron expression"),
        (
            "AIRFLOW__IYS__RECONCILIATION_CRON",
            "0 25 * * *",
            "AIRFLOW__IYS__RECONCILIATION_CRON='0 25 \\* \\* \\*' is not",
        ),
        (
            "IYS_CONSENT_EVENTS_RETENTION_DAYS",
            "3",
            "IYS_CONSENT_EVENTS_RETENTION_DAYS='3': consent_events_retention_days must be at least 8 days",
        ),
        ("IYS_FINISHED_UPDATES_RETENTION_DAYS", "a year", "IYS_FINISHED_UPDATES_RETENTION_DAYS='a year': "),
        ("AIRFLOW__IYS__RECONCILIATION_FILE_FORMAT", "tsv", "AIRFLOW__IYS__RECONCILIATION_FILE_FORMAT='tsv': unknown"),
        ("IYS_RECONCILIATION_HASH_WAIT_MINUTES", "-5", "IYS_RECONCILIATION_HASH_WAIT_MINUTES='-5' must be 0 minutes"),
        ("AIRFLOW__IYS__CONNECTIONS", "iys a", "AIRFLOW__IYS__CONNECTIONS: 'iys a' cannot name a brand's DAGs"),
        ("AIRFLOW__IYS__CONNECTIONS", "a,b,a", "AIRFLOW__IYS__CONNECTIONS lists a more than once"),
    ],
)
def test_an_invalid_value_names_where_it_was_set_and_why(variable, value, message, monkeypatch):
    monkeypatch.setenv(variable, value)
    with pytest.raises(IysConfigError, match=message):
        load_settings()


def test_an_invalid_value_in_airflow_cfg_names_the_option(airflow_cfg):
    airflow_cfg("api_concurrency", "0")
    with pytest.raises(IysConfigError, match=r"\[iys\] api_concurrency must be a whole number of at least 1"):
        load_settings()


def test_reading_some_options_ignores_a_mistake_in_the_others(monkeypatch):
    """The İYS page needs one setting; a broken DAG setting must not take it down."""
    monkeypatch.setenv("IYS_CONNECTIONS", "a,a")
    monkeypatch.setenv("IYS_DASHBOARD_POSTGRES_CONN_ID", "iys_readonly")
    assert load_settings("dashboard_postgres_conn_id").dashboard_postgres_conn_id == "iys_readonly"
    assert load_settings("api_concurrency").connections == ("iys_default",)
    with pytest.raises(ValueError, match="no such \\[iys\\] option: api_concurency"):
        load_settings("api_concurency")


def test_the_settings_cannot_be_changed_once_read():
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.api_concurrency = 9  # type: ignore[misc]


def test_defaults_kept_here_agree_with_the_modules_that_use_them():
    from iys_provider.hooks.iys import IysHook
    from iys_provider.operators.base import DEFAULT_POSTGRES_CONN_ID
    from iys_provider.operators.reconciliation import DEFAULT_ARCHIVE

    defaults = IysSettings()
    assert defaults.connections == (IysHook.default_conn_name,)
    assert defaults.reconciliation_archive == DEFAULT_ARCHIVE
    assert defaults.dashboard_postgres_conn_id == DEFAULT_POSTGRES_CONN_ID == "iys_postgres"


def test_every_setting_has_one_option_and_the_provider_declares_it():
    assert [o.name for o in OPTIONS] == list(IysSettings.model_fields)
    section = provider_config()["iys"]["options"]
    assert list(section) == [o.name for o in OPTIONS]
    assert section["api_concurrency"]["default"] == "4"
    assert section["connections"]["default"] == "iys_default"
    assert section["reconciliation_hash_wait_minutes"]["default"] == "15"
    assert section["pool"]["default"] is None
    assert {o["type"] for o in section.values()} <= {"string", "integer", "float", "boolean"}


def test_the_provider_metadata_with_the_section_matches_airflows_schema():
    import importlib.resources

    import jsonschema

    from iys_provider.get_provider_info import get_provider_info

    schema = json.loads(importlib.resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)
    assert get_provider_info()["config"] == provider_config()


def test_airflow_config_shows_the_section_with_defaults_and_overrides():
    """What `airflow config` prints comes from the provider's declared section, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IYS_", "AIRFLOW__IYS__"))}
    shown = subprocess.run(
        [sys.executable, "-m", "airflow", "config", "list", "--section", "iys", "--show-values", "--defaults"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    assert "[iys]" in shown.stdout
    for option in OPTIONS:
        assert re.search(rf"^#? ?{option.name} = ", shown.stdout, re.MULTILINE), option.name
    value = subprocess.run(
        [sys.executable, "-m", "airflow", "config", "get-value", "iys", "api_concurrency"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "AIRFLOW__IYS__API_CONCURRENCY": "3"},
    )
    assert value.stdout.strip().splitlines()[-1] == "3", value.stderr


def test_docs_table_lists_every_setting_with_its_spellings_and_default():
    text = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    section = text.split("\n## Deployment settings\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    by_name = {re.match(r"\| `(\w+)`", row).group(1): row for row in rows}
    assert list(by_name) == [o.name for o in OPTIONS]
    for option in OPTIONS:
        row = by_name[option.name]
        assert f"`{option.airflow_variable}`" in row and f"`{option.alias}`" in row, option.name
        default = option.default_text
        assert (f"`{default}`" in row) if default is not None else ("unset" in row), option.name


# --- connection ids with "-" or "." --------------------------------------------------------------


def test_ids_with_dash_or_dot_are_accepted_and_their_environment_spelling_is_kept(monkeypatch):
    """Airflow reads ``AIRFLOW_CONN_`` + the id upper-cased, '-' and '.' kept: valid in the environment,
    though a shell cannot ``export`` such a name."""
    from airflow.sdk import BaseHook, Variable

    from iys_provider.people.user_source import recipients_sql_variable
    from tests_support import iys_connection_json_with

    monkeypatch.setenv("IYS_CONNECTIONS", "iys-brand.a,iys_brand_b")
    assert load_settings().connections == ("iys-brand.a", "iys_brand_b")

    conn_variable = connection_environment_variable("iys-brand.a")
    sql_variable = variable_environment_variable(recipients_sql_variable("iys-brand.a"))
    assert (conn_variable, sql_variable) == (
        "AIRFLOW_CONN_IYS-BRAND.A",
        "AIRFLOW_VAR_IYS_RECIPIENTS_SQL__IYS-BRAND.A",
    )
    assert not shell_can_export(conn_variable) and not shell_can_export(sql_variable)
    assert shell_can_export(connection_environment_variable("iys_brand_b"))

    monkeypatch.setenv(conn_variable, iys_connection_json_with("http://iys.invalid"))
    monkeypatch.setenv(sql_variable, "SELECT 1")
    assert BaseHook.get_connection("iys-brand.a").host == "http://iys.invalid"
    assert Variable.get("iys_recipients_sql__iys-brand.a") == "SELECT 1"


def test_a_brands_dag_docs_name_its_environment_variables(monkeypatch):
    from iys_provider.dags import build_dags

    monkeypatch.setenv("IYS_CONNECTIONS", "iys-brand.a,iys_brand_b")
    dag = next(d for d in build_dags() if d.dag_id == "iys_initial_sync__iys-brand.a")
    assert "`AIRFLOW_CONN_IYS-BRAND.A`" in dag.doc_md
    assert "`AIRFLOW_VAR_IYS_RECIPIENTS_SQL__IYS-BRAND.A`" in dag.doc_md


# --- the parse-time value reaches the worker ---------------------------------------------------


def test_the_plan_gets_api_concurrency_as_its_argument_when_the_dag_is_parsed(monkeypatch):
    """The worker plans for what its parse of the DAG file gave; execute reads no setting."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__IYS__API_CONCURRENCY", "3")
    bag = DagBag(dag_folder=str(ROOT / "dags" / "iys_initial_sync.py"), safe_mode=False)
    assert bag.import_errors == {}
    dag = bag.dags["iys_initial_sync"]
    plan = dag.get_task("plan_batches")
    assert plan.parallel_batches == 3
    assert dag.get_task("sync_batch").partial_kwargs["max_active_tis_per_dagrun"] == 3

    # A later change of the environment (another process, another value) does not reach this task.
    monkeypatch.setenv("AIRFLOW__IYS__API_CONCURRENCY", "7")
    monkeypatch.setenv("IYS_API_CONCURRENCY", "7")
    assert plan._parallel_batches() == 3


def test_a_plan_operator_built_by_hand_reads_the_setting_when_created(monkeypatch):
    from iys_provider.operators.initial_sync import IysPlanInitialSyncOperator

    monkeypatch.setenv("IYS_API_CONCURRENCY", "2")
    assert IysPlanInitialSyncOperator(task_id="plan").parallel_batches == 2
    assert IysPlanInitialSyncOperator(task_id="plan_given", parallel_batches=5).parallel_batches == 5
    monkeypatch.delenv("IYS_API_CONCURRENCY")
    assert IysPlanInitialSyncOperator(task_id="plan_default").parallel_batches == 4
