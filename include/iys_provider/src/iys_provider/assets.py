"""The Airflow assets this package updates, for downstream DAGs to schedule on."""

from __future__ import annotations

from airflow.sdk import Asset

#: Consents of a brand changed (initial sync finished, or an incremental run changed any). Events
#: carry ``brand_code`` and ``consent_changes``. A campaign DAG runs after fresh consents with
#: ``schedule=[CONSENTS_ASSET]``. This is the asset of a single-brand installation; with several
#: brands (``IYS_CONNECTIONS``) each has its own, :func:`consents_asset`.
CONSENTS_ASSET = Asset(name="iys_consents", uri="iys://consents/", group="iys")


def consents_asset(iys_conn_id: str | None = None) -> Asset:
    """The consents asset of the brand behind ``iys_conn_id``; :data:`CONSENTS_ASSET` without one.

    Only for installations that list several connections in ``IYS_CONNECTIONS``: there each brand's
    DAGs update ``iys_consents__<conn_id>`` (URI ``iys://consents/<conn_id>``), so a campaign DAG
    schedules on its own brand with ``schedule=[consents_asset("iys_brand_a")]``.
    """
    if not iys_conn_id:
        return CONSENTS_ASSET
    return Asset(name=f"{CONSENTS_ASSET.name}__{iys_conn_id}", uri=f"{CONSENTS_ASSET.uri}{iys_conn_id}", group="iys")
