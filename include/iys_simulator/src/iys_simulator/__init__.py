"""Local simulator of the İYS (İleti Yönetim Sistemi) REST API.

Stand-alone on purpose (no Airflow, no ``iys_provider`` import): tests of the client use it as an
independent referee. Its own distribution (``iys-simulator``), installed for development, tests, the
demo and compose's simulator service, never with the provider. Run ``python -m iys_simulator --help``
or use :class:`SimulatorServer` in-process.

``app.py`` holds the state and wires the İYS endpoints (``endpoints.py``) and the ``/__sim/`` control
API (``control.py``) together; ``server.py`` is the HTTP front end.
"""

from .server import SimulatorServer
from .synthetic import synthetic_status

__all__ = ["SimulatorServer", "synthetic_status"]
