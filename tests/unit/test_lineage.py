"""Lineage naming: the iys:// URI handler, factory and converter, the dataset names, the source query's tables."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

import pytest
from airflow.sdk import Asset

import iys_provider
from iys_provider.lineage import (
    LineagePlaces,
    TaskLineage,
    api_host,
    convert_asset_to_openlineage,
    create_asset,
    iys_asset_uri,
    operator_lineage,
    sanitize_uri,
    source_tables,
)
from iys_provider.operators.base import IysConnections

PACKAGE = pathlib.Path(iys_provider.__file__).parent


# --------------------------------------------------------------------------- the iys:// scheme


def test_the_scheme_is_registered_with_handler_factory_and_converter():
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    for manager in (ProvidersManagerTaskRuntime(),):
        assert manager.asset_uri_handlers["iys"] is sanitize_uri
        assert manager.asset_factories["iys"] is create_asset
        assert manager.asset_to_openlineage_converters["iys"] is convert_asset_to_openlineage


@pytest.mark.parametrize(
    "uri",
    ["iys://consents/", "iys://consents/iys_brand_a", "iys://push-inbox/iys_default", "iys://push-inbox/a.b-c"],
)
def test_the_packages_own_asset_uris_stay_as_they_are(uri):
    # These URIs identify assets DAGs already schedule on: the handler must not move them.
    assert Asset(name="x", uri=uri).uri == uri
    assert Asset(name="x", uri=uri).normalized_uri == uri


def test_the_assets_the_dags_use_are_unchanged():
    from iys_provider.assets import CONSENTS_ASSET, consents_asset
    from iys_provider.dags.common import IysBrand
    from iys_provider.dags.push import inbox_asset

    assert CONSENTS_ASSET.uri == "iys://consents/"
    assert consents_asset("iys_brand_b").uri == "iys://consents/iys_brand_b"
    assert inbox_asset(IysBrand()).uri == "iys://push-inbox/iys_default"


def test_an_api_uri_is_normalised_to_a_lower_case_host():
    assert Asset(uri="iys://API.IYS.org.tr/700001/700002").uri == "iys://api.iys.org.tr/700001/700002"
    assert Asset(uri="iys://Sim.Local:8443/1/2/").uri == "iys://sim.local:8443/1/2"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("iys://user@api.iys.org.tr/1/2", "user info"),
        ("iys://api.iys.org.tr/1", "iys_code"),
        ("iys://api.iys.org.tr/1/2/3", "iys_code"),
        ("iys://api.iys.org.tr/abc/2", "iys_code"),
        ("iys:///1/2", "needs a host"),
    ],
)
def test_the_handler_refuses_what_is_not_an_iys_uri(uri, reason):
    with pytest.raises(ValueError, match=reason):
        sanitize_uri(urlsplit(uri))


def test_a_password_never_reaches_the_uri():
    # Airflow drops the user info, with a warning, before the handler sees the URI.
    with pytest.warns(UserWarning, match="password"):
        asset = Asset(uri="iys://user:secret@api.iys.org.tr/1/2")
    assert asset.uri == "iys://api.iys.org.tr/1/2"


def test_the_factory_builds_the_api_asset():
    asset = create_asset(host="API.iys.org.tr", iys_code=700001, brand_code=700002)
    assert asset.uri == "iys://api.iys.org.tr/700001/700002"
    assert asset.uri == iys_asset_uri("https://api.iys.org.tr", 700001, 700002)


@pytest.mark.parametrize(
    ("uri", "namespace", "name"),
    [
        ("iys://api.iys.org.tr/700001/700002", "iys://api.iys.org.tr", "700001/700002"),
        ("iys://127.0.0.1:8080/1/2", "iys://127.0.0.1:8080", "1/2"),
        ("iys://consents/", "iys://consents", "iys_default"),
        ("iys://consents/iys_brand_a", "iys://consents", "iys_brand_a"),
        ("iys://push-inbox/iys_default", "iys://push-inbox", "iys_default"),
    ],
)
def test_the_converter_names_the_openlineage_dataset(uri, namespace, name):
    dataset = convert_asset_to_openlineage(Asset(uri=uri))
    assert (dataset.namespace, dataset.name) == (namespace, name)


def test_openlineage_translates_an_iys_asset_through_the_registered_converter():
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    dataset = translate_airflow_asset(Asset(uri="iys://api.iys.org.tr/700001/700002"), lineage_context=None)
    assert (dataset.namespace, dataset.name) == ("iys://api.iys.org.tr", "700001/700002")


def test_the_hook_lineage_endpoints_are_endpoints_of_the_hook():
    from iys_provider.lineage import IYS_READ_ENDPOINTS, IYS_WRITE_ENDPOINTS

    hook_source = (PACKAGE / "hooks" / "iys.py").read_text(encoding="utf-8")
    endpoints = set(re.findall(r'endpoint="([a-z_]+)"', hook_source))
    assert IYS_READ_ENDPOINTS | IYS_WRITE_ENDPOINTS <= endpoints
    assert not IYS_READ_ENDPOINTS & IYS_WRITE_ENDPOINTS


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("base_url", "host"),
    [
        ("https://api.iys.org.tr", "api.iys.org.tr"),
        ("https://API.iys.org.tr/", "api.iys.org.tr"),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("https://user:secret@api.iys.org.tr:8443/base", "api.iys.org.tr:8443"),
        ("api.iys.org.tr", "api.iys.org.tr"),
    ],
)
def test_the_api_host_never_carries_credentials(base_url, host):
    assert api_host(base_url) == host


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("SELECT id::text AS user_id, phone, email FROM public.users", [("public", "users")]),
        ("SELECT id AS user_id, phone FROM users", [("public", "users")]),
        (
            "SELECT u.id AS user_id, c.phone FROM CRM.Members u JOIN crm.contacts c ON c.member = u.id",
            [
                ("crm", "contacts"),
                ("crm", "members"),
            ],
        ),
        ('SELECT id AS user_id, phone FROM "Crm"."Members"', [("Crm", "Members")]),
        ("SELECT id AS user_id, email FROM app.users WHERE active AND NOT deleted", [("app", "users")]),
        ("this is not SQL at all (", []),
    ],
)
def test_the_source_querys_tables_as_postgres_folds_them(sql, tables):
    assert source_tables(sql) == tables


def test_an_operators_lineage_names_tables_user_source_and_iys():
    places = LineagePlaces(
        postgres_namespace="postgres://db.internal:5432",
        database="brand",
        iys_namespace="iys://api.iys.org.tr",
        iys_name="700001/700002",
    )
    spec = TaskLineage(reads=("user_sources",), writes=("consents",), iys_reads=True, iys_writes=True, user_source=True)
    lineage = operator_lineage(spec, places, [("public", "users")])
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("postgres://db.internal:5432", "brand.public.users"),
        ("postgres://db.internal:5432", "brand.iys.user_sources"),
        ("iys://api.iys.org.tr", "700001/700002"),
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("postgres://db.internal:5432", "brand.iys.consents"),
        ("iys://api.iys.org.tr", "700001/700002"),
    ]
    # Without the user_source flag the source tables are not the task's input.
    assert len(operator_lineage(TaskLineage(), places, [("public", "users")]).inputs) == 0


# --------------------------------------------------------------------------- every task declares it


#: Tasks of the package that touch no consent data, hence name no dataset.
NO_DATASETS = {"IysPushRegistrationOperator"}


def iys_task_classes():
    for folder in ("operators", "sensors"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            module = importlib.import_module(f"iys_provider.{folder}.{path.stem}")
            for name, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and issubclass(cls, IysConnections) and path.stem != "base":
                    yield name, cls


def test_every_iys_task_declares_its_lineage():
    classes = dict(iys_task_classes())
    assert len(classes) >= 18
    for name, cls in classes.items():
        if name in NO_DATASETS:
            assert cls.lineage is None, name
            continue
        assert isinstance(cls.lineage, TaskLineage), name
        assert cls.lineage.reads or cls.lineage.writes or cls.lineage.iys_reads, name
        for table in cls.lineage.reads + cls.lineage.writes:
            # A table of the iys schema the migrations create (sql/), spelt as there.
            assert any(f"iys.{table}" in sql.read_text() for sql in (PACKAGE / "sql").glob("*.sql")), (name, table)


# --------------------------------------------------------------------------- without OpenLineage


def test_the_package_works_without_the_openlineage_provider():
    # A fresh interpreter as if neither the OpenLineage provider nor its client were installed: their
    # distributions are invisible (so Airflow discovers no such provider) and their modules do not import.
    script = textwrap.dedent(
        """
        import importlib.abc, importlib.metadata, sys
        import importlib_metadata  # what Airflow discovers providers with on Python 3.11

        def without_openlineage(distributions):
            return lambda **kwargs: [
                dist for dist in distributions(**kwargs) if "openlineage" not in (dist.metadata["Name"] or "").lower()
            ]

        for metadata in (importlib.metadata, importlib_metadata):
            metadata.distributions = without_openlineage(metadata.distributions)

        class NoOpenLineage(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith(("airflow.providers.openlineage", "openlineage")):
                    raise ImportError(f"{name} is not installed")
                return None

        sys.meta_path.insert(0, NoOpenLineage())
        import importlib, pkgutil, iys_provider
        for module in pkgutil.walk_packages(iys_provider.__path__, "iys_provider."):
            importlib.import_module(module.name)
        from iys_provider.lineage import source_tables
        from iys_provider.operators.new_users import IysCheckNewUsersOperator
        from iys_provider.assets import CONSENTS_ASSET
        IysCheckNewUsersOperator(task_id="t")
        assert source_tables("SELECT id AS user_id, phone FROM public.users") == []
        assert CONSENTS_ASSET.uri == "iys://consents/"
        assert "airflow.providers.openlineage" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
