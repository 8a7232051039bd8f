"""Helpers shared by tests (importable: ``tests/`` is on pytest's pythonpath)."""

from __future__ import annotations

import json

SIM_USERNAME = "iys-test-user"
SIM_PASSWORD = "s3cret-iys-password"
SIM_IYS_CODE = 700001
SIM_BRAND_CODE = 700001


def iys_connection_json_with(url: str, *, password: str = SIM_PASSWORD, **extra_overrides) -> str:
    """``AIRFLOW_CONN_*`` JSON of an ``iys`` connection to the simulator at ``url``."""
    extra = {
        "iys_code": SIM_IYS_CODE,
        "brand_code": SIM_BRAND_CODE,
        "shared_state_conn_id": "iys_postgres",
        "verify_ssl": False,
        "rate_limit_per_second": 8,
        "token_requests_per_hour": 10,
    }
    extra.update(extra_overrides)
    return json.dumps(
        {"conn_type": "iys", "host": url, "login": SIM_USERNAME, "password": password, "extra": extra}
    )
