"""``[core] hostname_callable`` of the fleet test's Celery workers.

Airflow records the hostname of the machine that ran each task instance (``hostname_callable``,
by default the FQDN). The fleet test runs its two "machines" on one host, so each worker
process names itself from ``IYS_FLEET_WORKER_HOSTNAME`` instead: that is what lets the test
see, through the REST API, which worker ran which task.
"""

from __future__ import annotations

import os


def hostname() -> str:
    return os.environ["IYS_FLEET_WORKER_HOSTNAME"]
