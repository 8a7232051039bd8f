"""Local simulator of the İYS (İleti Yönetim Sistemi) REST API.

Stand-alone on purpose (no Airflow, no other ``iys_provider`` modules): tests of the client use it
as an independent referee. Run ``python -m iys_provider.simulator --help`` or use
:class:`SimulatorServer` in-process.
"""

from .server import SimulatorServer
from .synthetic import synthetic_status

__all__ = ["SimulatorServer", "synthetic_status"]
