"""docker-compose.yaml serves the İYS page (issue #16), checked on ``docker compose config``.

The API server gets the project's ``plugins/`` folder at Airflow's default plugins folder, the image
installs the provider (its static files included: the package is installed editable from the
mounted ``include/``), and provider discovery stays lazy, so ``plugins/iys_dashboard.py`` is what
registers the plugin there, once (tests/unit/plugins/test_registration.py covers both settings).
"""

from __future__ import annotations

import pathlib

from ui.test_compose import ROOT, config, docker_compose, dotenv  # noqa: F401  (fixtures)

PLUGINS_FOLDER = "/opt/airflow/plugins"


def test_api_server_mounts_the_plugins_folder_holding_the_iys_page(config):  # noqa: F811
    apiserver = config["services"]["airflow-apiserver"]
    mounts = {volume["target"]: volume["source"] for volume in apiserver["volumes"]}
    assert pathlib.Path(mounts[PLUGINS_FOLDER]) == ROOT / "plugins"
    assert (ROOT / "plugins" / "iys_dashboard.py").is_file()
    assert pathlib.Path(mounts["/opt/airflow/include"]) == ROOT / "include"  # the page's code and static files
    env = apiserver["environment"]
    assert env.get("AIRFLOW__CORE__PLUGINS_FOLDER", PLUGINS_FOLDER) == PLUGINS_FOLDER
    # Lazy provider discovery (Airflow's default): the provider does not register the plugin, the folder does.
    assert env.get("AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS", "true").lower() == "true"
    # The page reads the iys schema through this connection.
    assert "AIRFLOW_CONN_IYS_POSTGRES" in env
