"""HTTP-agnostic core of the simulator: the state of the simulated İYS, and the wiring of its two APIs.

``SimulatorApp.handle`` takes a parsed request and returns a ``SimResponse``; ``server.py`` only moves
bytes. Paths under ``/__sim/`` go to the control API (``control.py``), every other path to the İYS
endpoints (``endpoints.py``, ``reconciliation.py``, ``push.py``), counted and with the configured
latency and faults. All state sits behind one lock, so the app is safe to call from the threads of
the HTTP server; push delivery (``push.py``) keeps its links and queues behind a lock of its own and
calls receivers from its own thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .clock import SimClock, TurkishBusinessCalendar
from .config import SimulatorConfig
from .control import CONTROL_PREFIX, ControlApi
from .counters import count_request, count_response, count_token_caller, fresh_counters
from .endpoints import Batch, IysEndpoints
from .errors import ERROR_CATALOGUE, error_item
from .faults import FaultInjector
from .limits import SlidingWindowLimiter, TokenRequestLimiter
from .messages import SimRequest, SimResponse, error_response
from .push import PushEndpoints
from .reconciliation import HashJob, ReconciliationEndpoints
from .store import ConsentStore
from .validation import ConsentValidator

#: The request log (``GET /__sim/requests``) keeps this many of the latest İYS requests.
REQUEST_LOG_SIZE = 10_000

PROXY_ERROR_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class SimulatorApp(IysEndpoints, ReconciliationEndpoints, PushEndpoints, ControlApi):
    """State and behaviour of one simulated İYS server: one API account (iysCode with its brands), or
    several (``extra_accounts``) behind the same per-IP limits."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._initial_config = config
        self._lock = threading.RLock()
        self.clock = SimClock()
        self._calendar = TurkishBusinessCalendar()
        self._validator = ConsentValidator(self._calendar)
        self._log: Callable[[str], None] | None = None
        self._reset(config)

    # ------------------------------------------------------------------ state lifecycle
    def _reset(self, config: SimulatorConfig) -> None:
        self.config = config
        self.clock.set_offset(0)
        seed = config.seed
        self.store = ConsentStore(seed)
        self.faults = FaultInjector(None if seed is None else seed + 1)
        self._new_push_delivery(seed)
        self.counters = fresh_counters()
        self._per_second = SlidingWindowLimiter()
        self._token_limiter = TokenRequestLimiter()
        self._single_status_quota = SlidingWindowLimiter()
        self._access_tokens: dict[str, tuple[float, str]] = {}  # token -> (sim expiry epoch, account username)
        self._refresh_tokens: dict[str, tuple[float, str]] = {}
        # Every refresh token ever issued -> its account, kept after use or revocation so a call
        # with a dead one is still counted for the account that makes it.
        self._refresh_token_owners: dict[str, str] = {}
        self._batches: dict[str, Batch] = {}
        self._v2_responses: dict[str, SimResponse] = {}
        self._hash_jobs: dict[tuple[int, str], HashJob] = {}  # (brand, reportDate) -> reconciliation hash job
        # Method, path (with its query) and status of the latest İYS requests, for tests that must
        # prove a request was never made (e.g. a reconciliation date outside İYS's window).
        self.request_log: deque[dict[str, object]] = deque(maxlen=REQUEST_LOG_SIZE)

    def reset(self, keep_config: bool = False) -> None:
        with self._lock:
            self._reset(self.config if keep_config else self._initial_config)

    def configure(self, **changes: Any) -> SimulatorConfig:
        with self._lock:
            self.config = self.config.updated(changes)
            self.push.wake()  # e.g. a shorter push_retry_seconds
            return self.config

    # ------------------------------------------------------------------ entry point
    def handle(self, request: SimRequest) -> SimResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return self._handle_control_with_optional_faults(request)
        endpoint = self._classify(request)
        with self._lock:
            count_request(self.counters, endpoint)
            if endpoint == "token":
                count_token_caller(self.counters, self.token_caller(request))
            self.faults.count_request()
            latency, spiked = self.faults.latency(self.config.latency_ms)
            if spiked:
                self.counters["latency_spikes"] += 1
        if latency > 0:
            time.sleep(latency)  # outside the lock: other clients keep being served
        with self._lock:
            try:
                response = self._handle_business(request, endpoint)
            except Exception:
                self._count_simulator_bug(endpoint)
                raise
            if response.then_outside_lock is None:
                self._record_answer(request, endpoint, response)
                return response
        # The push link check waits for the brand's receiver, which may be slow: other clients keep
        # being served meanwhile, and the answer is completed under the lock again.
        try:
            complete = response.then_outside_lock()
            with self._lock:
                response = complete()
                self._record_answer(request, endpoint, response)
        except Exception:
            with self._lock:
                self._count_simulator_bug(endpoint)
            raise
        return response

    def _count_simulator_bug(self, endpoint: str) -> None:
        # server.py turns a simulator bug into a 500 H015; count it like any other answer.
        count_response(self.counters, endpoint, SimResponse(500, error_code="H015"))

    def _record_answer(self, request: SimRequest, endpoint: str, response: SimResponse) -> None:
        count_response(self.counters, endpoint, response)
        self.request_log.append(
            {
                "method": request.method,
                "path": request.path,
                "endpoint": endpoint,
                "status": "dropped" if response.drop else response.status,
            }
        )

    # ------------------------------------------------------------------ faults (both APIs)
    def _injected_fault(self, request: SimRequest) -> SimResponse | None:
        if self.faults.should_drop():
            return SimResponse(drop=True)
        rule = self.faults.take_fail_rule(request.method, request.path)
        if rule is not None:
            headers = {} if rule.retry_after is None else {"Retry-After": str(rule.retry_after)}
            if rule.body is not None:
                response = SimResponse(
                    rule.status, rule.body.encode("utf-8"), {"Content-Type": "text/plain", **headers}
                )
            else:
                message = ERROR_CATALOGUE[rule.code][1] if rule.code in ERROR_CATALOGUE else "Simüle edilmiş hata"
                item: dict[str, Any] = {"code": rule.code, "message": message}
                if rule.location is not None:
                    item["location"] = list(rule.location)
                if rule.index is not None:
                    item["index"] = rule.index
                response = error_response(item, status=rule.status, headers=headers)
            response.error_code = rule.code
            return self._mark_injected(response)
        if self.faults.html_error():
            return self._mark_injected(SimResponse(502, PROXY_ERROR_PAGE, {"Content-Type": "text/html"}))
        code = self.faults.random_error_code()
        if code is not None:
            return self._mark_injected(error_response(error_item(code)))
        return None

    def _mark_injected(self, response: SimResponse) -> SimResponse:
        self.counters["injected_errors"] += 1
        return response
