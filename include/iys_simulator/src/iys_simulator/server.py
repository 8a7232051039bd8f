"""HTTP front end of the İYS simulator (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive)."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .app import SimulatorApp
from .config import SimulatorConfig
from .errors import error_item
from .messages import SimRequest, SimResponse, error_response

logger = logging.getLogger("iys_simulator")

_PHONE_LIKE = re.compile(r"(\+?\d{3})\d{4,}(\d{2})")
_EMAIL_LIKE = re.compile(r"([^\s/?&=@]{1,2})[^\s/?&=@]*@")


def mask_personal_data(text: str) -> str:
    """Hide phone numbers and e-mail local parts in log lines."""
    return _EMAIL_LIKE.sub(r"\1***@", _PHONE_LIKE.sub(r"\1****\2", text))


class _SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive connections may idle; stop() closes them itself
    allow_reuse_address = True

    def __init__(self, address, app: SimulatorApp) -> None:
        self.app = app
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def close_open_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "IysSimulator/1.0"
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: _SimulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        request = SimRequest(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers=self.headers,
            body=body,
            client_ip=self.client_address[0],
        )
        try:
            response = self.server.app.handle(request)
        except Exception:  # an unexpected simulator bug must still look like an İYS 500
            logger.exception("simulator error")
            response = error_response(error_item("H015"))
        if response.drop:
            self._drop_connection()
        else:
            self._write(response)
        if self.server.app.config.verbose:
            status = "dropped" if response.drop else response.status
            elapsed_ms = (time.monotonic() - started) * 1000
            logger.info("%s %s -> %s (%.1f ms)", self.command, mask_personal_data(self.path), status, elapsed_ms)

    def _write(self, response: SimResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)

    def _drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        # The default access log would print full paths to stderr; _serve logs a masked line instead.
        return


class SimulatorServer:
    """A local, stand-alone simulator of the İYS REST API for tests and benchmarks.

    Start it in-process::

        with SimulatorServer(port=0, seed=1) as sim:
            requests.post(f"{sim.url}/oauth2/token", json={...})
            sim.advance_clock(301)

    Config keyword arguments (all changeable later via :meth:`configure` or ``POST /__sim/config``):
    ``username``, ``password``, ``iys_code``, ``brand_codes``, ``extra_accounts`` (more API users, each
    ``{"username", "password", "iys_code", "brand_codes"}``; a token acts only for its own account's
    codes, the per-IP limits are shared by all accounts), ``rate_limit_per_second``,
    ``token_limit_per_hour``, ``token_block_seconds``, ``access_ttl``, ``refresh_ttl``,
    ``batch_result_delay``, ``batch_result_retention_days``, ``single_status_limit_per_hour``,
    ``unknown_status_mode`` ("404", "empty", "422" or "malformed"), ``unknown_status_code`` (code of the
    "422" mode, default "H114"), ``refused_recipients`` (address -> H-code: writes naming it fail with
    422), ``retry_after_header``, ``latency_ms``, ``seed`` (seeds the id and fault RNGs), ``verbose``
    (masked request log), and the daily reconciliation's ``reconciliation_*`` options (hash job timing and
    mode per date, hash algorithm and ``hashMethod`` spelling, file header, ``agreementCaptured`` spelling,
    window; see ``reconciliation.py``), and push's ``push_timeout_seconds``, ``push_retry_seconds``,
    ``push_retry_max_seconds`` and ``push_ca_file`` (see ``push.py``). :meth:`requests` lists the latest İYS requests (method, path,
    endpoint, status), e.g. to prove a date was never asked for.

    Time-based rules use a simulated clock (real time plus an offset moved by :meth:`advance_clock`);
    only the per-second request limit uses real monotonic time. The HTTP control API under
    ``/__sim/`` mirrors the Python methods here; it needs no token and is exempt from rate limits,
    counters and (unless ``apply_to_control``) faults.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.app = SimulatorApp(SimulatorConfig(**config))
        self._host = host
        self._requested_port = port
        self._httpd: _SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SimulatorServer:
        if self._httpd is not None:
            return self
        self._httpd = _SimulatorHTTPServer((self._host, self._requested_port), self.app)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="iys-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.app.close()
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        if self._thread is not None:
            httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        httpd.close_open_connections()
        httpd.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("simulator is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # ------------------------------------------------------------------ control (mirrors /__sim/)
    @property
    def config(self) -> SimulatorConfig:
        return self.app.config

    def reset(self, keep_config: bool = False) -> None:
        self.app.reset(keep_config=keep_config)

    def configure(self, **changes: Any) -> SimulatorConfig:
        return self.app.configure(**changes)

    def seed(self, consents: list[dict[str, Any]], emit_events: bool = False) -> int:
        return self.app.seed(consents, emit_events=emit_events)

    def citizen_change(self, **change: Any) -> dict[str, Any]:
        return self.app.citizen_change(**change)

    def seed_synthetic(self, **options: Any) -> dict[str, Any]:
        return self.app.seed_synthetic(**options)

    def inject_events(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        return self.app.inject_events(events)

    def truth(self, recipient: str, consent_type: str, recipient_type: str = "BIREYSEL", brand_code: int | None = None):
        return self.app.truth(recipient, consent_type, recipient_type=recipient_type, brand_code=brand_code)

    def counters(self) -> dict[str, Any]:
        return self.app.snapshot_counters()

    def reset_counters(self) -> None:
        self.app.reset_counters()

    def state(self) -> dict[str, Any]:
        return self.app.state()

    def requests(self) -> list[dict[str, Any]]:
        """The latest İYS requests (method, path, endpoint, status), as ``GET /__sim/requests``."""
        return self.app.requests()

    def events(self) -> list[dict[str, Any]]:
        return self.app.events()

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return self.app.set_faults(**faults)

    def push_registrations(self) -> list[dict[str, Any]]:
        """Active push links of every brand, as ``GET /__sim/push/registrations``."""
        return self.app.push_registrations()

    def push_deliveries(self) -> list[dict[str, Any]]:
        """Push delivery attempts, oldest first, as ``GET /__sim/push/deliveries``."""
        return self.app.push_deliveries()

    def push_wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until no push movement is queued or in flight, as ``POST /__sim/push/wait_idle``."""
        return self.app.push_wait_idle(timeout)

    def revoke_tokens(self, refresh: bool = False) -> dict[str, Any]:
        return self.app.revoke_tokens(refresh=refresh)

    def advance_clock(self, seconds: float) -> str:
        """Move simulated time forward; returns the new Turkey-local 'now'."""
        self.app.clock.advance(seconds)
        return self.app.now_text()

    def set_clock_offset(self, seconds: float) -> str:
        self.app.clock.set_offset(seconds)
        return self.app.now_text()

    def now(self) -> str:
        return self.app.now_text()
