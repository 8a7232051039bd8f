"""Airflow DAG ``iys_push``, one per brand in ``IYS_CONNECTIONS``; the logic lives in the iys_provider package."""

from iys_provider.dags.push import build_push_dags

# The DagBag collects the DAGs it finds among the module's globals: one per brand, under its id.
globals().update((dag.dag_id, dag) for dag in build_push_dags())
