"""Airflow DAG ``iys_incremental_sync``; the logic lives in the installable iys_provider package."""

from iys_provider.dags.incremental_sync import build_incremental_sync_dag

dag = build_incremental_sync_dag()
