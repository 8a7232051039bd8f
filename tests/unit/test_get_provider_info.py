"""The provider is discovered through its entry point and registers the ``iys`` connection type."""

from __future__ import annotations

import json
import subprocess
import sys

from tests_support import iys_connection_json_with


def test_provider_and_connection_fields_are_registered():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "iys-airflow-provider" in manager.providers
    assert manager.hooks["iys"].hook_class_name == "iys_provider.hooks.iys.IysHook"
    widgets = manager.connection_form_widgets
    for field in ("iys_code", "brand_code", "rate_limit_per_second", "batch_result_delay_seconds", "timeout"):
        assert f"extra__iys__{field}" in widgets, field
    behaviour = manager.field_behaviours["iys"]
    assert behaviour["relabeling"]["host"] == "API base URL"


def test_the_form_says_the_test_button_leaves_from_the_api_servers_ip():
    from airflow.providers_manager import ProvidersManager

    widgets = ProvidersManager().connection_form_widgets
    for field in ("egress_ip", "proxies"):
        description = widgets[f"extra__iys__{field}"].field["description"]
        assert "Test button" in description, field
        assert "API server's IP" in description, field


def _airflow(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_cli_keeps_the_iys_type_and_tests_the_connection(airflow_db, sim, monkeypatch):
    extra = json.loads(iys_connection_json_with(sim.url))["extra"]
    added = _airflow(
        "connections",
        "add",
        "iys_cli",
        "--conn-type",
        "iys",
        "--conn-host",
        sim.url,
        "--conn-login",
        "iys-test-user",
        "--conn-password",
        "s3cret-iys-password",
        "--conn-extra",
        json.dumps(extra),
    )
    assert added.returncode == 0, added.stderr
    got = _airflow("connections", "get", "iys_cli", "-o", "json")
    assert got.returncode == 0, got.stderr
    stored = json.loads(got.stdout)[0]
    assert stored["conn_type"] == "iys"
    assert int(stored["extra_dejson"]["brand_code"]) == extra["brand_code"]
    assert int(stored["extra_dejson"]["iys_code"]) == extra["iys_code"]

    tested = _airflow("connections", "test", "iys_cli")
    assert "success" in (tested.stdout + tested.stderr).lower(), tested.stdout + tested.stderr
    assert "s3cret-iys-password" not in tested.stdout + tested.stderr
    providers = _airflow("providers", "list")
    assert "iys-airflow-provider" in providers.stdout


def test_form_defaults_are_the_settings_model_defaults():
    from iys_provider.get_provider_info import get_provider_info
    from iys_provider.hooks.settings import IysConnectionSettings

    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    extras = IysConnectionSettings.model_fields.keys() - {"base_url", "username", "password"}
    assert fields.keys() == extras  # every extra the hook reads is on the form, and nothing else
    for name in extras:
        model_field = IysConnectionSettings.model_fields[name]
        if model_field.is_required():
            assert "default" not in fields[name]["schema"], name
        else:
            assert fields[name]["schema"]["default"] == model_field.default, name
    assert "H084" in fields["auth_block_seconds"]["description"]


def test_a_default_changed_in_the_settings_model_changes_the_form(monkeypatch):
    from iys_provider.get_provider_info import get_provider_info
    from iys_provider.hooks.settings import IysConnectionSettings

    monkeypatch.setattr(IysConnectionSettings.model_fields["timeout"], "default", 45.0)
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert fields["timeout"]["schema"]["default"] == 45.0


def _defined_in(package: str, base: type) -> dict[str, list[str]]:
    """Every module of ``package`` that defines a concrete subclass of ``base``, with those classes."""
    import importlib
    import inspect
    import pkgutil

    found: dict[str, list[str]] = {}
    for module_info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{module_info.name}")
        classes = [
            name
            for name, value in vars(module).items()
            if inspect.isclass(value)
            and issubclass(value, base)
            and value.__module__ == module.__name__
            and not inspect.isabstract(value)  # IysPollingTrigger: its look() is abstract
            and "Base" not in name  # IysBaseOperator: the operators' base, no task of its own
        ]
        if classes:
            found[module.__name__] = classes
    return found


def test_provider_info_lists_every_operator_sensor_and_trigger_module_and_fits_airflows_schema():
    import importlib.resources

    import jsonschema
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk import BaseOperator, BaseSensorOperator
    from airflow.triggers.base import BaseTrigger

    from iys_provider.get_provider_info import get_provider_info

    info = get_provider_info()
    schema = json.loads(importlib.resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)

    def listed(section: str) -> set[str]:
        return {module for entry in info[section] for module in entry["python-modules"]}

    sensors = _defined_in("iys_provider.sensors", BaseSensorOperator)
    operators = {
        module: classes
        for module, classes in _defined_in("iys_provider.operators", BaseOperator).items()
        if module not in sensors
    }
    assert listed("sensors") == set(sensors)
    assert listed("operators") == set(operators)
    assert listed("triggers") == set(_defined_in("iys_provider.triggers", BaseTrigger))
    # Airflow reads them: `airflow providers triggers` shows ours.
    assert {t.trigger_class_name for t in ProvidersManager().trigger if t.package_name == "iys-airflow-provider"} == (
        listed("triggers")
    )
