"""One DAG pair per brand (issue #13): ``IYS_CONNECTIONS`` lists the ``iys`` connections, read at parse time."""

from __future__ import annotations

import pathlib

import pytest

from iys_provider.assets import CONSENTS_ASSET, consents_asset
from iys_provider.dags import build_dags
from iys_provider.dags.common import iys_connection_ids

ROOT = pathlib.Path(__file__).resolve().parents[2]
BRANDS = ("iys_brand_a", "iys_brand_b")
#: The tasks that emit on the consents asset, per DAG.
ASSET_TASKS = {
    "iys_initial_sync": "finish_scan",
    "iys_incremental_sync": "announce_consent_changes",
    "iys_reconciliation": "announce_consent_changes",
    "iys_push": "apply_push_inbox",
}


def by_id(dags):
    return {dag.dag_id: dag for dag in dags}


def conn_default(dag) -> str:
    return dag.params.get_param("iys_conn_id").value


def outlets(dag, task_id: str) -> list:
    return list(dag.get_task(task_id).outlets)


@pytest.mark.parametrize("setting", [None, "", " , "])
def test_unset_means_todays_two_dags(setting, monkeypatch):
    if setting is None:
        monkeypatch.delenv("IYS_CONNECTIONS", raising=False)
    else:
        monkeypatch.setenv("IYS_CONNECTIONS", setting)
    dags = by_id(build_dags())
    assert set(dags) == set(ASSET_TASKS)
    for dag_id, task_id in ASSET_TASKS.items():
        dag = dags[dag_id]
        assert set(dag.tags) == {"iys", "consent"}
        assert conn_default(dag) == "iys_default"
        assert outlets(dag, task_id) == [CONSENTS_ASSET]
        assert (CONSENTS_ASSET.name, CONSENTS_ASSET.uri) == ("iys_consents", "iys://consents/")
        assert "**Brand**" not in dag.doc_md


def test_one_connection_keeps_todays_names_and_defaults_to_it(monkeypatch):
    monkeypatch.setenv("IYS_CONNECTIONS", " iys_acme ")
    dags = by_id(build_dags())
    assert set(dags) == set(ASSET_TASKS)
    for dag_id, task_id in ASSET_TASKS.items():
        assert conn_default(dags[dag_id]) == "iys_acme"
        assert set(dags[dag_id].tags) == {"iys", "consent"}
        assert outlets(dags[dag_id], task_id) == [CONSENTS_ASSET]


def test_two_connections_give_a_dag_pair_and_an_asset_per_brand(monkeypatch):
    monkeypatch.setenv("IYS_CONNECTIONS", "iys_brand_a,iys_brand_b,")
    monkeypatch.setenv("IYS_POOL", "iys_api")
    dags = by_id(build_dags())
    assert set(dags) == {f"{base}__{brand}" for base in ASSET_TASKS for brand in BRANDS}
    assets = set()
    for brand in BRANDS:
        asset = consents_asset(brand)
        assert (asset.name, asset.uri) == (f"iys_consents__{brand}", f"iys://consents/{brand}")
        assets.add(asset.uri)
        for base, task_id in ASSET_TASKS.items():
            dag = dags[f"{base}__{brand}"]
            dag.validate()
            assert set(dag.tags) == {"iys", "consent", f"brand:{brand}"}
            assert conn_default(dag) == brand
            assert outlets(dag, task_id) == [asset]
            assert f"iys_recipients_sql__{brand}" in dag.doc_md
            # Every brand's İYS tasks share the one pool (the rate itself is shared by the hook); the push
            # DAG calls no İYS endpoint, so it takes no slot of it.
            expected_pools = set() if base == "iys_push" else {"iys_api"}
            assert {t.pool for t in dag.tasks if t.max_active_tis_per_dagrun} == expected_pools
    assert len(assets) == 2 and CONSENTS_ASSET.uri not in assets


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("iys_a,iys b", "'iys b'"),
        ("iys_a,brand/b", "'brand/b'"),
        ("marka_ığ", "'marka_ığ'"),
        ("..", "'..'"),
        ("-x,iys_a", "'-x'"),
        ("a" * 95, "'" + "a" * 95 + "'"),
    ],
)
def test_an_id_that_cannot_name_a_dag_fails_the_parse_naming_it(setting, named, monkeypatch):
    monkeypatch.setenv("IYS_CONNECTIONS", setting)
    with pytest.raises(ValueError, match="IYS_CONNECTIONS") as error:
        build_dags()
    assert named in str(error.value)


def test_the_longest_accepted_id_fits_a_tag():
    (longest,) = iys_connection_ids("a" * 94 + ",")
    assert iys_connection_ids(f"{longest},b.c-d_9") == [longest, "b.c-d_9"]


def test_an_id_listed_twice_fails_the_parse(monkeypatch):
    monkeypatch.setenv("IYS_CONNECTIONS", "iys_a, iys_b, iys_a")
    with pytest.raises(ValueError, match=r"IYS_CONNECTIONS lists iys_a more than once"):
        build_dags()


def load_dag_folder():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"), safe_mode=True)


def test_the_dag_folder_parses_into_four_dags_per_brand(monkeypatch):
    monkeypatch.setenv("IYS_CONNECTIONS", ",".join(BRANDS))
    bag = load_dag_folder()
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {f"{base}__{brand}" for base in ASSET_TASKS for brand in BRANDS}
    for brand in BRANDS:
        for base, task_id in ASSET_TASKS.items():
            dag = bag.dags[f"{base}__{brand}"]
            assert [a.uri for a in outlets(dag, task_id)] == [f"iys://consents/{brand}"]


def test_a_bad_setting_is_an_import_error_of_every_file(monkeypatch):
    monkeypatch.setenv("IYS_CONNECTIONS", "iys_a,iys_a")
    bag = load_dag_folder()
    assert bag.dag_ids == []
    assert {pathlib.Path(f).name for f in bag.import_errors} == {
        "iys_initial_sync.py",
        "iys_incremental_sync.py",
        "iys_reconciliation.py",
        "iys_push.py",
    }
    assert all("IYS_CONNECTIONS lists iys_a more than once" in e for e in bag.import_errors.values())


# The source query per brand. Variables come from AIRFLOW_VAR_* environment variables, one of
# Airflow's own Variable sources, so Variable.get runs unchanged.

BRAND_SQL = "SELECT id AS user_id, phone, email FROM public.users WHERE id LIKE 'a%'"
SHARED_SQL = "SELECT id AS user_id, phone, email FROM public.users WHERE id LIKE 'b%'"


@pytest.fixture
def variables(monkeypatch):
    for name in ("IYS_RECIPIENTS_SQL", "IYS_RECIPIENTS_SQL__IYS_BRAND_A", "IYS_RECIPIENTS_SQL__IYS_DEFAULT"):
        monkeypatch.delenv(f"AIRFLOW_VAR_{name}", raising=False)

    def set_variable(key: str, value: str) -> None:
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", value)

    return set_variable


def test_a_brand_reads_its_own_variable_first(variables):
    from iys_provider.people.user_source import DEFAULT_RECIPIENTS_SQL, configured_user_source

    assert configured_user_source(iys_conn_id="iys_brand_a").recipients_sql == DEFAULT_RECIPIENTS_SQL
    variables("iys_recipients_sql", SHARED_SQL)
    assert configured_user_source(iys_conn_id="iys_brand_a").recipients_sql == SHARED_SQL
    variables("iys_recipients_sql__iys_brand_a", BRAND_SQL)
    assert configured_user_source(iys_conn_id="iys_brand_a").recipients_sql == BRAND_SQL
    assert configured_user_source(iys_conn_id="iys_brand_b").recipients_sql == SHARED_SQL
    assert configured_user_source().recipients_sql == SHARED_SQL
    own = "SELECT id AS user_id, phone FROM public.users"
    assert configured_user_source(own, iys_conn_id="iys_brand_a").recipients_sql == own


def test_an_empty_brand_variable_is_an_error_not_the_default_table(variables):
    from iys_provider.people.user_source import SourceQueryError, configured_user_source

    variables("iys_recipients_sql", SHARED_SQL)
    variables("iys_recipients_sql__iys_brand_a", "  ")
    with pytest.raises(SourceQueryError, match="empty"):
        configured_user_source(iys_conn_id="iys_brand_a")


def test_both_syncs_read_the_brands_own_query(sim, pg, variables):
    """The operators pass their connection: the plan, then the check of new users, see only the brand's users."""
    from iys_provider.operators.initial_sync import (
        IysFinishInitialSyncOperator,
        IysInitialSyncBatchOperator,
        IysPlanInitialSyncOperator,
    )
    from iys_provider.operators.new_users import IysCheckNewUsersOperator

    pg.execute("DROP TABLE IF EXISTS public.users")
    pg.execute("CREATE TABLE public.users (id text PRIMARY KEY, phone text, email text)")
    pg.execute("DROP SCHEMA IF EXISTS iys CASCADE")
    add_users = "INSERT INTO public.users SELECT u, '+9053211122' || right(u, 2), NULL FROM unnest(%s::text[]) u"
    pg.execute(add_users, (["a01", "a02", "b01", "b02"],))
    variables("iys_recipients_sql", SHARED_SQL)
    variables("iys_recipients_sql__iys_default", BRAND_SQL)

    (batch,) = IysPlanInitialSyncOperator(task_id="plan", batch_size=100).execute(context={})
    assert (batch["first"], batch["last"]) == ("a01", "a02")
    IysInitialSyncBatchOperator(task_id="batch", batch=batch).execute(context={})
    IysFinishInitialSyncOperator(task_id="finish").execute(context={})

    pg.execute(add_users, (["a03", "b03"],))
    assert IysCheckNewUsersOperator(task_id="new").execute(context={})["users_checked"] == 1
