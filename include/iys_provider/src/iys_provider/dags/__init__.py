"""DAG factories. The files in the project's ``dags/`` folder only call these."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import DAG


def build_dags() -> list[DAG]:
    """Every İYS DAG of this installation: the initial sync, the incremental sync, the reconciliation and the push DAG of
    each brand in ``[iys] connections``, from the deployment settings read once."""
    # Imported here: importing a submodule (e.g. dags.common) must not build the DAG modules too.
    from iys_provider.config import load_settings
    from iys_provider.dags.common import IysConcurrency
    from iys_provider.dags.incremental_sync import build_incremental_sync_dags
    from iys_provider.dags.initial_sync import build_initial_sync_dags
    from iys_provider.dags.push import build_push_dags
    from iys_provider.dags.reconciliation import build_reconciliation_dags

    settings = load_settings()
    concurrency = IysConcurrency.from_settings(settings)
    return [
        *build_initial_sync_dags(concurrency, settings=settings),
        *build_incremental_sync_dags(concurrency, settings=settings),
        *build_reconciliation_dags(concurrency, settings=settings),
        *build_push_dags(settings=settings),
    ]
