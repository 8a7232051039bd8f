"""DAG factories. The files in the project's ``dags/`` folder only call these."""
