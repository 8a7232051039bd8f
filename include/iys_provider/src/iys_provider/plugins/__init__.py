"""The İYS page in the Airflow UI (issue #16): plugin, FastAPI app, panels and their queries."""
