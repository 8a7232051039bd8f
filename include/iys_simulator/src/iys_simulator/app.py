"""HTTP-agnostic core of the simulator: routing, the İYS endpoints and the ``/__sim/`` control API.

``SimulatorApp.handle`` takes a parsed request and returns a ``SimResponse``; ``server.py`` only moves
bytes. All state sits behind one lock, so the app is safe to call from the threads of the HTTP server.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .clock import SimClock, TurkishBusinessCalendar, format_turkey_time, parse_turkey_time
from .config import SimulatorConfig
from .errors import ERROR_CATALOGUE, error_item, errors_body, http_status_of
from .faults import FaultInjector, FaultSettings
from .limits import SlidingWindowLimiter, TokenRequestLimiter
from .store import STREAM_HS, STREAM_IYS, ConsentStore, StoredConsent, WriteRejected, stream_of
from .synthetic import SyntheticPopulation
from .validation import (
    CONSENT_TYPES,
    RECIPIENT_TYPES,
    ConsentInput,
    ConsentValidator,
    normalise_recipient,
    recipient_errors,
)

MAX_LIST_SIZE = 1000
CHANGE_WINDOW_MS = 7 * 24 * 3600 * 1000
CHANGE_HIDDEN_RECENT_MS = 3600 * 1000
CONTROL_PREFIX = "/__sim/"
INJECT_EVENT_FIELDS = frozenset(
    {
        "recipient",
        "type",
        "status",
        "source",
        "recipientType",
        "consentDate",
        "creationDate",
        "transactionId",
        "stream",
        "brandCode",
        "citizenName",
        "apply",
    }
)
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"
WRITE_ENDPOINTS = frozenset({"consent_add", "consent_add_v2", "batch_submit", "batch_submit_v2"})

_BRAND = r"/sps/(?P<iys>[^/]+)/brands/(?P<brand>[^/]+)"
ROUTES: list[tuple[str, str, re.Pattern[str]]] = [
    ("POST", "token", re.compile(r"^/oauth2/token$")),
    ("GET", "brands", re.compile(r"^/sps/(?P<iys>[^/]+)/brands$")),
    ("POST", "consent_add", re.compile(rf"^{_BRAND}/consents$")),
    ("POST", "consent_add_v2", re.compile(rf"^/v2{_BRAND}/consents$")),
    ("POST", "batch_submit", re.compile(rf"^{_BRAND}/consents/request$")),
    ("POST", "batch_submit_v2", re.compile(rf"^/v2{_BRAND}/consents/request$")),
    ("GET", "batch_result", re.compile(rf"^(?:/v2)?{_BRAND}/consents/request/(?P<request_id>[^/]+)$")),
    ("POST", "single_status", re.compile(rf"^{_BRAND}/consents/status$")),
    ("POST", "multi_status", re.compile(rf"^{_BRAND}/consents/(?P<recipient_type>[^/]+)/status/(?P<type>[^/]+)$")),
    ("GET", "changes", re.compile(rf"^{_BRAND}/consents/changes$")),
]
COUNTER_BY_ENDPOINT = {
    "token": "token_requests",
    "single_status": "single_status_calls",
    "multi_status": "multi_status_calls",
    "changes": "changes_calls",
}
UNKNOWN_RECIPIENT_MESSAGE = "Alıcı (recipient) bulunamadı."  # the wording of İYS's own error example
MALFORMED_STATUS_BODY = {"message": "Kayıt bulunamadı"}  # not the documented single-status shape
REFUSED_RECIPIENT_MESSAGE = "Alıcı (recipient) İYS tarafından kabul edilmedi."
PROXY_ERROR_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass
class SimRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client_ip: str


@dataclass
class SimResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without writing any response
    error_code: str | None = None  # first H-code of an error body, for the counters


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> SimResponse:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return SimResponse(status, body, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


def error_response(*items: dict[str, Any], status: int | None = None, headers: dict[str, str] | None = None) -> SimResponse:
    response = json_response(status or http_status_of(items[0]["code"]), errors_body(*items), headers)
    response.error_code = items[0]["code"]
    return response


def oauth_error(error: str, description: str) -> SimResponse:
    return json_response(400, {"error": error, "error_description": description})


class BadRequest(Exception):
    """Raised inside handlers to answer with an error body."""

    def __init__(self, response: SimResponse) -> None:
        super().__init__(response.status)
        self.response = response


def fresh_counters() -> dict[str, Any]:
    return {
        "requests": 0,
        "responses_by_status": {},
        "http_429": 0,
        "h124": 0,
        "token_requests": 0,
        "tokens_issued": 0,
        "h084": 0,
        "recipients_created": 0,
        "writes": 0,
        "single_status_calls": 0,
        "multi_status_calls": 0,
        "changes_calls": 0,
        "batch_submits": 0,
        "dropped_connections": 0,
        "injected_errors": 0,
        "by_endpoint": {},
        "by_endpoint_status": {},
    }


@dataclass
class BatchItem:
    index: int
    sub_request_id: str
    consent: ConsentInput
    result: dict[str, Any] | None = None  # None while "enqueue" (deferred by the enqueue fault)
    reported: bool = False  # the real result has been shown by the batch result endpoint


@dataclass
class Batch:
    request_id: str
    brand_code: int
    submitted_epoch: float
    is_v2: bool
    items: list[BatchItem]


class SimulatorApp:
    """State and behaviour of one simulated İYS tenant (one iysCode with its brands)."""

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
        self.counters = fresh_counters()
        self._per_second = SlidingWindowLimiter()
        self._token_limiter = TokenRequestLimiter()
        self._single_status_quota = SlidingWindowLimiter()
        self._access_tokens: dict[str, float] = {}  # token -> sim expiry epoch
        self._refresh_tokens: dict[str, float] = {}
        self._batches: dict[str, Batch] = {}
        self._v2_responses: dict[str, SimResponse] = {}

    def reset(self, keep_config: bool = False) -> None:
        with self._lock:
            self._reset(self.config if keep_config else self._initial_config)

    def configure(self, **changes: Any) -> SimulatorConfig:
        with self._lock:
            self.config = self.config.updated(changes)
            return self.config

    # ------------------------------------------------------------------ entry point
    def handle(self, request: SimRequest) -> SimResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return self._handle_control_with_optional_faults(request)
        endpoint = self._classify(request)
        with self._lock:
            self._count_request(endpoint)
            latency = self.faults.latency_seconds(self.config.latency_ms)
        if latency > 0:
            time.sleep(latency)  # outside the lock: other clients keep being served
        with self._lock:
            try:
                response = self._handle_business(request, endpoint)
            except Exception:
                # server.py turns a simulator bug into a 500 H015; count it like any other answer.
                self._count_response(endpoint, SimResponse(500, error_code="H015"))
                raise
            self._count_response(endpoint, response)
        return response

    def _classify(self, request: SimRequest) -> str:
        for method, name, pattern in ROUTES:
            if pattern.match(request.path):
                return name if method == request.method else "method_not_allowed"
        return "not_found"

    def _handle_business(self, request: SimRequest, endpoint: str) -> SimResponse:
        if not self._per_second.try_acquire(
            request.client_ip, time.monotonic(), int(self.config.rate_limit_per_second), 1.0
        ):
            headers = {"Retry-After": "1"} if self.config.retry_after_header else None
            return error_response(error_item("H124"), headers=headers)
        injected = self._injected_fault(request)
        if injected is not None:
            return injected
        try:
            if endpoint == "not_found":
                return error_response({"code": "H000", "message": "Kaynak bulunamadı"}, status=404)
            if endpoint == "method_not_allowed":
                return error_response({"code": "H000", "message": "Desteklenmeyen HTTP metodu"}, status=405)
            if endpoint == "token":
                return self._token(request)
            self._authenticate(request)
            match = next(p.match(request.path) for _, name, p in ROUTES if name == endpoint)
            params = match.groupdict()
            self._check_codes(params)
            response = getattr(self, f"_ep_{endpoint}")(request, params)
        except BadRequest as rejection:
            return rejection.response
        if endpoint in WRITE_ENDPOINTS and self.faults.take_drop_after_commit():
            # Simulates a lost response: the write is committed, the client never hears about it.
            return SimResponse(drop=True)
        return response

    def _injected_fault(self, request: SimRequest) -> SimResponse | None:
        if self.faults.should_drop():
            return SimResponse(drop=True)
        rule = self.faults.take_fail_rule(request.method, request.path)
        if rule is not None:
            headers = {} if rule.retry_after is None else {"Retry-After": str(rule.retry_after)}
            if rule.body is not None:
                response = SimResponse(rule.status, rule.body.encode("utf-8"), {"Content-Type": "text/plain", **headers})
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

    # ------------------------------------------------------------------ counters
    def _count_request(self, endpoint: str) -> None:
        counters = self.counters
        counters["requests"] += 1
        counters["by_endpoint"][endpoint] = counters["by_endpoint"].get(endpoint, 0) + 1
        if endpoint in COUNTER_BY_ENDPOINT:
            counters[COUNTER_BY_ENDPOINT[endpoint]] += 1

    def _count_response(self, endpoint: str, response: SimResponse) -> None:
        counters = self.counters
        if response.drop:
            counters["dropped_connections"] += 1
            status_key = "dropped"
        else:
            status_key = str(response.status)
            counters["responses_by_status"][status_key] = counters["responses_by_status"].get(status_key, 0) + 1
            if response.status == 429:
                counters["http_429"] += 1
            if response.error_code == "H124":
                counters["h124"] += 1
            elif response.error_code == "H084":
                counters["h084"] += 1
        per_status = counters["by_endpoint_status"].setdefault(endpoint, {})
        per_status[status_key] = per_status.get(status_key, 0) + 1

    # ------------------------------------------------------------------ auth
    def _token(self, request: SimRequest) -> SimResponse:
        now = self.clock.epoch()
        config = self.config
        if not self._token_limiter.try_acquire(
            request.client_ip, now, int(config.token_limit_per_hour), float(config.token_block_seconds)
        ):
            return error_response(error_item("H084"))
        form = _parse_token_body(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            return oauth_error("invalid_request", "grant_type alanı zorunludur.")
        if grant_type == "password":
            username, password = form.get("username"), form.get("password")
            if not username or not password:
                return oauth_error("invalid_request", "username ve password alanları zorunludur.")
            if username != config.username or password != config.password:
                return oauth_error("invalid_grant", "Kullanıcı kimlik bilgileri geçersiz.")
        elif grant_type == "refresh_token":
            refresh_token = form.get("refresh_token")
            if not refresh_token:
                return oauth_error("invalid_request", "refresh_token alanı zorunludur.")
            expiry = self._refresh_tokens.pop(refresh_token, None)
            if expiry is None or expiry <= now:
                return oauth_error("invalid_grant", "Geçersiz veya süresi dolmuş yenileme jetonu.")
        else:
            return oauth_error("invalid_request", f"Desteklenmeyen grant_type: {grant_type}")
        access_token = secrets.token_urlsafe(32)
        refresh_token = secrets.token_urlsafe(32)
        self._access_tokens[access_token] = now + config.access_ttl
        self._refresh_tokens[refresh_token] = now + config.refresh_ttl
        self.counters["tokens_issued"] += 1
        return json_response(
            200,
            {
                "access_token": access_token,
                "refresh_token": refresh_token,
                "expires_in": config.access_ttl,
                "refresh_expires_in": config.refresh_ttl,
                "token_type": "bearer",
            },
        )

    def _authenticate(self, request: SimRequest) -> None:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        expiry = self._access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= self.clock.epoch():
            raise BadRequest(error_response(error_item("H351")))

    def _check_codes(self, params: dict[str, str]) -> None:
        for name, not_int_code in (("iys", "H190"), ("brand", "H191")):
            if name in params and not params[name].isdigit():
                raise BadRequest(error_response(error_item(not_int_code, location=[name + "Code"], value=params[name])))
        if "iys" in params and int(params["iys"]) != self.config.iys_code:
            raise BadRequest(error_response(error_item("H353", location=["iysCode"], field="iysCode", value=params["iys"])))
        if "brand" in params and int(params["brand"]) not in self.config.brand_codes:
            raise BadRequest(error_response(error_item("H353", location=["brandCode"], field="brandCode", value=params["brand"])))

    # ------------------------------------------------------------------ business endpoints
    def _ep_brands(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        brands = []
        for brand_code in self.config.brand_codes:
            brands.append(
                {
                    "brandCode": brand_code,
                    "name": f"Simülatör Marka {brand_code}",
                    "master": brand_code == self.config.iys_code,
                    "stats": {"consents": self.store.brand_stats(brand_code), "retailers": {"total": 0}},
                }
            )
        return json_response(200, brands)

    def _ep_consent_add(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        body = _json_body(request, invalid_shape_code="H085", expect=dict)
        consent, errors = self._validator.validate(body, self.clock.now())
        refused = self._refused_error(body)
        if refused is not None:
            return _request_errors([*errors, refused], refused=[refused])
        if errors:
            return error_response(*errors, status=_validation_status(errors))
        retailer_error = _retailer_error(body)
        if retailer_error:
            return error_response(retailer_error)
        try:
            record, created = self.store.apply_hs_write(int(params["brand"]), consent, self.clock.epoch())
        except WriteRejected as rejection:
            return error_response(rejection.error)
        self._count_write(created)
        return json_response(200, {"transactionId": record.transaction_id, "creationDate": record.creation_date})

    def _ep_consent_add_v2(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        # İYS V2: a byte-identical retry of a request that succeeded returns the original answer.
        fingerprint = hashlib.sha256(request.path.encode() + b"\0" + request.body).hexdigest()
        previous = self._v2_responses.get(fingerprint)
        if previous is not None:
            return SimResponse(previous.status, previous.body, dict(previous.headers))
        response = self._ep_consent_add(request, params)
        if response.status == 200:
            self._v2_responses[fingerprint] = response
        return response

    def _count_write(self, created: bool) -> None:
        self.counters["writes"] += 1
        if created:
            self.counters["recipients_created"] += 1

    def _ep_batch_submit(self, request: SimRequest, params: dict[str, str], is_v2: bool = False) -> SimResponse:
        body = _json_body(request, invalid_shape_code="H092", expect=list)
        if not body:
            return error_response(error_item("H092"))
        if len(body) > MAX_LIST_SIZE:
            return error_response(error_item("H125", value=len(body)))
        now = self.clock.now()
        consents: list[ConsentInput] = []
        errors: list[dict[str, Any]] = []
        refused_errors: list[dict[str, Any]] = []
        seen: set[tuple[str, str, str]] = set()
        for index, item in enumerate(body):
            consent, item_errors = self._validator.validate(item, now, index=index)
            retailer_error = _retailer_error(item, index) if not item_errors else None
            refused = self._refused_error(item, index)
            if item_errors or retailer_error or refused:
                if item_errors or retailer_error:
                    errors.extend(item_errors or [retailer_error])
                if refused is not None:
                    errors.append(refused)
                    refused_errors.append(refused)
                continue
            if consent.key in seen:
                errors.append(error_item("H194", location=["recipient"], value=consent.recipient, index=index))
                continue
            seen.add(consent.key)
            consents.append(consent)
        if refused_errors:
            return _request_errors(errors, refused=refused_errors)
        if errors:
            return error_response(*errors, status=_validation_status(errors))

        brand_code = int(params["brand"])
        submitted = self.clock.epoch()
        creation_date = format_turkey_time(submitted)
        batch = Batch(self.store.new_uuid(), brand_code, submitted, is_v2, [])
        sub_requests = []
        for index, consent in enumerate(consents):
            item = BatchItem(index, self.store.new_uuid(), consent)
            if not self.faults.enqueue_item():
                item.result = self._process_batch_item(batch, item)
            batch.items.append(item)
            sub_requests.append(_sub_request_body(consent, item.sub_request_id, creation_date))
        self._batches[batch.request_id] = batch
        self.counters["batch_submits"] += 1
        return json_response(202, {"requestId": batch.request_id, "subRequests": sub_requests})

    def _refused_error(self, item: Any, index: int | None = None) -> dict[str, Any] | None:
        """The error item for a consent naming an address in ``refused_recipients`` (else None)."""
        refused = self.config.refused_recipients
        recipient = item.get("recipient") if refused and isinstance(item, dict) else None
        if not isinstance(recipient, str):
            return None
        code = refused.get(normalise_recipient(recipient))
        if code is None:
            return None
        known = ERROR_CATALOGUE.get(code)
        message = known[1] if known and "{" not in known[1] else REFUSED_RECIPIENT_MESSAGE
        error: dict[str, Any] = {"code": code, "message": message, "location": ["recipient"], "value": recipient}
        if index is not None:
            error["index"] = index
        return error

    def _ep_batch_submit_v2(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        return self._ep_batch_submit(request, params, is_v2=True)

    def _process_batch_item(self, batch: Batch, item: BatchItem) -> dict[str, Any]:
        consent = item.consent
        if batch.is_v2:
            existing = self.store.records.get((batch.brand_code, *consent.key))
            if existing is not None and existing.origin_request_id and _same_movement(existing, consent):
                return {
                    "index": item.index,
                    "status": "success",
                    "requestId": batch.request_id,
                    "subRequestId": item.sub_request_id,
                    "transactionId": existing.transaction_id,
                    "creationDate": existing.creation_date,
                    "isAddConsentV2Service": True,
                    "originalRequestInformation": {
                        "requestId": existing.origin_request_id,
                        "subRequestId": existing.origin_sub_request_id,
                    },
                }
        try:
            record, created = self.store.apply_hs_write(
                batch.brand_code, consent, self.clock.epoch(), origin=(batch.request_id, item.sub_request_id)
            )
        except WriteRejected as rejection:
            error = {"code": rejection.error["code"], "message": rejection.error["message"]}
            return {"index": item.index, "status": "failure", "subrequestId": item.sub_request_id, "error": error}
        self._count_write(created)
        return {
            "index": item.index,
            "status": "success",
            "requestId": batch.request_id,
            "subRequestId": item.sub_request_id,
            "transactionId": record.transaction_id,
            "creationDate": record.creation_date,
        }

    def _ep_batch_result(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        request_id = params["request_id"]
        if len(request_id) > 36:
            return error_response(error_item("H198", location=["requestId"], value=request_id))
        if request_id.isalpha():
            return error_response(error_item("H199", location=["requestId"], value=request_id))
        if request_id.isdigit():
            return error_response(error_item("H400", location=["requestId"], value=request_id))
        batch = self._batches.get(request_id)
        now = self.clock.epoch()
        delay = float(self.config.batch_result_delay)
        retention = float(self.config.batch_result_retention_days) * 86400
        if (
            batch is None
            or batch.brand_code != int(params["brand"])
            or now < batch.submitted_epoch + delay
            or now > batch.submitted_epoch + retention
        ):
            return SimResponse(200)  # İYS answers an empty body while processing or for unknown ids
        override = self.faults.settings.batch_item_status
        results = []
        for item in batch.items:
            if item.result is None and now >= batch.submitted_epoch + 2 * delay:
                item.result = self._process_batch_item(batch, item)  # the queue finally caught up
            if override is not None and not item.reported:
                # Fault: an undocumented status; the real result stays stored for later calls.
                results.append({"index": item.index, "status": str(override), "subrequestId": item.sub_request_id})
            elif item.result is not None:
                item.reported = True
                results.append(item.result)
            else:
                results.append({"index": item.index, "status": "enqueue", "subrequestId": item.sub_request_id})
        return json_response(200, results)

    def _ep_single_status(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        if not self._single_status_quota.try_acquire(
            request.client_ip, self.clock.epoch(), int(self.config.single_status_limit_per_hour), 3600.0
        ):
            return error_response(error_item("H086"))
        body = _json_body(request, invalid_shape_code="H097", expect=dict)
        errors = [error_item("H118", location=[name]) for name in body if name not in ("recipient", "recipientType", "type")]
        consent_type = _required_enum(body, "type", CONSENT_TYPES, "H111", "H117", errors)
        recipient_type = _required_enum(body, "recipientType", RECIPIENT_TYPES, "H170", "H116", errors)
        if "recipient" not in body:
            errors.append(error_item("H114", location=["recipient"]))
        else:
            errors.extend(recipient_errors(body["recipient"], consent_type, ["recipient"]))
        if errors:
            return error_response(*errors, status=_validation_status(errors))
        key = (int(params["brand"]), normalise_recipient(body["recipient"]), recipient_type, consent_type)
        record = self.store.get(key)
        if record is not None:
            return json_response(200, record.status_body())
        mode = self.config.unknown_status_mode
        if mode == "empty":
            return SimResponse(200)
        if mode == "422":
            code = self.config.unknown_status_code
            return error_response({"code": code, "message": UNKNOWN_RECIPIENT_MESSAGE, "location": ["recipient"]}, status=422)
        if mode == "malformed":
            return json_response(200, MALFORMED_STATUS_BODY)
        # İYS does not document this case; the simulator uses a made-up code so clients can tell it apart.
        return error_response(error_item("H000"))

    def _ep_multi_status(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        recipient_type, consent_type = params["recipient_type"], params["type"]
        if recipient_type not in RECIPIENT_TYPES:
            return error_response(error_item("H116", location=["recipientType"], value=recipient_type))
        if consent_type not in CONSENT_TYPES:
            return error_response(error_item("H117", location=["type"], value=consent_type))
        body = _json_body(request, invalid_shape_code="H097", expect=dict)
        unknown = [error_item("H118", location=[name]) for name in body if name != "recipients"]
        if unknown:
            return error_response(*unknown)
        if "recipients" not in body or body["recipients"] is None:
            return error_response(error_item("H168", location=["recipients"]))
        recipients = body["recipients"]
        if not isinstance(recipients, list):
            return error_response(error_item("H478", location=["recipients"]))
        if not recipients:
            return error_response(error_item("H164", location=["recipients"]))
        if len(recipients) > MAX_LIST_SIZE:
            return error_response(error_item("H125", location=["recipients"], value=len(recipients)))
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        normalised: list[str] = []
        for index, recipient in enumerate(recipients):
            item_errors = recipient_errors(recipient, consent_type, ["recipients", index], index)
            if item_errors:
                errors.extend(item_errors)
                continue
            address = normalise_recipient(recipient)
            if address in seen:
                errors.append(error_item("H193", location=["recipients", index], value=recipient, index=index))
                continue
            seen.add(address)
            normalised.append(address)
        if errors:
            return error_response(*errors, status=_validation_status(errors))
        brand_code = int(params["brand"])
        approved = []
        for address in normalised:
            record = self.store.get((brand_code, address, recipient_type, consent_type))
            if record is not None and record.status == "ONAY":
                approved.append(address)
        return json_response(200, {"requestId": self.store.new_uuid(), "list": approved})

    def _ep_changes(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        source = _query_value(request, "source", "IYS")
        if source not in (STREAM_IYS, STREAM_HS):
            return error_response(error_item("H506", location=["source"], value=source))
        raw_limit = _query_value(request, "limit", "1000")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST_SIZE:
            return error_response(error_item("H507", location=["limit"], value=raw_limit))
        after = _parse_cursor(_query_value(request, "after", None))
        now_ms = self.clock.epoch_ms()
        events = self.store.events_after(
            int(params["brand"]), source, after, now_ms - CHANGE_WINDOW_MS, now_ms - CHANGE_HIDDEN_RECENT_MS, limit
        )
        if not events:
            return SimResponse(204)
        return json_response(200, {"after": events[-1].cursor, "list": [event.pull_body() for event in events]})

    # ------------------------------------------------------------------ control API
    def _handle_control_with_optional_faults(self, request: SimRequest) -> SimResponse:
        with self._lock:
            apply_faults = self.faults.settings.apply_to_control
            latency = self.faults.latency_seconds(self.config.latency_ms) if apply_faults else 0.0
        if latency:
            time.sleep(latency)
        with self._lock:
            if apply_faults:
                injected = self._injected_fault(request)
                if injected is not None:
                    return injected
            try:
                return self._handle_control(request)
            except BadRequest as rejection:
                return rejection.response
            except (ValueError, TypeError, KeyError) as problem:
                return json_response(400, {"error": f"{type(problem).__name__}: {problem}"})

    def _handle_control(self, request: SimRequest) -> SimResponse:
        action = request.path[len(CONTROL_PREFIX):].strip("/")
        handler = CONTROL_ROUTES.get((request.method, action))
        if handler is None:
            return json_response(404, {"error": f"unknown control endpoint {request.method} {request.path}"})
        payload = _json_body(request, invalid_shape_code="H014", expect=dict) if request.method == "POST" else {}
        return json_response(200, handler(self, payload, request))

    def _ctl_reset(self, payload: dict, request: SimRequest) -> dict:
        self.reset(keep_config=bool(payload.get("keep_config")))
        return {"ok": True, "now": self.now_text()}

    def _ctl_seed(self, payload: dict, request: SimRequest) -> dict:
        return {"seeded": self.seed(payload.get("consents", []), emit_events=bool(payload.get("emit_events")))}

    def _ctl_citizen_change(self, payload: dict, request: SimRequest) -> dict:
        return self.citizen_change(**payload)

    def _ctl_seed_synthetic(self, payload: dict, request: SimRequest) -> dict:
        return self.seed_synthetic(**payload)

    def _ctl_inject_events(self, payload: dict, request: SimRequest) -> dict:
        unknown = set(payload) - {"events"}
        if unknown:
            raise ValueError(f"unknown inject_events option(s): {sorted(unknown)}")
        return self.inject_events(payload.get("events"))

    def _ctl_truth(self, payload: dict, request: SimRequest) -> dict:
        recipient = _query_value(request, "recipient", None)
        consent_type = _query_value(request, "type", None)
        if not recipient or not consent_type:
            raise ValueError("recipient and type query parameters are required")
        brand = _query_value(request, "brandCode", None)
        status = self.truth(
            recipient,
            consent_type,
            recipient_type=_query_value(request, "recipientType", "BIREYSEL"),
            brand_code=int(brand) if brand else None,
        )
        return {"status": status}

    def _ctl_counters(self, payload: dict, request: SimRequest) -> dict:
        return json.loads(json.dumps(self.counters))

    def _ctl_counters_reset(self, payload: dict, request: SimRequest) -> dict:
        self.counters = fresh_counters()
        return {"ok": True}

    def _ctl_state(self, payload: dict, request: SimRequest) -> dict:
        return self.state()

    def _ctl_events(self, payload: dict, request: SimRequest) -> dict:
        return {"events": self.events()}

    def _ctl_clock(self, payload: dict, request: SimRequest) -> dict:
        if "offset_seconds" in payload:
            self.clock.set_offset(float(payload["offset_seconds"]))
        if "advance_seconds" in payload:
            self.clock.advance(float(payload["advance_seconds"]))
        return self.clock_info()

    def _ctl_clock_get(self, payload: dict, request: SimRequest) -> dict:
        return self.clock_info()

    def _ctl_revoke_tokens(self, payload: dict, request: SimRequest) -> dict:
        return self.revoke_tokens(refresh=bool(payload.get("refresh")))

    def _ctl_config(self, payload: dict, request: SimRequest) -> dict:
        return self.configure(**payload).to_json()

    def _ctl_config_get(self, payload: dict, request: SimRequest) -> dict:
        return self.config.to_json()

    def _ctl_faults(self, payload: dict, request: SimRequest) -> dict:
        return self.set_faults(**payload)

    def _ctl_faults_get(self, payload: dict, request: SimRequest) -> dict:
        return self.faults.settings.to_json()

    # ------------------------------------------------------------------ Python-level control API
    def now_text(self) -> str:
        return format_turkey_time(self.clock.epoch())

    def clock_info(self) -> dict[str, Any]:
        return {"now": self.now_text(), "epoch_ms": self.clock.epoch_ms(), "offset_seconds": self.clock.offset_seconds}

    def seed(self, consents: list[dict[str, Any]], emit_events: bool = False) -> int:
        """Store consents as İYS already knows them (never counted as created by the client)."""
        with self._lock:
            for raw in consents:
                record, creation_ms = self._record_from_control(raw, default_source="HS_WEB")
                self.store.put(record)
                if emit_events:
                    self.store.append_event(record, creation_ms)
            return len(consents)

    def citizen_change(self, **change: Any) -> dict[str, Any]:
        """A citizen changing a consent through İYS channels (IYS_* source): state + IYS-stream event."""
        with self._lock:
            change.setdefault("source", "IYS_WEB")
            if stream_of(change["source"]) != STREAM_IYS:
                raise ValueError("citizen changes must use an IYS_* source")
            record, creation_ms = self._record_from_control(change, default_source="IYS_WEB")
            self.store.put(record)
            event = self.store.append_event(record, creation_ms)
            return {"transactionId": record.transaction_id, "creationDate": record.creation_date, "cursor": event.cursor}

    def inject_events(self, events: Any) -> dict[str, Any]:
        """Append raw movements to the change feeds, as given: values are not validated and consent state
        is untouched unless an item says ``"apply": true`` (then an ONAY/RET movement also becomes the
        stored state, like ``citizen_change``). An explicit ``transactionId`` may repeat one already used.
        All items are checked before any is appended, so a bad item injects nothing."""
        with self._lock:
            if not isinstance(events, list):
                raise ValueError('"events" must be a list of movements')
            prepared = [self._injected_event(position, raw) for position, raw in enumerate(events)]
            injected = []
            for raw, brand_code, stream, creation_ms in prepared:
                transaction_id = raw["transactionId"] if "transactionId" in raw else self.store.new_transaction_id()
                creation_date = format_turkey_time(creation_ms / 1000)
                body: dict[str, Any] = {}
                if "consentDate" in raw:
                    body["consentDate"] = raw["consentDate"]
                body.update(creationDate=creation_date, source=raw["source"], recipient=raw["recipient"])
                body.update(recipientType=raw.get("recipientType", "BIREYSEL"), status=raw["status"], type=raw["type"])
                body["transactionId"] = transaction_id
                if "citizenName" in raw:
                    body["citizenName"] = raw["citizenName"]
                event = self.store.append_raw_event(brand_code, stream, creation_ms, transaction_id, body)
                if raw.get("apply") and raw["status"] in ("ONAY", "RET"):
                    recipient = raw["recipient"]
                    self.store.put(
                        StoredConsent(
                            brand_code=brand_code,
                            recipient=normalise_recipient(recipient) if isinstance(recipient, str) else recipient,
                            recipient_type=body["recipientType"],
                            consent_type=raw["type"],
                            status=raw["status"],
                            consent_date=raw.get("consentDate", creation_date),
                            source=raw["source"],
                            creation_date=creation_date,
                            transaction_id=transaction_id,
                        )
                    )
                injected.append({"transactionId": transaction_id, "creationDate": creation_date, "cursor": event.cursor})
            return {"injected": len(injected), "events": injected}

    def _injected_event(self, position: int, raw: Any) -> tuple[dict[str, Any], int, str, int]:
        if not isinstance(raw, dict):
            raise ValueError(f"events[{position}] must be an object")
        unknown = set(raw) - INJECT_EVENT_FIELDS
        if unknown:
            raise ValueError(f"events[{position}]: unknown field(s) {sorted(unknown)}")
        missing = [name for name in ("recipient", "type", "status", "source") if name not in raw]
        if missing:
            raise ValueError(f"events[{position}]: missing field(s) {missing}")
        stream = raw.get("stream", STREAM_IYS)
        if stream not in (STREAM_IYS, STREAM_HS):
            raise ValueError(f"events[{position}]: stream must be {STREAM_IYS!r} or {STREAM_HS!r}")
        brand_code = int(raw.get("brandCode", self.config.brand_codes[0]))
        if "creationDate" in raw:
            creation_ms = int(parse_turkey_time(str(raw["creationDate"])).timestamp() * 1000)
        else:
            creation_ms = self.clock.epoch_ms()
        return raw, brand_code, stream, creation_ms

    def _record_from_control(self, raw: dict[str, Any], default_source: str) -> tuple[StoredConsent, int]:
        allowed = {"recipient", "type", "status", "recipientType", "consentDate", "source", "creationDate", "brandCode"}
        unknown = set(raw) - allowed
        if unknown:
            raise ValueError(f"unknown consent field(s): {sorted(unknown)}")
        if raw.get("status") not in ("ONAY", "RET") or raw.get("type") not in CONSENT_TYPES or not raw.get("recipient"):
            raise ValueError("recipient, type (ARAMA|MESAJ|EPOSTA) and status (ONAY|RET) are required")
        if "creationDate" in raw:
            creation_ms = int(parse_turkey_time(raw["creationDate"]).timestamp() * 1000)
        else:
            creation_ms = self.clock.epoch_ms()
        creation_date = format_turkey_time(creation_ms / 1000)
        record = StoredConsent(
            brand_code=int(raw.get("brandCode", self.config.brand_codes[0])),
            recipient=normalise_recipient(raw["recipient"]),
            recipient_type=raw.get("recipientType", "BIREYSEL"),
            consent_type=raw["type"],
            status=raw["status"],
            consent_date=raw.get("consentDate", creation_date),
            source=raw.get("source", default_source),
            creation_date=creation_date,
            transaction_id=self.store.new_transaction_id(),
        )
        return record, creation_ms

    def seed_synthetic(self, **options: Any) -> dict[str, Any]:
        with self._lock:
            population = SyntheticPopulation(**options)
            population.consent_date = format_turkey_time(self.clock.epoch() - 30 * 86400)
            self.store.add_population(population)
            return population.describe()

    def truth(
        self, recipient: str, consent_type: str, recipient_type: str = "BIREYSEL", brand_code: int | None = None
    ) -> str | None:
        with self._lock:
            brand = self.config.brand_codes[0] if brand_code is None else brand_code
            record = self.store.get((brand, normalise_recipient(recipient), recipient_type, consent_type))
            return record.status if record else None

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "now": self.now_text(),
                "consents": [record.state_body() for record in self.store.records.values()],
                "synthetic_populations": [population.describe() for population in self.store.populations],
            }

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"brandCode": event.brand_code, "stream": event.stream, "cursor": event.cursor, **event.pull_body()}
                for event in self.store.all_events()
            ]

    def revoke_tokens(self, refresh: bool = False) -> dict[str, Any]:
        with self._lock:
            revoked = {"access_tokens": len(self._access_tokens), "refresh_tokens": 0}
            self._access_tokens.clear()
            if refresh:
                revoked["refresh_tokens"] = len(self._refresh_tokens)
                self._refresh_tokens.clear()
            return revoked

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge fault options into the current ones (``reset=True`` starts from no faults)."""
        with self._lock:
            base = None if faults.pop("reset", False) else self.faults.settings
            self.faults.settings = FaultSettings.from_json(faults, base)
            return self.faults.settings.to_json()

    def snapshot_counters(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self.counters))

    def reset_counters(self) -> None:
        with self._lock:
            self.counters = fresh_counters()


CONTROL_ROUTES: dict[tuple[str, str], Callable[[SimulatorApp, dict, SimRequest], dict]] = {
    ("POST", "reset"): SimulatorApp._ctl_reset,
    ("POST", "seed"): SimulatorApp._ctl_seed,
    ("POST", "citizen_change"): SimulatorApp._ctl_citizen_change,
    ("POST", "inject_events"): SimulatorApp._ctl_inject_events,
    ("POST", "seed_synthetic"): SimulatorApp._ctl_seed_synthetic,
    ("GET", "truth"): SimulatorApp._ctl_truth,
    ("GET", "counters"): SimulatorApp._ctl_counters,
    ("POST", "counters/reset"): SimulatorApp._ctl_counters_reset,
    ("GET", "state"): SimulatorApp._ctl_state,
    ("GET", "events"): SimulatorApp._ctl_events,
    ("POST", "clock"): SimulatorApp._ctl_clock,
    ("GET", "clock"): SimulatorApp._ctl_clock_get,
    ("POST", "revoke_tokens"): SimulatorApp._ctl_revoke_tokens,
    ("POST", "config"): SimulatorApp._ctl_config,
    ("GET", "config"): SimulatorApp._ctl_config_get,
    ("POST", "faults"): SimulatorApp._ctl_faults,
    ("GET", "faults"): SimulatorApp._ctl_faults_get,
}


# ---------------------------------------------------------------------- request helpers
def _json_body(request: SimRequest, invalid_shape_code: str, expect: type) -> Any:
    if not request.body.strip():
        if expect is dict and request.method == "POST" and request.path.startswith(CONTROL_PREFIX):
            return {}
        raise BadRequest(error_response(error_item(invalid_shape_code)))
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest(error_response(error_item("H014"))) from None
    if not isinstance(body, expect):
        raise BadRequest(error_response(error_item(invalid_shape_code)))
    return body


def _parse_token_body(request: SimRequest) -> dict[str, str]:
    text = request.body.decode("utf-8", errors="replace")
    content_type = (request.headers.get("Content-Type") or "").lower()
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {key: values[0] for key, values in parse_qs(text).items()}


def _query_value(request: SimRequest, name: str, default: str | None) -> str | None:
    values = request.query.get(name)
    return values[0] if values else default


def _parse_cursor(raw: str | None) -> tuple[int, str] | None:
    if not raw:
        return None
    millis, _, transaction_id = raw.partition("_")
    if not millis.isdigit():
        # Undocumented in İYS; the simulator treats a malformed cursor as an invalid pull request.
        raise BadRequest(error_response(error_item("H098", location=["after"], value=raw)))
    return (int(millis), transaction_id)


def _required_enum(body, field_name, allowed, missing_code, invalid_code, errors) -> str | None:
    value = body.get(field_name)
    if value in (None, ""):
        errors.append(error_item(missing_code, location=[field_name]))
        return None
    if value not in allowed:
        errors.append(error_item(invalid_code, location=[field_name], value=value))
        return None
    return value


def _validation_status(errors: list[dict[str, Any]]) -> int:
    return max(http_status_of(error["code"]) for error in errors)


def _request_errors(errors: list[dict[str, Any]], refused: list[dict[str, Any]]) -> SimResponse:
    """A request-level failure; refused-recipient items always count as 422 whatever their code."""
    refused_ids = {id(error) for error in refused}
    status = max(422 if id(error) in refused_ids else http_status_of(error["code"]) for error in errors)
    return error_response(*errors, status=status)


def _retailer_error(body: dict[str, Any], index: int | None = None) -> dict[str, Any] | None:
    """The simulator models no retailers, so any retailer reference is unknown (403 H180)."""
    if body.get("retailerCode") not in (None, ""):
        return error_item("H180", location=["retailerCode"], value=body["retailerCode"], index=index)
    if body.get("retailerAccess"):
        return error_item("H180", location=["retailerAccess", 0], value=body["retailerAccess"][0], index=index)
    return None


def _same_movement(record: StoredConsent, consent: ConsentInput) -> bool:
    return (record.status, record.consent_date, record.source) == (consent.status, consent.consent_date, consent.source)


def _sub_request_body(consent: ConsentInput, sub_request_id: str, creation_date: str) -> dict[str, Any]:
    body: dict[str, Any] = {"type": consent.consent_type}
    if consent.source is not None:
        body["source"] = consent.source
    body.update(recipient=consent.recipient, status=consent.status)
    if consent.consent_date is not None:
        body["consentDate"] = consent.consent_date
    body.update(recipientType=consent.recipient_type, subRequestId=sub_request_id, creationDate=creation_date)
    return body
