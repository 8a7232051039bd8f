"""Airflow DAG ``iys_reconciliation``, one per brand in ``IYS_CONNECTIONS``; the logic lives in the iys_provider package."""

from iys_provider.dags.reconciliation import build_reconciliation_dags

# The DagBag collects the DAGs it finds among the module's globals: one per brand, under its id.
globals().update((dag.dag_id, dag) for dag in build_reconciliation_dags())
