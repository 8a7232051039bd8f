"""The Airflow assets this package updates, for downstream DAGs to schedule on."""

from __future__ import annotations

from airflow.sdk import Asset

#: Consents of a brand changed (initial sync finished, or an incremental run changed any). Events
#: carry ``brand_code`` and ``consent_changes``. A campaign DAG runs after fresh consents with
#: ``schedule=[CONSENTS_ASSET]``.
CONSENTS_ASSET = Asset(name="iys_consents", uri="iys://consents/", group="iys")
