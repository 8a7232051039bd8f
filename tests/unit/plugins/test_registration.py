"""The "iys" plugin is registered exactly once, whichever way it is deployed.

Airflow 3.3 loads the plugins folder first, then (only with ``[core] lazy_discover_providers =
False``) the plugins named in provider infos; a second plugin of the same name becomes a plugin
import error. Each case runs Airflow's own plugin loading in a fresh interpreter, with the
project's ``plugins/`` folder and the installed provider.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from iys_provider.get_provider_info import get_provider_info
from iys_provider.plugins.iys_plugin import IysPlugin, plugin_for_plugins_folder

ROOT = pathlib.Path(__file__).resolve().parents[3]
LOAD_PLUGINS = """
import json
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
print(json.dumps({"plugins": [[p.name, str(p.source) if p.source else "provider"] for p in plugins],
                  "errors": errors}))
"""


def load_plugins(plugins_folder: pathlib.Path, lazy: bool) -> dict:
    env = {
        **os.environ,
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": str(lazy),
    }
    result = subprocess.run(
        [sys.executable, "-c", LOAD_PLUGINS], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


#: The OpenLineage provider (2.20.3) ships its plugin both as an ``airflow.plugins`` entry point and in
#: its provider info: with eager discovery Airflow loads it once and records the second as this error.
#: It is OpenLineage's own and harmless; any other error is not.
OPENLINEAGE_TWICE = {"OpenLineageProviderPlugin": "Plugin 'OpenLineageProviderPlugin' already registered, skipping"}


def other_errors(loaded: dict, *, lazy: bool) -> dict:
    errors = dict(loaded["errors"])
    if not lazy and errors.items() >= OPENLINEAGE_TWICE.items():
        for name in OPENLINEAGE_TWICE:
            del errors[name]
    return errors


def test_provider_info_names_the_plugin_class():
    assert get_provider_info()["plugins"] == [
        {"name": "iys", "plugin-class": "iys_provider.plugins.iys_plugin.IysPlugin"}
    ]


def test_plugins_folder_file_steps_aside_only_when_the_provider_registers_it():
    assert plugin_for_plugins_folder(lazy_discover_providers=True) is IysPlugin
    assert plugin_for_plugins_folder(lazy_discover_providers=False) is None  # the provider is installed here


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy-discovery", "eager-discovery"])
def test_plugins_folder_and_provider_register_it_once(lazy):
    loaded = load_plugins(ROOT / "plugins", lazy)
    iys = [source for name, source in loaded["plugins"] if name == "iys"]
    assert len(iys) == 1, loaded
    assert iys[0] == ("provider" if not lazy else "$PLUGINS_FOLDER/iys_dashboard.py"), loaded
    assert not other_errors(loaded, lazy=lazy), loaded


def test_provider_alone_registers_it_without_lazy_discovery(tmp_path):
    loaded = load_plugins(tmp_path, lazy=False)  # an empty plugins folder: the pip-installed route
    assert [name for name, _ in loaded["plugins"]].count("iys") == 1
    assert not other_errors(loaded, lazy=False), loaded


def test_plugin_adds_a_nav_page_backed_by_its_app():
    (app,) = IysPlugin.fastapi_apps
    assert app["url_prefix"] == "/iys"
    (view,) = IysPlugin.external_views
    assert (view["destination"], view["href"]) == ("nav", "/iys/")
