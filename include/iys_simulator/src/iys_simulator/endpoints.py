"""The İYS REST endpoints of the simulator: token, brands, consent writes, batches, statuses, changes.

:class:`IysEndpoints` is mixed into :class:`~iys_simulator.app.SimulatorApp`, which owns the state
(config, clock, store, faults, counters, tokens, batches), injects faults (``_injected_fault``) and
holds the lock around every call made here.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from .clock import format_turkey_time
from .config import SimAccount
from .errors import ERROR_CATALOGUE, error_item, http_status_of
from .messages import BadRequest, SimRequest, SimResponse, error_response, json_body, json_response, query_value
from .store import STREAM_HS, STREAM_IYS, StoredConsent, WriteRejected
from .validation import CONSENT_TYPES, RECIPIENT_TYPES, ConsentInput, normalise_recipient, recipient_errors

MAX_LIST_SIZE = 1000
CHANGE_WINDOW_MS = 7 * 24 * 3600 * 1000
CHANGE_HIDDEN_RECENT_MS = 3600 * 1000
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
    # Daily reconciliation (reconciliation.py)
    (
        "GET",
        "reconciliation_summary",
        re.compile(rf"^{_BRAND}/changes/(?P<report_date>[^/]+)/recipients/(?P<recipient_type>[^/]+)$"),
    ),
    ("GET", "reconciliation_file", re.compile(rf"^{_BRAND}/changes/(?P<report_date>[^/]+)/file$")),
    ("GET", "agreement", re.compile(rf"^{_BRAND}/agreements/(?P<report_date>[^/]+)$")),
    ("PUT", "agreement_put", re.compile(rf"^{_BRAND}/agreements/(?P<report_date>[^/]+)$")),
    ("GET", "reconciliation_timestamp", re.compile(rf"^{_BRAND}/agreements/(?P<report_date>[^/]+)/timestamp$")),
    # Push links (push.py)
    ("POST", "push_registration", re.compile(rf"^{_BRAND}/push/registration$")),
    ("GET", "push_registration_list", re.compile(rf"^{_BRAND}/push/registration$")),
    ("POST", "push_unregistration", re.compile(rf"^{_BRAND}/push/unregistration$")),
]
UNKNOWN_RECIPIENT_MESSAGE = "Alıcı (recipient) bulunamadı."  # the wording of İYS's own error example
MALFORMED_STATUS_BODY = {"message": "Kayıt bulunamadı"}  # not the documented single-status shape
REFUSED_RECIPIENT_MESSAGE = "Alıcı (recipient) İYS tarafından kabul edilmedi."


def oauth_error(error: str, description: str) -> SimResponse:
    return json_response(400, {"error": error, "error_description": description})


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


class IysEndpoints:
    """The İYS API: routing, authentication and one ``_ep_<name>`` method per endpoint of ``ROUTES``."""

    def _classify(self, request: SimRequest) -> str:
        path_known = False
        for method, name, pattern in ROUTES:
            if pattern.match(request.path):
                if method == request.method:
                    return name  # one path may serve several methods (GET and PUT of an agreement)
                path_known = True
        return "method_not_allowed" if path_known else "not_found"

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
            account = self._authenticate(request)
            match = next(p.match(request.path) for _, name, p in ROUTES if name == endpoint)
            params = match.groupdict()
            self._check_codes(params, account)
            response = getattr(self, f"_ep_{endpoint}")(request, params)
        except BadRequest as rejection:
            return rejection.response
        if endpoint in WRITE_ENDPOINTS and self.faults.take_drop_after_commit():
            # Simulates a lost response: the write is committed, the client never hears about it.
            return SimResponse(drop=True)
        return response

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
            account = config.account(username)
            if account is None or password != account.password:
                return oauth_error("invalid_grant", "Kullanıcı kimlik bilgileri geçersiz.")
        elif grant_type == "refresh_token":
            refresh_token = form.get("refresh_token")
            if not refresh_token:
                return oauth_error("invalid_request", "refresh_token alanı zorunludur.")
            expiry, username = self._refresh_tokens.pop(refresh_token, (None, None))
            account = config.account(username) if username else None
            # A token whose account was configured away is as dead as an expired one.
            if expiry is None or expiry <= now or account is None:
                return oauth_error("invalid_grant", "Geçersiz veya süresi dolmuş yenileme jetonu.")
        else:
            return oauth_error("invalid_request", f"Desteklenmeyen grant_type: {grant_type}")
        access_token = secrets.token_urlsafe(32)
        refresh_token = secrets.token_urlsafe(32)
        self._access_tokens[access_token] = (now + config.access_ttl, account.username)
        self._refresh_tokens[refresh_token] = (now + config.refresh_ttl, account.username)
        self._refresh_token_owners[refresh_token] = account.username
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

    def token_caller(self, request: SimRequest) -> str:
        """Whose token request this is, for the per-account counter: the password grant's username
        or the refresh token's owner; ``"unknown"`` for anything else (kept out of client input)."""
        form = _parse_token_body(request)
        if form.get("grant_type") == "password":
            account = self.config.account(form.get("username") or "")
            return account.username if account else "unknown"
        if form.get("grant_type") == "refresh_token":
            return self._refresh_token_owners.get(form.get("refresh_token") or "", "unknown")
        return "unknown"

    def _authenticate(self, request: SimRequest) -> SimAccount:
        header = request.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        expiry, username = (
            self._access_tokens.get(token.strip(), (None, None)) if scheme.lower() == "bearer" else (None, None)
        )
        account = self.config.account(username) if username else None
        if expiry is None or expiry <= self.clock.epoch() or account is None:
            raise BadRequest(error_response(error_item("H351")))
        return account

    def _check_codes(self, params: dict[str, str], account: SimAccount) -> None:
        """A token acts only for its own account: another İYS code or brand is "not in the user's
        rights", 403 H353 (İYS's documented answer for iysCode/brandCode outside the API user's rights)."""
        for name, not_int_code in (("iys", "H190"), ("brand", "H191")):
            if name in params and not params[name].isdigit():
                raise BadRequest(error_response(error_item(not_int_code, location=[name + "Code"], value=params[name])))
        if "iys" in params and int(params["iys"]) != account.iys_code:
            raise BadRequest(
                error_response(error_item("H353", location=["iysCode"], field="iysCode", value=params["iys"]))
            )
        if "brand" in params and int(params["brand"]) not in account.brand_codes:
            raise BadRequest(
                error_response(error_item("H353", location=["brandCode"], field="brandCode", value=params["brand"]))
            )

    # ------------------------------------------------------------------ business endpoints
    def _ep_brands(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        account = self.config.account_of_iys_code(int(params["iys"]))  # the caller's: _check_codes said so
        brands = []
        for brand_code in account.brand_codes:
            brands.append(
                {
                    "brandCode": brand_code,
                    "name": f"Simülatör Marka {brand_code}",
                    "master": brand_code == account.iys_code,
                    "stats": {"consents": self.store.brand_stats(brand_code), "retailers": {"total": 0}},
                }
            )
        return json_response(200, brands)

    def _ep_consent_add(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        body = json_body(request, invalid_shape_code="H085", expect=dict)
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
        body = json_body(request, invalid_shape_code="H092", expect=list)
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
        body = json_body(request, invalid_shape_code="H097", expect=dict)
        errors = [
            error_item("H118", location=[name]) for name in body if name not in ("recipient", "recipientType", "type")
        ]
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
            return error_response(
                {"code": code, "message": UNKNOWN_RECIPIENT_MESSAGE, "location": ["recipient"]}, status=422
            )
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
        body = json_body(request, invalid_shape_code="H097", expect=dict)
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
        source = query_value(request, "source", "IYS")
        if source not in (STREAM_IYS, STREAM_HS):
            return error_response(error_item("H506", location=["source"], value=source))
        raw_limit = query_value(request, "limit", "1000")
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIST_SIZE:
            return error_response(error_item("H507", location=["limit"], value=raw_limit))
        after = _parse_cursor(query_value(request, "after", None))
        now_ms = self.clock.epoch_ms()
        omitted = set(self.faults.settings.feed_omits_transactions)
        while True:
            events = self.store.events_after(
                int(params["brand"]), source, after, now_ms - CHANGE_WINDOW_MS, now_ms - CHANGE_HIDDEN_RECENT_MS, limit
            )
            if not events:
                return SimResponse(204)
            # Fault: movements the feed never shows (the daily reconciliation file still holds them).
            shown = [event for event in events if event.transaction_id not in omitted]
            if shown:
                return json_response(200, {"after": events[-1].cursor, "list": [e.pull_body() for e in shown]})
            after = _parse_cursor(events[-1].cursor)


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
