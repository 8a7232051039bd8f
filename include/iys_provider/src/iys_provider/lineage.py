"""Lineage: how the package names İYS and its tables for OpenLineage and for Airflow's hook lineage.

Two kinds of dataset, neither ever naming a person, an address or a secret:

* **İYS**, the brand's consent registry: namespace ``iys://<API host[:port]>`` (the host of the
  connection's base URL, never its user info), name ``<iys_code>/<brand_code>``. As an Airflow asset
  (hook lineage) its URI is ``iys://<API host[:port]>/<iys_code>/<brand_code>``.
* **PostgreSQL tables**, as the OpenLineage naming spec and Airflow's own SQL operators name them:
  namespace ``postgres://<host>:<port>``, name ``<database>.<schema>.<table>``. The brand's user tables
  are read out of the source query with OpenLineage's SQL parser; the ``iys.*`` tables are declared by
  each operator (:class:`TaskLineage`).

The ``iys`` asset URI scheme (registered in ``get_provider_info``) also covers the package's own
assets between DAGs: ``iys://consents/`` and ``iys://consents/<conn_id>`` (:mod:`iys_provider.assets`)
and ``iys://push-inbox/<conn_id>`` (the push DAG's inbox). :func:`sanitize_uri` returns them
unchanged, so DAGs scheduled on them keep their asset.

Nothing here imports OpenLineage at module level: the package works without the OpenLineage provider,
and the functions that build OpenLineage objects are only called by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    from airflow.sdk import Asset

IYS_SCHEME = "iys"
#: The host part of the package's own Airflow assets (``iys://consents/…``, ``iys://push-inbox/…``):
#: announcements between DAGs, not API hosts. Their path is empty or a connection id.
ASSET_HOSTS = frozenset({"consents", "push-inbox"})
#: The connection an asset without one belongs to (``iys://consents/``, the single-brand installation).
DEFAULT_CONSENTS_CONN_ID = "iys_default"
#: The schema the package's own tables live in.
IYS_SCHEMA = "iys"
_CODES = re.compile(r"^/(\d+)/(\d+)$")
# İYS endpoints whose calls read or write the brand's consents (hook lineage); the others (brands,
# push links, the agreement) carry no consent data.
IYS_READ_ENDPOINTS = frozenset(
    {"consent_status", "multi_status", "changes", "batch_result", "reconciliation_summary", "reconciliation_file"}
)
IYS_WRITE_ENDPOINTS = frozenset({"add_consent", "submit_batch"})


@dataclass(frozen=True)
class TaskLineage:
    """What one operator reads and writes, declared on its class (``lineage``).

    ``reads`` and ``writes`` are tables of the ``iys`` schema; ``iys_reads``/``iys_writes``: the task
    asks İYS about consents / sends consents to İYS; ``user_source``: it runs the brand's source query.
    """

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    iys_reads: bool = False
    iys_writes: bool = False
    user_source: bool = False


def api_host(base_url: str) -> str:
    """The host[:port] of the İYS API's base URL, lower-cased, without user info (never a credential)."""
    netloc = urlsplit(base_url if "://" in base_url else f"https://{base_url}").netloc
    return netloc.rpartition("@")[2].lower()


def iys_dataset_name(iys_code: int, brand_code: int) -> str:
    return f"{int(iys_code)}/{int(brand_code)}"


def iys_namespace(base_url: str) -> str:
    return f"{IYS_SCHEME}://{api_host(base_url)}"


def iys_asset_uri(host: str, iys_code: int, brand_code: int) -> str:
    return f"{IYS_SCHEME}://{api_host(host)}/{iys_dataset_name(iys_code, brand_code)}"


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """The ``iys`` scheme's URI handler: validate and normalise an ``iys://`` asset URI.

    ``iys://consents/``, ``iys://consents/<conn_id>`` and ``iys://push-inbox/<conn_id>`` (the
    package's assets) come back unchanged; ``iys://<host[:port]>/<iys_code>/<brand_code>`` comes back
    with the host lower-cased. Anything else, and any user info (a URI is no place for credentials),
    is a ``ValueError``.
    """
    if "@" in uri.netloc:
        raise ValueError("an iys:// URI must not carry user info or credentials")
    if not uri.netloc:
        raise ValueError("an iys:// URI needs a host: iys://<API host>/<iys_code>/<brand_code> or iys://consents/")
    if uri.netloc in ASSET_HOSTS:
        # The path is a connection id, as Airflow allows them (it may hold "/" or ":"): left as it is.
        return uri
    if not _CODES.match(uri.path):
        raise ValueError("an iys:// API URI is iys://<API host>/<iys_code>/<brand_code>, both codes numbers")
    return uri._replace(netloc=uri.netloc.lower())


def create_asset(*, host: str, iys_code: int, brand_code: int, extra: dict | None = None) -> Asset:
    """The ``iys`` scheme's asset factory (hook lineage): the consents of one brand at one İYS API."""
    from airflow.sdk import Asset

    return Asset(uri=iys_asset_uri(host, iys_code, brand_code), extra=extra or {})


def convert_asset_to_openlineage(asset: Asset, lineage_context: Any = None) -> Any:
    """The ``iys`` scheme's OpenLineage converter.

    An API asset becomes the İYS dataset (``iys://<host>``, ``<iys_code>/<brand_code>``); one of the
    package's assets becomes ``iys://consents`` (or ``iys://push-inbox``) named after its connection
    (``iys_default`` for the bare ``iys://consents/``).
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parsed = sanitize_uri(urlsplit(asset.uri))
    if parsed.netloc in ASSET_HOSTS:
        return Dataset(
            namespace=f"{IYS_SCHEME}://{parsed.netloc}", name=parsed.path.strip("/") or DEFAULT_CONSENTS_CONN_ID
        )
    return Dataset(namespace=f"{IYS_SCHEME}://{parsed.netloc}", name=parsed.path.strip("/"))


def source_tables(recipients_sql: str, *, default_schema: str = "public") -> list[tuple[str, str]]:
    """(schema, table) of every table the source query reads, per OpenLineage's SQL parser.

    Unquoted names fold to lower case as PostgreSQL folds them. An empty list when the parser is
    missing or cannot read the query: lineage must never fail a task.
    """
    try:
        from openlineage_sql import parse
    except ImportError:
        return []
    try:
        meta = parse([recipients_sql], dialect="postgres", default_schema=default_schema)
    except Exception:
        return []
    if meta is None:
        return []
    found = []
    for table in meta.in_tables:
        quotes = getattr(table, "quote_style", None)
        schema = table.schema or default_schema
        name = table.name
        if not (quotes and quotes.schema):
            schema = schema.lower()
        if not (quotes and quotes.name):
            name = name.lower()
        found.append((schema, name))
    return sorted(set(found))


@dataclass(frozen=True)
class LineagePlaces:
    """Where the task's datasets live: the Postgres namespace and database, the İYS namespace and name."""

    postgres_namespace: str
    database: str
    iys_namespace: str
    iys_name: str


def operator_lineage(spec: TaskLineage, places: LineagePlaces, user_tables: list[tuple[str, str]]) -> Any:
    """The ``OperatorLineage`` of one task: its declared tables and İYS, as OpenLineage datasets."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    def table(schema: str, name: str) -> Dataset:
        return Dataset(namespace=places.postgres_namespace, name=f"{places.database}.{schema}.{name}")

    iys = Dataset(namespace=places.iys_namespace, name=places.iys_name)
    inputs = [table(schema, name) for schema, name in user_tables] if spec.user_source else []
    inputs += [table(IYS_SCHEMA, name) for name in spec.reads]
    if spec.iys_reads:
        inputs.append(iys)
    outputs = [table(IYS_SCHEMA, name) for name in spec.writes]
    if spec.iys_writes:
        outputs.append(iys)
    return OperatorLineage(inputs=inputs, outputs=outputs)
