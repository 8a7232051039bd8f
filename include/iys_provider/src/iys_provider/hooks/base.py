"""How the İYS hook talks to İYS: settings, transport, retries and tokens.

:class:`IysBaseHook` owns everything below the API calls: the connection settings, one
keep-alive HTTP session behind the shared rate limiter, the tenacity retries, and the token
manager (process and shared token cache per İYS account; hourly token budget and H084 block per
client IP). The API calls themselves are on :class:`~iys_provider.hooks.iys.IysHook`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

import requests
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
    wait_random_exponential,
)

from iys_provider.exceptions import IysApiError, IysAuthError, IysSuccessRatioGuardError, IysTokenBlockedError
from iys_provider.hooks.responses import api_error, decode_body, parse_body, retry_after_seconds
from iys_provider.hooks.settings import IysConnectionSettings
from iys_provider.hooks.transport import open_session
from iys_provider.limits.rate_control import is_per_second_limit
from iys_provider.limits.shared_state import InProcessSharedState, PostgresSharedState, StoredToken, TokenSlot, utcnow
from iys_provider.limits.success_ratio import GUARDED_ENDPOINTS, TRANSPORT_ERROR_STATUS, RatioReading, guard_verdict
from iys_provider.models import TokenPair

T = TypeVar("T")

TOKEN_ENDPOINT = "/oauth2/token"
#: Refresh this long before the access token expires, so a long request never carries a dead token…
ACCESS_TOKEN_MARGIN = timedelta(minutes=5)
#: …or this share of the token's lifetime when that is shorter: İYS may issue tokens that live less
#: than the margin (observed: 240 s), and each must still serve most of its life, so a token costs at
#: most 8/7 token requests per lifetime (60-s token: refreshed after 52.5 s; 240 s: after 210 s).
ACCESS_TOKEN_MARGIN_SHARE = 1 / 8
TOKEN_REQUEST_WINDOW = timedelta(hours=1)
#: Token calls spend the scarce hourly budget: only a couple of attempts on transient failures.
TOKEN_ATTEMPTS = 2
TOKEN_RETRY_WAIT_SECONDS = 2


@dataclass
class RequestStats:
    """Counters of one hook instance, for progress logs and benchmarks."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    token_requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    #: The shared learned rate this hook last sent at, and how many of its 429s lowered it.
    rate: float | None = None
    rate_decreases: int = 0

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

    def count_rate(self, rate: float, *, lowered: bool = False) -> None:
        with self._lock:
            self.rate = rate
            self.rate_decreases += lowered


# Tokens already read by this process, so a task does not touch Postgres for every request.
_process_tokens: dict[str, StoredToken] = {}
_process_tokens_lock = threading.Lock()


class IysBaseHook(BaseHook):
    """
    Settings, transport, retries and tokens of the İYS hook; the API calls are on ``IysHook``.

    One hook holds one keep-alive ``requests.Session`` and looks its connection up once, on first
    use (never in ``__init__``). The access token, the hourly token budget, the H084 block and
    the request rate are shared by every task and worker through the Postgres connection named
    in the ``shared_state_conn_id`` extra (default ``iys_postgres``), so many parallel mapped
    tasks together stay within İYS's limits: ``rate_limit_per_second`` requests per second and
    ``auth_requests_per_hour`` token requests per hour. The token is kept per İYS account (all
    brands of an account share it); the budget, the block and the rate are kept per client IP
    (``ip_budget_key``: the API host and the ``egress_ip`` extra), shared by every account on it,
    because that is how İYS counts them.

    Retries: 429 (``Retry-After`` honoured, else exponential backoff with jitter), 5xx, H123,
    H192, timeouts and dropped connections are retried up to ``max_attempts`` times within
    ``max_retry_seconds``. A 401 H351 triggers one token refresh and one retry. Business errors
    (H174, H175, H178, H467, validation 422s) and hourly quotas are raised at once as
    :class:`~iys_provider.exceptions.IysApiError`.

    :param iys_conn_id: the ``iys`` connection.
    :param brand_code: overrides the connection's brand code (accounts with several brands).
    :param max_attempts: attempts per request, including the first.
    :param max_retry_seconds: give up retrying after this long.
    """

    conn_name_attr = "iys_conn_id"
    default_conn_name = "iys_default"
    conn_type = "iys"

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

    # ------------------------------------------------------------------ configuration

    @cached_property
    def connection(self):
        return self.get_connection(self.iys_conn_id)

    @cached_property
    def settings(self) -> IysConnectionSettings:
        return IysConnectionSettings.from_connection(self.connection, brand_code=self._brand_code_override)

    @cached_property
    def session(self) -> requests.Session:
        # Proxies, TLS verification and a keep-alive adapter, from the connection (hooks.transport).
        return open_session(self.iys_conn_id, self.settings)

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

    def get_conn(self) -> requests.Session:
        return self.session

    # ------------------------------------------------------------------ transport

    def _retrying(self) -> Retrying:
        """The retries of one logical call: how many, for how long, after which errors, how far apart."""
        return Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_retry_seconds),
            wait=_wait_for_retry,
            retry=retry_if_exception(_is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )

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

        def attempt() -> Any:
            response = self._send_authorised(method, path, data=data, params=params)
            if response.status_code == 404 and not_found_is_empty:
                return None
            if response.status_code in expected or response.status_code == 204:
                return decode_body(response, endpoint, allow_empty=allow_empty or response.status_code == 204)
            raise api_error(response, endpoint)

        return self._with_retries(endpoint, attempt)

    def _with_retries(self, endpoint: str, attempt: Callable[[], T]) -> T:
        """``attempt`` (one request and the reading of its answer) until it succeeds or the retries are spent;
        each try is counted in the success ratio, and refused while the ratio guards ``endpoint``."""
        for retry in self._retrying():
            with retry, self._success_ratio_watch(endpoint):
                return attempt()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _send_authorised(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        params: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        token = self._access_token()
        response = self._send(method, path, data=data, params=params, token=token, stream=stream)
        if response.status_code == 401:
            # Expired or revoked token (H351): refresh once, shared with every other worker.
            response.close()
            self._discard_token(token)
            response = self._send(method, path, data=data, params=params, token=self._access_token(), stream=stream)
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
        stream: bool = False,
    ) -> requests.Response:
        """One request on a slot of the shared schedule; ``stream``: the body is left for the caller to read (a file)."""
        settings = self.settings
        slot = self.shared_state.reserve_request_slot(settings.ip_budget_key, settings.rate_limit_per_second)
        wait = slot.wait()
        if wait > 0:
            time.sleep(wait)  # throttle: our share of İYS's per-second budget
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if stream:
            headers["Accept"] = "*/*"  # İYS's files are CSV and binary, not JSON
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self.session.request(
            method,
            settings.base_url + path,
            data=data if form is None else form,
            params=params,
            headers=headers,
            timeout=settings.timeout,
            stream=stream,
        )
        self.stats.count(response.status_code)
        self._record_response_class(response.status_code)
        if response.status_code == 429 and is_per_second_limit(api_error(response, path).code):
            # İYS counted more than we scheduled (latency bunches arrivals, or something else on
            # this IP uses the budget): the rate every process shares comes down a little, once
            # per window however many processes saw it, and everybody pauses only as long as needed.
            verdict = self.shared_state.record_rate_limited(
                settings.ip_budget_key,
                settings.rate_limit_per_second,
                retry_after_seconds(response),
                sent_at_rate=slot.rate,
            )
            self.stats.count_rate(verdict.rate, lowered=verdict.decreased)
            if verdict.decreased:
                self.log.info(
                    "İYS answered 429 at %.2f requests/s; the shared rate of %s is now %.2f/s",
                    slot.rate,
                    settings.ip_budget_key,
                    verdict.rate,
                )
        else:
            self.stats.count_rate(slot.rate)
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

    # ------------------------------------------------------------------ success ratio

    def _record_response_class(self, status: int) -> None:
        """Count İYS's answer in the success-ratio ledger (batched in memory, flushed every few seconds)."""
        self.shared_state.count_response(self.settings.ip_budget_key, status)

    @contextmanager
    def _success_ratio_watch(self, endpoint: str) -> Iterator[None]:
        """Around one attempt: refuse a call that can fail when the ratio is low; count a request left unanswered."""
        if endpoint in GUARDED_ENDPOINTS:
            settings = self.settings
            reading = self.shared_state.success_ratio(settings.ip_budget_key)
            reason = guard_verdict(
                reading,
                floor=settings.success_ratio_floor,
                min_calls=settings.success_ratio_min_calls,
                endpoint=endpoint,
                budget_key=settings.ip_budget_key,
            )
            if reason:
                raise IysSuccessRatioGuardError(reason, endpoint=endpoint, ratio=reading.ratio)
        try:
            yield
        except _TRANSPORT_ERRORS:
            self._record_response_class(TRANSPORT_ERROR_STATUS)
            raise

    def success_ratio_24h(self) -> RatioReading:
        """İYS's success ratio of this hook's API host over the last 24 hours (see :mod:`iys_provider.limits.success_ratio`)."""
        return self.shared_state.success_ratio(self.settings.ip_budget_key)

    # ------------------------------------------------------------------ tokens

    def _access_token(self) -> str:
        settings = self.settings
        key = settings.account_key
        now = utcnow()
        with _process_tokens_lock:
            cached = _process_tokens.get(key)
        if cached and cached.access_valid(now, ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE):
            return cached.access_token  # type: ignore[return-value]
        stored = self.shared_state.peek_token(key)
        if not stored.access_valid(now, ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE):
            # Fail fast while the IP is blocked, instead of queueing for the account's token lock
            # only to be refused there: any account's token call would restart İYS's hour.
            self._raise_if_blocked(stored.blocked_until)
            with self.shared_state.token_lock(key) as slot:
                # Another worker may have refreshed while we waited for the lock. The IP block is
                # checked again, atomically with the budget, by every token call's reservation.
                if not slot.token.access_valid(utcnow(), ACCESS_TOKEN_MARGIN, ACCESS_TOKEN_MARGIN_SHARE):
                    if slot.token.blocked(utcnow()):
                        raise self._blocked_error(slot.token.blocked_until)
                    self._obtain_token(slot)
                stored = slot.token
        mask_secret(stored.access_token)
        with _process_tokens_lock:
            _process_tokens[key] = stored
        return stored.access_token  # type: ignore[return-value]

    def _raise_if_blocked(self, account_blocked_until: datetime | None) -> None:
        """Raise while İYS blocks token calls from this IP (or, as recorded by earlier versions, the account)."""
        block = self.shared_state.ip_block(self.settings.ip_budget_key)
        if block:
            raise self._blocked_error(block.blocked_until)
        if account_blocked_until and account_blocked_until > utcnow():
            raise self._blocked_error(account_blocked_until)

    def _discard_token(self, token: str) -> None:
        key = self.settings.account_key
        with _process_tokens_lock:
            if (cached := _process_tokens.get(key)) and cached.access_token == token:
                del _process_tokens[key]
        with self.shared_state.token_lock(key) as slot:
            # Only drop it if nobody replaced it yet, so N workers seeing one 401 cause one refresh.
            if slot.token.access_token == token:
                slot.update(access_token=None, access_expires_at=None)

    def _obtain_token(self, slot: TokenSlot) -> None:
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

    def _token_request(self, slot: TokenSlot, form: dict[str, str]) -> None:
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

    def _token_request_once(self, slot: TokenSlot, form: dict[str, str]) -> None:
        settings = self.settings
        grant = form["grant_type"]
        reservation = self.shared_state.reserve_token_request(
            settings.ip_budget_key,
            settings.account_key,
            grant,
            limit=settings.auth_requests_per_hour,
            window=TOKEN_REQUEST_WINDOW,
        )
        if reservation.block:
            raise self._blocked_error(reservation.block.blocked_until)
        if not reservation.granted:
            raise IysTokenBlockedError(
                f"Not requesting an İYS token: {reservation.used} token requests in the last hour from "
                f"{settings.ip_budget_key} already reached the configured limit of "
                f"{settings.auth_requests_per_hour} (auth_requests_per_hour). The next one is allowed after "
                f"{reservation.frees_at:%Y-%m-%d %H:%M:%S %Z}. Tokens are cached and shared, and the budget "
                "is shared by every İYS account leaving through this IP, so this means tokens are being "
                "revoked, or many accounts, or several installations, share this IP.",
                blocked_until=reservation.frees_at,
            )
        log_id = reservation.request_id
        self.stats.token_requests += 1
        asked_at = utcnow()  # İYS starts a token's life no earlier: its expiry is never overestimated
        try:
            response = self._send("POST", TOKEN_ENDPOINT, form=form)
        except requests.RequestException as exc:
            self.shared_state.record_token_outcome(log_id, type(exc).__name__)
            raise IysApiError(f"token request failed: {type(exc).__name__}", endpoint="token") from None
        self.shared_state.record_token_outcome(log_id, str(response.status_code))
        if response.status_code == 200:
            pair = parse_body(TokenPair, decode_body(response, "token"), "token")
            now = asked_at
            slot.update(
                access_token=pair.access_token,
                access_lifetime=timedelta(seconds=pair.expires_in),
                access_expires_at=now + timedelta(seconds=pair.expires_in),
                refresh_token=pair.refresh_token,
                refresh_expires_at=(
                    now + timedelta(seconds=pair.refresh_expires_in) if pair.refresh_expires_in else None
                ),
                blocked_until=None,
                block_reason=None,
            )
            return
        error = api_error(response, "token")
        if error.code == "H084" or (response.status_code == 429 and error.code is None):
            block = self.shared_state.block_ip(
                settings.ip_budget_key,
                settings.auth_block_seconds,
                f"H084 at {utcnow():%Y-%m-%d %H:%M:%S %Z} ({grant} grant)",
            )
            raise self._blocked_error(block.blocked_until)
        if response.status_code in (400, 401, 403):
            raise IysAuthError(
                f"İYS refused the {grant} grant: {error.iys_message}. Check the API username and password in "
                f"connection {self.iys_conn_id!r}.",
                status_code=response.status_code,
                code=error.code,
                endpoint="token",
            )
        raise error

    def _blocked_error(self, blocked_until: datetime) -> IysTokenBlockedError:
        return IysTokenBlockedError(
            f"İYS blocked token requests from this IP ({self.settings.ip_budget_key}; H084, hourly "
            f"authentication limit). No token call is made until {blocked_until:%Y-%m-%d %H:%M:%S %Z}, by any "
            "İYS account on this IP: any call during the block restarts İYS's hour. Do not clear the task: one "
            "with retries left is tried again after the block, else the next scheduled run continues.",
            blocked_until=blocked_until,
        )


# ---------------------------------------------------------------------- retry policy

_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSPORT_ERRORS):
        return True
    if isinstance(exc, IysApiError) and exc.endpoint != "token":
        # Token calls are never retried here: each one spends the scarce hourly token budget.
        return exc.retryable
    return False


def _is_transient_token_failure(exc: BaseException) -> bool:
    """A token call that failed in transport, with a 5xx, or hit the per-second limit (H124/H083).

    Refusals and H084 (the hourly token block, raised as IysTokenBlockedError) are final.
    """
    return (
        isinstance(exc, IysApiError)
        and not isinstance(exc, IysAuthError)
        and (exc.status_code is None or exc.status_code >= 500 or exc.code in PER_SECOND_LIMIT_H_CODES)
    )


#: İYS's per-second limit: a token call that meets it is tried again after a pause (unlike H084).
PER_SECOND_LIMIT_H_CODES = frozenset({"H124", "H083"})

_backoff = wait_random_exponential(multiplier=0.5, max=30)


def _wait_for_retry(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return retry_after
    return _backoff(state)
