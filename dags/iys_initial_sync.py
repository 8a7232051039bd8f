"""Airflow DAG ``iys_initial_sync``; the logic lives in the installable iys_provider package."""

from iys_provider.dags.initial_sync import build_initial_sync_dag

dag = build_initial_sync_dag()
