"""Hook for the İYS (İleti Yönetim Sistemi) REST API.

.. seealso:: The connection reference in the project README ("The ``iys`` connection"), and
   İYS's API documentation at https://apidocs.iys.org.tr/.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache, cached_property
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from pydantic import TypeAdapter, ValidationError
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
    wait_random_exponential,
)

from iys_provider.exceptions import (
    HOURLY_QUOTA_H_CODES,
    ItemError,
    IysApiError,
    IysAuthError,
    IysError,
    IysMalformedResponseError,
    IysQuotaExceededError,
    IysTokenBlockedError,
)
from iys_provider.get_provider_info import DEFAULT_BASE_URL
from iys_provider.models import (
    AddConsentResult,
    BatchResultItem,
    BatchSubmission,
    Brand,
    ChangePage,
    ChangeStream,
    Consent,
    ConsentRecord,
    ConsentType,
    MultiStatusResult,
    RecipientType,
    TokenPair,
)
from iys_provider.shared_state import InProcessSharedState, PostgresSharedState, StoredToken, utcnow

MAX_RECIPIENTS_PER_STATUS_CALL = 1000
MAX_CONSENTS_PER_BATCH = 1000
MAX_CHANGES_PER_PAGE = 1000
TOKEN_ENDPOINT = "/oauth2/token"
#: Refresh this long before the access token expires, so a long request never carries a dead token.
ACCESS_TOKEN_MARGIN = timedelta(minutes=5)
TOKEN_REQUEST_WINDOW = timedelta(hours=1)
#: İYS restarts its H084 block on every token call made during it; we wait the full hour out.
DEFAULT_TOKEN_BLOCK_SECONDS = 3600
RETRY_AFTER_CAP_SECONDS = 60.0
#: Adaptive rate after a 429: halve (down to this share of the configured rate), then +5% per success.
MIN_RATE_FACTOR = 0.125
RATE_RECOVERY_STEP = 0.05
#: Token calls spend the scarce hourly budget: only a couple of attempts on transient failures.
TOKEN_ATTEMPTS = 2
TOKEN_RETRY_WAIT_SECONDS = 2


@dataclass(frozen=True)
class IysConnectionSettings:
    """Everything the hook reads from the ``iys`` connection, validated once."""

    base_url: str
    username: str
    password: str
    iys_code: int
    brand_code: int
    rate_limit_per_second: float = 8.0
    auth_requests_per_hour: int = 10
    auth_block_seconds: int = DEFAULT_TOKEN_BLOCK_SECONDS
    batch_result_delay_seconds: int = 300
    timeout: float = 30.0
    shared_state_conn_id: str | None = "iys_postgres"
    verify_ssl: bool = True

    @property
    def account_key(self) -> str:
        """Identifies the İYS account in the shared token cache, without revealing anything."""
        raw = f"{self.base_url}|{self.username}|{self.iys_code}"
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def ip_budget_key(self) -> str:
        """İYS limits per client IP; all accounts of this installation share the API host's budget."""
        return urlsplit(self.base_url).netloc or self.base_url


@dataclass
class RequestStats:
    """Counters of one hook instance, for progress logs and benchmarks."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    token_requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, status: int) -> None:
        with self._lock:  # status calls may run in parallel threads
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if status == 429:
                self.rate_limited += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1

    @property
    def achieved_rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.requests / elapsed if elapsed > 0 else 0.0


# Tokens already read by this process, so a task does not touch Postgres for every request.
_process_tokens: dict[str, StoredToken] = {}
_process_tokens_lock = threading.Lock()


class IysHook(BaseHook):
    """
    Talk to the İYS API: tokens, consents, status queries and the change feed.

    One hook holds one keep-alive ``requests.Session`` and looks its connection up once. The
    access token, the hourly token budget, the H084 block and the request rate are shared by
    every task and worker through the Postgres connection named in the ``shared_state_conn_id``
    extra (default ``iys_postgres``), so many parallel mapped tasks together stay within İYS's
    limits: ``rate_limit_per_second`` requests per second and ``auth_requests_per_hour``
    token requests per hour.

    Retries: 429 (``Retry-After`` honoured, else exponential backoff with jitter), 5xx, H123,
    H192, timeouts and dropped connections are retried up to ``max_attempts`` times within
    ``max_retry_seconds``. A 401 H351 triggers one token refresh and one retry. Business errors
    (H174, H175, H178, H467, validation 422s) and hourly quotas are raised at once as
    :class:`~iys_provider.exceptions.IysApiError`.

    .. code-block:: python

        hook = IysHook()  # connection "iys_default"
        onay = hook.get_onay_recipients(["+905321234567"], ConsentType.MESAJ)

    :param iys_conn_id: the ``iys`` connection.
    :param brand_code: overrides the connection's brand code (accounts with several brands).
    :param max_attempts: attempts per request, including the first.
    :param max_retry_seconds: give up retrying after this long.
    """

    conn_name_attr = "iys_conn_id"
    default_conn_name = "iys_default"
    conn_type = "iys"
    hook_name = "İYS"

    def __init__(
        self,
        iys_conn_id: str = default_conn_name,
        *,
        brand_code: int | None = None,
        max_attempts: int = 6,
        max_retry_seconds: float = 300.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.iys_conn_id = iys_conn_id
        self._brand_code_override = brand_code
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self.stats = RequestStats()
        self._rate_factor = 1.0

    # ------------------------------------------------------------------ configuration

    @cached_property
    def connection(self):
        return self.get_connection(self.iys_conn_id)

    @cached_property
    def settings(self) -> IysConnectionSettings:
        conn = self.connection
        extra = conn.extra_dejson
        missing = [name for name in ("iys_code", "brand_code") if extra.get(name) in (None, "")]
        if missing:
            raise IysError(
                f"Connection {self.iys_conn_id!r} lacks {', '.join(missing)}: set the İYS code and the brand "
                "code in the connection's extra fields (both are integers from the İYS panel)."
            )
        if not conn.login or not conn.password:
            raise IysError(f"Connection {self.iys_conn_id!r} needs the İYS API username (login) and password.")
        host = (conn.host or DEFAULT_BASE_URL).rstrip("/")
        if "://" not in host:
            host = f"{conn.schema or 'https'}://{host}"
        if conn.port and urlsplit(host).port is None:
            host = f"{host}:{conn.port}"

        def number(name: str, default: float, cast=float):
            value = extra.get(name)
            return default if value in (None, "") else cast(value)

        shared = extra.get("shared_state_conn_id", "iys_postgres")
        try:
            return IysConnectionSettings(
                base_url=host,
                username=conn.login,
                password=conn.password,
                iys_code=int(extra["iys_code"]),
                brand_code=int(self._brand_code_override or extra["brand_code"]),
                rate_limit_per_second=number("rate_limit_per_second", 8.0),
                auth_requests_per_hour=number("auth_requests_per_hour", 10, int),
                auth_block_seconds=number("auth_block_seconds", DEFAULT_TOKEN_BLOCK_SECONDS, int),
                batch_result_delay_seconds=number("batch_result_delay_seconds", 300, int),
                timeout=number("timeout", 30.0),
                shared_state_conn_id=shared or None,
                verify_ssl=str(extra.get("verify_ssl", True)).lower() not in ("false", "0", "no"),
            )
        except (TypeError, ValueError) as exc:
            raise IysError(f"Connection {self.iys_conn_id!r} has an invalid extra value: {exc}") from None

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=4, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"Accept": "application/json", "User-Agent": "iys-airflow-provider"})
        session.verify = self.settings.verify_ssl
        return session

    @cached_property
    def shared_state(self) -> PostgresSharedState | InProcessSharedState:
        conn_id = self.settings.shared_state_conn_id
        if not conn_id:
            self.log.warning(
                "No shared_state_conn_id: token and rate limit are per process. Parallel tasks can "
                "exceed İYS's limits; set shared_state_conn_id for production."
            )
            return InProcessSharedState()
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresSharedState(PostgresHook(postgres_conn_id=conn_id).get_conn)

    def close(self) -> None:
        """Release the HTTP session and the shared-state connection."""
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]
        if "shared_state" in self.__dict__:
            self.shared_state.close()
            del self.__dict__["shared_state"]

    @property
    def iys_code(self) -> int:
        return self.settings.iys_code

    @property
    def brand_code(self) -> int:
        return self.settings.brand_code

    @property
    def _brand_path(self) -> str:
        return f"/sps/{self.iys_code}/brands/{self.brand_code}"

    def get_conn(self) -> requests.Session:
        return self.session

    # ------------------------------------------------------------------ API calls

    def get_brands(self) -> list[Brand]:
        """Brands of the İYS account (``GET /sps/{iysCode}/brands``)."""
        body = self._call("GET", f"/sps/{self.iys_code}/brands", endpoint="brands")
        return _parse(list[Brand], body, "brands")

    def add_consent(self, consent: Consent) -> AddConsentResult:
        """Add or update one consent through the idempotent ``/v2`` endpoint.

        Re-sending a byte-identical body returns the original transaction id, so a retry after a
        lost response cannot double-apply the movement or end in H174.
        """
        body = self._call(
            "POST", f"/v2{self._brand_path}/consents", json_body=consent.to_api(), endpoint="add_consent"
        )
        return _parse(AddConsentResult, body, "add_consent")

    def submit_consent_batch(self, consents: Sequence[Consent]) -> BatchSubmission:
        """Submit up to 1000 consents for asynchronous processing (202 + requestId), through ``/v2``.

        With ``/v2`` a resubmitted movement İYS already stored is answered with its original
        transaction id instead of H174, so a retry after a lost answer settles as sent.

        İYS accepts one movement per recipient and channel per batch (H194); several movements
        for one address must go through :meth:`add_consent` one after another.
        """
        if not consents:
            raise ValueError("an İYS batch needs at least one consent")
        if len(consents) > MAX_CONSENTS_PER_BATCH:
            raise ValueError(f"an İYS batch holds at most {MAX_CONSENTS_PER_BATCH} consents, got {len(consents)}")
        keys = {(c.recipient, c.recipient_type, c.type) for c in consents}
        if len(keys) != len(consents):
            raise ValueError("an İYS batch may hold each recipient, recipient type and type only once (H194)")
        body = self._call(
            "POST",
            f"/v2{self._brand_path}/consents/request",
            json_body=[c.to_api() for c in consents],
            endpoint="submit_batch",
            expected=(200, 202),
        )
        return _parse(BatchSubmission, body, "submit_batch")

    def get_batch_result(self, request_id: str) -> list[BatchResultItem] | None:
        """Result of an async batch, or ``None`` while İYS has not produced it yet.

        İYS answers with an empty body until processing is done (at least 300 s after submission).
        """
        body = self._call(
            "GET", f"/v2{self._brand_path}/consents/request/{request_id}", endpoint="batch_result", allow_empty=True
        )
        if not body:
            return None
        return _parse(list[BatchResultItem], body, "batch_result")

    def get_consent_status(
        self,
        recipient: str,
        consent_type: ConsentType,
        recipient_type: RecipientType = RecipientType.BIREYSEL,
    ) -> ConsentRecord | None:
        """Full consent record of one recipient, or ``None`` when İYS holds none.

        İYS does not document its answer for an address it does not hold; both an empty 200 and
        a 404 mean "not in İYS". This call has an hourly quota of 1000 per IP (H086).
        """
        body = self._call(
            "POST",
            f"{self._brand_path}/consents/status",
            json_body={"recipient": recipient, "recipientType": recipient_type.value, "type": consent_type.value},
            endpoint="consent_status",
            allow_empty=True,
            not_found_is_empty=True,
        )
        if not body:
            return None
        return _parse(ConsentRecord, body, "consent_status")

    def get_onay_recipients(
        self,
        recipients: Iterable[str],
        consent_type: ConsentType,
        recipient_type: RecipientType = RecipientType.BIREYSEL,
    ) -> set[str]:
        """The subset of ``recipients`` whose consent for ``consent_type`` is ONAY in İYS.

        Multi status lists only ONAY recipients: absent means RET *or* unknown to İYS. Duplicates
        are removed and the list is sent in calls of at most 1000 recipients.
        """
        return self.get_onay_recipients_by_channel({(recipient_type, consent_type): recipients})[
            (recipient_type, consent_type)
        ]

    def get_onay_recipients_by_channel(
        self,
        recipients: Mapping[tuple[RecipientType, ConsentType], Iterable[str]],
        *,
        concurrency: int = 1,
    ) -> dict[tuple[RecipientType, ConsentType], set[str]]:
        """:meth:`get_onay_recipients` for several (recipient type, channel) groups at once.

        With ``concurrency`` > 1 the ≤1000-recipient calls run in parallel threads, so network
        latency does not cap a task's request rate; the shared rate limiter still bounds the
        aggregate rate of every task.
        """
        jobs = []
        for (recipient_type, consent_type), group in recipients.items():
            unique = list(dict.fromkeys(group))
            for start in range(0, len(unique), MAX_RECIPIENTS_PER_STATUS_CALL):
                jobs.append((recipient_type, consent_type, unique[start : start + MAX_RECIPIENTS_PER_STATUS_CALL]))
        onay: dict[tuple[RecipientType, ConsentType], set[str]] = {key: set() for key in recipients}
        if concurrency > 1 and len(jobs) > 1:
            self._access_token()  # resolve connection, session, shared state and token before threading
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="iys-status") as pool:
                answers = list(pool.map(lambda job: self._onay_chunk(*job), jobs))
        else:
            answers = [self._onay_chunk(*job) for job in jobs]
        for (recipient_type, consent_type, _), answer in zip(jobs, answers, strict=True):
            onay[(recipient_type, consent_type)].update(answer)
        return onay

    def _onay_chunk(self, recipient_type: RecipientType, consent_type: ConsentType, chunk: list[str]) -> set[str]:
        path = f"{self._brand_path}/consents/{recipient_type.value}/status/{consent_type.value}"
        body = self._call("POST", path, json_body={"recipients": chunk}, endpoint="multi_status")
        result = _parse(MultiStatusResult, body, "multi_status")
        return set(result.onay).intersection(chunk)

    def iter_change_pages(
        self, source: ChangeStream, *, after: str | None = None, limit: int = MAX_CHANGES_PER_PAGE
    ) -> Iterator[ChangePage]:
        """Pages of the change feed of one stream, oldest first, until İYS answers 204.

        Store each page's ``after`` together with the page's changes (same transaction); passing
        it back resumes exactly after that page. İYS serves only the last 7 days minus one hour.
        """
        if not 1 <= limit <= MAX_CHANGES_PER_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_CHANGES_PER_PAGE}")
        cursor = after
        while True:
            params: dict[str, Any] = {"source": ChangeStream(source).value, "limit": limit}
            if cursor:
                params["after"] = cursor
            body = self._call(
                "GET", f"{self._brand_path}/consents/changes", params=params, endpoint="changes", allow_empty=True
            )
            if not body:
                return
            page = _parse(ChangePage, body, "changes")
            if not page.changes:
                return
            if not page.after or page.after == cursor:
                raise IysMalformedResponseError(
                    "change feed returned movements without advancing the cursor", endpoint="changes"
                )
            yield page
            cursor = page.after

    def test_connection(self) -> tuple[bool, str]:
        """Get a token and list the brands: proves URL, credentials and the İYS code."""
        try:
            brands = self.get_brands()
        except Exception as exc:
            return False, str(exc)
        codes = sorted(b.brand_code for b in brands)
        if self.brand_code not in codes:
            return False, (
                f"Authenticated, but brand code {self.brand_code} is not among this account's brands {codes}. "
                "Check the brand code, and the partnership permissions in the İYS panel."
            )
        return True, f"Connected to İYS: İYS code {self.iys_code}, brands {codes}."

    # ------------------------------------------------------------------ transport

    def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        expected: tuple[int, ...] = (200,),
        allow_empty: bool = False,
        not_found_is_empty: bool = False,
    ) -> Any:
        """One logical API call with retries; returns the decoded JSON body (or None when empty)."""
        data = json.dumps(json_body, ensure_ascii=False).encode() if json_body is not None else None
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_retry_seconds),
            wait=_wait_for_retry,
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                response = self._send_authorised(method, path, data=data, params=params)
                if response.status_code == 404 and not_found_is_empty:
                    return None
                if response.status_code in expected or response.status_code == 204:
                    return _decode_body(response, endpoint, allow_empty=allow_empty or response.status_code == 204)
                raise _api_error(response, endpoint)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _send_authorised(
        self, method: str, path: str, *, data: bytes | None, params: dict[str, Any] | None
    ) -> requests.Response:
        token = self._access_token()
        response = self._send(method, path, data=data, params=params, token=token)
        if response.status_code == 401:
            # Expired or revoked token (H351): refresh once, shared with every other worker.
            self._discard_token(token)
            response = self._send(method, path, data=data, params=params, token=self._access_token())
        return response

    def _send(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
        form: dict[str, str] | None = None,
    ) -> requests.Response:
        settings = self.settings
        wait = self.shared_state.reserve_request_slot(
            settings.ip_budget_key, settings.rate_limit_per_second * self._rate_factor
        )
        if wait > 0:
            time.sleep(wait)  # throttle: our share of İYS's per-second budget
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.session.request(
            method,
            settings.base_url + path,
            data=data if form is None else form,
            params=params,
            headers=headers,
            timeout=settings.timeout,
        )
        self.stats.count(response.status_code)
        if response.status_code == 429 and path != TOKEN_ENDPOINT:
            # İYS counted more than we scheduled (latency bunches arrivals, or something else on
            # this IP uses the budget): every task pauses, and this one halves its rate, recovering
            # step by step, so a storm does not drag the success ratio İYS watches below 70%.
            retry_after = _retry_after_seconds(response)
            self.shared_state.defer_requests(settings.ip_budget_key, 1.0 if retry_after is None else retry_after)
            self._rate_factor = max(MIN_RATE_FACTOR, self._rate_factor / 2)
        elif response.status_code < 400:
            self._rate_factor = min(1.0, self._rate_factor + RATE_RECOVERY_STEP)
        return response

    def _log_retry(self, state: RetryCallState) -> None:
        self.stats.count_retry()
        exc = state.outcome.exception() if state.outcome else None
        self.log.warning(
            "İYS request failed (attempt %d/%d), retrying in %.1f s: %s",
            state.attempt_number,
            self.max_attempts,
            state.next_action.sleep if state.next_action else 0.0,
            exc,
        )

    # ------------------------------------------------------------------ tokens

    def _access_token(self) -> str:
        settings = self.settings
        key = settings.account_key
        now = utcnow()
        with _process_tokens_lock:
            cached = _process_tokens.get(key)
        if cached and cached.access_valid(now, ACCESS_TOKEN_MARGIN):
            return cached.access_token  # type: ignore[return-value]
        stored = self.shared_state.peek_token(key)
        if stored.blocked(now):
            raise self._blocked_error(stored)
        if not stored.access_valid(now, ACCESS_TOKEN_MARGIN):
            with self.shared_state.token_lock(key) as slot:
                # Another worker may have refreshed (or been blocked) while we waited for the lock.
                if slot.token.blocked(utcnow()):
                    raise self._blocked_error(slot.token)
                if not slot.token.access_valid(utcnow(), ACCESS_TOKEN_MARGIN):
                    self._obtain_token(slot)
                stored = slot.token
        mask_secret(stored.access_token)
        with _process_tokens_lock:
            _process_tokens[key] = stored
        return stored.access_token  # type: ignore[return-value]

    def _discard_token(self, token: str) -> None:
        key = self.settings.account_key
        with _process_tokens_lock:
            if (cached := _process_tokens.get(key)) and cached.access_token == token:
                del _process_tokens[key]
        with self.shared_state.token_lock(key) as slot:
            # Only drop it if nobody replaced it yet, so N workers seeing one 401 cause one refresh.
            if slot.token.access_token == token:
                slot.update(access_token=None, access_expires_at=None)

    def _obtain_token(self, slot) -> None:
        """Refresh grant when possible, else password grant; every call counts against the budget."""
        if slot.token.refresh_valid(utcnow(), timedelta(seconds=30)):
            form = {"grant_type": "refresh_token", "refresh_token": slot.token.refresh_token}
            try:
                self._token_request(slot, form)
                return
            except IysAuthError:
                self.log.info("İYS refused the refresh token; falling back to the password grant")
                slot.update(refresh_token=None, refresh_expires_at=None)
        settings = self.settings
        self._token_request(
            slot, {"grant_type": "password", "username": settings.username, "password": settings.password}
        )

    def _token_request(self, slot, form: dict[str, str]) -> None:
        """One token grant, retried a little on transient failures; each attempt counts against the budget."""
        retrying = Retrying(
            stop=stop_after_attempt(TOKEN_ATTEMPTS),
            wait=wait_fixed(TOKEN_RETRY_WAIT_SECONDS),
            retry=retry_if_exception(_is_transient_token_failure),
            before_sleep=self._log_token_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._token_request_once(slot, form)

    def _log_token_retry(self, state: RetryCallState) -> None:
        self.log.warning(
            "İYS token request failed (%s); retrying once more in %d s",
            state.outcome.exception() if state.outcome else None,
            TOKEN_RETRY_WAIT_SECONDS,
        )

    def _token_request_once(self, slot, form: dict[str, str]) -> None:
        settings = self.settings
        used, frees_at = self.shared_state.token_requests_since(settings.ip_budget_key, TOKEN_REQUEST_WINDOW)
        if used >= settings.auth_requests_per_hour:
            raise IysTokenBlockedError(
                f"Not requesting an İYS token: {used} token requests in the last hour already reached the "
                f"configured limit of {settings.auth_requests_per_hour} (auth_requests_per_hour). The next "
                f"one is allowed after {frees_at:%Y-%m-%d %H:%M:%S %Z}. Tokens are cached and shared, so this "
                "means tokens are being revoked or several installations share this IP.",
                blocked_until=frees_at,
            )
        grant = form["grant_type"]
        log_id = self.shared_state.record_token_request(settings.ip_budget_key, settings.account_key, grant)
        self.stats.token_requests += 1
        try:
            response = self._send("POST", TOKEN_ENDPOINT, form=form)
        except requests.RequestException as exc:
            self.shared_state.record_token_outcome(log_id, type(exc).__name__)
            raise IysApiError(f"token request failed: {type(exc).__name__}", endpoint="token") from None
        self.shared_state.record_token_outcome(log_id, str(response.status_code))
        if response.status_code == 200:
            pair = _parse(TokenPair, _decode_body(response, "token"), "token")
            now = utcnow()
            slot.update(
                access_token=pair.access_token,
                access_expires_at=now + timedelta(seconds=pair.expires_in),
                refresh_token=pair.refresh_token,
                refresh_expires_at=(
                    now + timedelta(seconds=pair.refresh_expires_in) if pair.refresh_expires_in else None
                ),
                blocked_until=None,
                block_reason=None,
            )
            return
        error = _api_error(response, "token")
        if error.code == "H084" or (response.status_code == 429 and error.code is None):
            blocked_until = utcnow() + timedelta(seconds=settings.auth_block_seconds)
            slot.update(blocked_until=blocked_until, block_reason=f"H084 at {utcnow():%Y-%m-%d %H:%M:%S %Z}")
            raise self._blocked_error(slot.token)
        if response.status_code in (400, 401, 403):
            raise IysAuthError(
                f"İYS refused the {grant} grant: {error.iys_message}. Check the API username and password in "
                f"connection {self.iys_conn_id!r}.",
                status_code=response.status_code,
                code=error.code,
                endpoint="token",
            )
        raise error

    @staticmethod
    def _blocked_error(token: StoredToken) -> IysTokenBlockedError:
        return IysTokenBlockedError(
            "İYS blocked token requests from this IP (H084, hourly authentication limit). No token call is "
            f"made until {token.blocked_until:%Y-%m-%d %H:%M:%S %Z}: any call during the block restarts "
            "İYS's hour. Wait, do not retry; the next scheduled run continues.",
            blocked_until=token.blocked_until,
        )


# ---------------------------------------------------------------------- response handling


def _decode_body(response: requests.Response, endpoint: str, *, allow_empty: bool = False) -> Any:
    if not response.content or not response.content.strip():
        if allow_empty:
            return None
        raise IysMalformedResponseError(
            "empty body where İYS documents a JSON answer", status_code=response.status_code, endpoint=endpoint
        )
    try:
        return response.json()
    except ValueError:
        raise IysMalformedResponseError(
            f"answer is not JSON (content-type {response.headers.get('Content-Type', '-')!r}); a proxy or "
            "maintenance page may be in front of İYS",
            status_code=response.status_code,
            endpoint=endpoint,
        ) from None


def _api_error(response: requests.Response, endpoint: str) -> IysApiError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        return IysMalformedResponseError(
            f"HTTP {status} with a non-JSON body (content-type {response.headers.get('Content-Type', '-')!r})",
            status_code=status,
            endpoint=endpoint,
        )
    detail: dict[str, Any] = {}
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            detail = errors[0]
        elif "error" in body:  # OAuth-style token errors
            detail = {"code": None, "message": body.get("error_description") or body.get("error")}
        elif "code" in body or "code:" in body:  # İYS sometimes answers with a top-level code
            detail = body
    code = detail.get("code") or detail.get("code:")
    message = str(detail.get("message") or f"HTTP {status}")
    item_errors = []
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        for item in body["errors"]:
            if isinstance(item, dict) and isinstance(item.get("index"), int) and not isinstance(item["index"], bool):
                item_errors.append(
                    ItemError(item["index"], item.get("code") or item.get("code:"), str(item.get("message") or ""))
                )
    error_class = IysApiError
    if code in HOURLY_QUOTA_H_CODES and code != "H084":
        error_class = IysQuotaExceededError
    elif status in (401, 403):
        error_class = IysAuthError
    return error_class(
        message,
        status_code=status,
        code=code,
        location=detail.get("location") if isinstance(detail.get("location"), list) else None,
        index=detail.get("index") if isinstance(detail.get("index"), int) else None,
        endpoint=endpoint,
        item_errors=item_errors,
        retry_after=_retry_after_seconds(response),
    )


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_SECONDS)
    except ValueError:
        return None


@cache
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)


def _parse(model: Any, body: Any, endpoint: str) -> Any:
    try:
        return _adapter(model).validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise IysMalformedResponseError(
            f"answer does not match the documented shape ({first['type']} at "
            f"{'.'.join(str(p) for p in first['loc']) or 'top level'})",
            endpoint=endpoint,
        ) from None


_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSPORT_ERRORS):
        return True
    if isinstance(exc, IysApiError) and exc.endpoint != "token":
        # Token calls are never retried here: each one spends the scarce hourly token budget.
        return exc.retryable
    return False


def _is_transient_token_failure(exc: BaseException) -> bool:
    """A token call that failed in transport or with a 5xx; refusals and H084 are final."""
    return (
        isinstance(exc, IysApiError)
        and not isinstance(exc, IysAuthError)
        and (exc.status_code is None or exc.status_code >= 500)
    )


_backoff = wait_random_exponential(multiplier=0.5, max=30)


def _wait_for_retry(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return retry_after
    return _backoff(state)
