"""Triggers of the İYS provider, run by the Airflow triggerer."""
