"""İYS Push (İzin Hareketi İletimi), İYS's side: receiver links with İYS's checks, and delivery.

A brand registers up to two https receivers per consent type (``POST …/push/registration``); İYS
checks each one before storing it: a POST without credentials must be refused with 401 (Basic auth
enforced), then the fixed test payload POSTed with the credentials must be answered 2xx within
``push_timeout_seconds``. From then on every movement appended to the brand's IYS stream with an
``IYS_*`` source and that type is queued for each of the type's links and POSTed by a delivery thread
as ``{"list": [item, …]}``, item = the change-feed body plus ``iysCode`` and ``brandCode``.

İYS documents neither its retries nor ordering nor list size; the simulator delivers at least once:
a list not answered 2xx (4xx, 5xx, timeout, no connection) is sent again, whole, after
``push_retry_seconds`` doubling up to ``push_retry_max_seconds``, until it is answered 2xx or its
link is removed. Movements of one link are sent in queue order, one list at a time, unless the
fault options say otherwise (``push_duplicate_rate``, ``push_reorder_window``, ``push_batch_size``,
``push_paused``, see faults.py).

:class:`PushEndpoints` is mixed into :class:`~iys_simulator.app.SimulatorApp` (the three İYS endpoints
and the push part of the control API); :class:`PushDelivery` holds the links, their queues, the
delivery thread and its log behind a lock of its own, so the thread never waits for the app's lock
and the app's lock is never held across a call to a receiver.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from .clock import format_turkey_time
from .errors import PUSH_ERROR_CATALOGUE, PUSH_UNREGISTER_FAILED_MESSAGE, error_item
from .messages import BadRequest, SimRequest, SimResponse, error_response, json_response
from .store import STREAM_IYS, ConsentEvent
from .validation import CONSENT_TYPES

MAX_LINKS_PER_TYPE = 2
CREATED_MESSAGE = "Bağlantı oluşturuldu"
REMOVED_MESSAGE = "Bağlantı Kaldırıldı"
LINK_STATUS = "Bağlantı Oluşturuldu"
#: ``GET /__sim/push/deliveries`` keeps this many of the latest delivery attempts.
DELIVERY_LOG_SIZE = 100_000
#: The same for every customer (İYS's documentation): receivers must recognise and drop it.
TEST_PAYLOAD: dict[str, Any] = {
    "list": [
        {
            "iysCode": 121212,
            "brandCode": 121212,
            "consentDate": "2015-05-01 15:00:00",
            "creationDate": "2015-05-01 15:00:00",
            "source": "IYS_MOBIL",
            "recipient": "pushtest@iys.org.tr",
            "recipientType": "BIREYSEL",
            "status": "ONAY",
            "type": "EPOSTA",
            "transactionId": "e52ee30512adfcd2a41fb3b4682f5bd61eee5b1c92bda665fc0b7e56644d429d",
        }
    ]
}
JSON_HEADERS = {"Content-Type": "application/json;charset=UTF-8"}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def push_error(code: str, location: list[Any], index: int | None = None, removing: bool = False) -> dict[str, Any]:
    message = PUSH_UNREGISTER_FAILED_MESSAGE if removing and code == "H530" else PUSH_ERROR_CATALOGUE[code][1]
    item: dict[str, Any] = {"code": code, "message": message, "location": location}
    if index is not None:
        item["index"] = index
    return item


def connection_error(item: Any, location: list[Any], index: int | None = None) -> dict[str, Any] | None:
    """The first of İYS's field checks a connection fails (url, type, credentials), or None."""
    if not isinstance(item, dict):
        return push_error("H531", [*location, "url"], index)
    url = item.get("url")
    if not isinstance(url, str) or not url.lower().startswith("https://") or len(url) <= len("https://"):
        return push_error("H531", [*location, "url"], index)
    consent_type = item.get("type")
    if consent_type in (None, ""):
        return push_error("H111", [*location, "type"], index)
    if consent_type not in CONSENT_TYPES:
        return push_error("H117", [*location, "type"], index)
    for name in ("username", "password"):
        if not isinstance(item.get(name), str) or not item[name]:
            return push_error("H093", [*location, name], index)
    return None


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # İYS reaches receivers directly: no proxy or CA bundle from the environment
    return session


def check_link(url: str, username: str, password: str, *, timeout: float, verify: str | bool) -> str | None:
    """İYS's check of a receiver before it stores a link: None when it passes, else the 422 code.

    H191 when the receiver does not answer within ``timeout``; H530 when a POST without credentials
    is not refused with 401, or the test payload with them is not answered 2xx, or there is no
    (TLS) connection at all."""
    body = encode(TEST_PAYLOAD)
    with _session() as session:
        try:
            started = time.monotonic()
            probe = session.post(
                url, data=body, headers=JSON_HEADERS, timeout=timeout, verify=verify, allow_redirects=False
            )
            if time.monotonic() - started > timeout:
                return "H191"
            if probe.status_code != 401:
                return "H530"
            started = time.monotonic()
            answer = session.post(
                url,
                data=body,
                headers=JSON_HEADERS,
                auth=(username, password),
                timeout=timeout,
                verify=verify,
                allow_redirects=False,
            )
            # requests' timeout bounds each socket wait, not the whole answer: a receiver that
            # trickles its answer past the limit has timed out all the same.
            if time.monotonic() - started > timeout:
                return "H191"
        except requests.Timeout:
            return "H191"
        except requests.RequestException:
            return "H530"
    return None if 200 <= answer.status_code < 300 else "H530"


@dataclass
class DeliverySettings:
    timeout: float
    retry_seconds: float
    retry_max_seconds: float
    verify: str | bool
    paused: bool
    batch_size: int
    reorder_window: int
    duplicate_rate: float


@dataclass
class PendingList:
    """A list sent and not yet answered 2xx: it is sent again, unchanged, when ``due`` (monotonic)."""

    items: list[dict[str, Any]]
    attempt: int
    due: float


@dataclass(eq=False)
class PushLink:
    iys_code: int
    brand_code: int
    consent_type: str
    url: str
    username: str
    password: str
    register_epoch: float  # simulated clock
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    shuffled: deque[dict[str, Any]] = field(default_factory=deque)  # taken by the reorder window, sent first
    retry: PendingList | None = None
    busy: bool = False

    def queued(self) -> int:
        return len(self.queue) + len(self.shuffled) + (len(self.retry.items) if self.retry else 0)

    def status_body(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "type": self.consent_type,
            "status": LINK_STATUS,
            "registerTime": format_turkey_time(self.register_epoch),
        }


@dataclass
class DeliveryJob:
    link: PushLink
    items: list[dict[str, Any]]
    attempt: int
    url: str
    auth: tuple[str, str]


class PushDelivery:
    """Links, their queues and the delivery thread (started with the first link, stopped by :meth:`stop`)."""

    def __init__(self, settings: Callable[[], DeliverySettings], seed: int | None) -> None:
        self._settings = settings
        self._random = random.Random(seed)
        self._changed = threading.Condition()
        self._links: list[PushLink] = []
        self._next_link = 0  # round robin over links, so one busy link does not starve the others
        self._in_flight = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=DELIVERY_LOG_SIZE)
        self._thread: threading.Thread | None = None
        self._stopped = False

    # ------------------------------------------------------------------ links
    def links_of(self, brand_code: int) -> list[PushLink]:
        with self._changed:
            return [link for link in self._links if link.brand_code == brand_code]

    def overflowing_index(self, brand_code: int, connections: list[dict[str, Any]]) -> int | None:
        """The index of the first connection that would be a third active link of its type, or None."""
        with self._changed:
            urls: dict[str, set[str]] = {}
            for link in self._links:
                if link.brand_code == brand_code:
                    urls.setdefault(link.consent_type, set()).add(link.url)
            for index, connection in enumerate(connections):
                of_type = urls.setdefault(connection["type"], set())
                of_type.add(connection["url"])
                if len(of_type) > MAX_LINKS_PER_TYPE:
                    return index
        return None

    def add(self, iys_code: int, brand_code: int, connections: list[dict[str, Any]], now_epoch: float) -> None:
        """Store links; a url already linked for the type keeps its queue and takes the new credentials."""
        with self._changed:
            for connection in connections:
                link = self._find(brand_code, connection["type"], connection["url"])
                if link is None:
                    link = PushLink(iys_code, brand_code, connection["type"], connection["url"], "", "", now_epoch)
                    self._links.append(link)
                link.username, link.password = connection["username"], connection["password"]
                link.register_epoch = now_epoch
            self._start()
            self._changed.notify_all()

    def remove(self, brand_code: int, connection: dict[str, Any]) -> bool:
        """Remove a link named with its credentials, dropping what it still had to deliver."""
        with self._changed:
            link = self._find(brand_code, connection["type"], connection["url"])
            if link is None or (link.username, link.password) != (connection["username"], connection["password"]):
                return False
            self._links.remove(link)
            self._changed.notify_all()
            return True

    def _find(self, brand_code: int, consent_type: str, url: str) -> PushLink | None:
        return next(
            (
                link
                for link in self._links
                if (link.brand_code, link.consent_type, link.url) == (brand_code, consent_type, url)
            ),
            None,
        )

    # ------------------------------------------------------------------ queueing
    def enqueue(self, event: ConsentEvent, iys_code: int) -> None:
        """Queue a movement for every link of its brand and type (only IYS_* movements of the IYS stream)."""
        source = event.consent.get("source")
        if event.stream != STREAM_IYS or not isinstance(source, str) or not source.startswith("IYS_"):
            return
        with self._changed:
            targets = [
                link
                for link in self._links
                if link.brand_code == event.brand_code and link.consent_type == event.consent.get("type")
            ]
            for link in targets:
                link.queue.append({"iysCode": iys_code, "brandCode": event.brand_code, **event.pull_body()})
            if targets:
                self._changed.notify_all()

    def wake(self) -> None:
        """Settings changed (e.g. ``push_paused`` cleared): let the thread look again."""
        with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ observation
    def queued(self) -> int:
        with self._changed:
            return self._queued()

    def _queued(self) -> int:
        return sum(link.queued() for link in self._links)

    def wait_idle(self, timeout: float) -> dict[str, Any]:
        """Wait until nothing is queued and nothing is in flight, at most ``timeout`` seconds."""
        with self._changed:
            idle = self._changed.wait_for(lambda: self._in_flight == 0 and self._queued() == 0, timeout)
            return {"idle": bool(idle), "queued": self._queued()}

    def registrations(self) -> list[dict[str, Any]]:
        with self._changed:
            return [
                {
                    "iysCode": link.iys_code,
                    "brandCode": link.brand_code,
                    **link.status_body(),
                    "username": link.username,
                    "queued": link.queued(),
                }
                for link in self._links
            ]

    def deliveries(self) -> list[dict[str, Any]]:
        with self._changed:
            return [dict(entry) for entry in self._log]

    # ------------------------------------------------------------------ the delivery thread
    def _start(self) -> None:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="iys-simulator-push", daemon=True)
            self._thread.start()

    def stop(self, join_timeout: float | None = None) -> None:
        """Stop delivering; a list in flight is finished first (``join_timeout``: wait that long for it)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and join_timeout is not None and thread is not threading.current_thread():
            thread.join(join_timeout)

    def _run(self) -> None:
        with _session() as session:
            while True:
                with self._changed:
                    job = None
                    while not self._stopped:
                        settings = self._settings()
                        job = self._take_job(settings)
                        if job is not None:
                            break
                        self._changed.wait(self._seconds_to_next_retry(settings))
                    if job is None:
                        return
                    self._in_flight += 1
                self._deliver(session, job, settings)

    def _take_job(self, settings: DeliverySettings) -> DeliveryJob | None:
        if settings.paused or not self._links:
            return None
        now = time.monotonic()
        count = len(self._links)
        for step in range(count):
            link = self._links[(self._next_link + step) % count]
            if link.busy:
                continue
            if link.retry is not None:
                if link.retry.due > now:
                    continue  # newer movements of the link wait behind the list being retried
                items, attempt = link.retry.items, link.retry.attempt + 1
            else:
                if not link.shuffled and len(link.queue) > 1 and settings.reorder_window > 1:
                    window = [link.queue.popleft() for _ in range(min(settings.reorder_window, len(link.queue)))]
                    self._random.shuffle(window)
                    link.shuffled.extend(window)
                source = link.shuffled or link.queue
                if not source:
                    continue
                items = [source.popleft() for _ in range(min(settings.batch_size, len(source)))]
                attempt = 1
                link.retry = PendingList(items, 0, now)  # counted as queued until answered 2xx
            link.busy = True
            self._next_link = (self._next_link + step + 1) % count
            return DeliveryJob(link, items, attempt, link.url, (link.username, link.password))
        return None

    def _seconds_to_next_retry(self, settings: DeliverySettings) -> float | None:
        if settings.paused:
            return None
        dues = [link.retry.due for link in self._links if link.retry is not None and not link.busy]
        return max(min(dues) - time.monotonic(), 0.0) if dues else None

    def _deliver(self, session: requests.Session, job: DeliveryJob, settings: DeliverySettings) -> None:
        body = encode({"list": job.items})
        entry = self._post(session, job, body, settings, duplicate=False)
        delivered = entry["status"] is not None and 200 <= entry["status"] < 300
        with self._changed:
            self._log.append(entry)
            link = job.link
            link.busy = False
            if link in self._links:
                if delivered:
                    link.retry = None
                else:
                    backoff = min(settings.retry_seconds * 2 ** (job.attempt - 1), settings.retry_max_seconds)
                    link.retry = PendingList(job.items, job.attempt, time.monotonic() + backoff)
            duplicate = delivered and settings.duplicate_rate > 0 and self._random.random() < settings.duplicate_rate
            if not duplicate:
                self._in_flight -= 1
                self._changed.notify_all()
                return
        # Fault: İYS sends a list it already delivered once more (best effort: not retried).
        entry = self._post(session, job, body, settings, duplicate=True)
        with self._changed:
            self._log.append(entry)
            self._in_flight -= 1
            self._changed.notify_all()

    def _post(
        self, session: requests.Session, job: DeliveryJob, body: bytes, settings: DeliverySettings, *, duplicate: bool
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "brandCode": job.link.brand_code,
            "type": job.link.consent_type,
            "url": job.url,
            "transactionIds": [item.get("transactionId") for item in job.items],
            "attempt": job.attempt,
            "duplicate": duplicate,
            "status": None,
            "error": None,
            "sent_at": int(time.time() * 1000),
        }
        try:
            response = session.post(
                job.url,
                data=body,
                headers=JSON_HEADERS,
                auth=job.auth,
                timeout=settings.timeout,
                verify=settings.verify,
                allow_redirects=False,
            )
            entry["status"] = response.status_code
        except requests.Timeout:
            entry["error"] = "timeout"
        except requests.RequestException as problem:
            entry["error"] = type(problem).__name__
        entry["answered_at"] = int(time.time() * 1000)
        return entry


class PushEndpoints:
    """``POST|GET …/push/registration``, ``POST …/push/unregistration`` and the ``/__sim/push/…`` routes.

    The İYS endpoints run under the app's lock like every other; the link check returns its calls to
    the receiver as ``then_outside_lock`` work, so ``SimulatorApp.handle`` makes them without the lock."""

    def _push_settings(self) -> DeliverySettings:
        config, faults = self.config, self.faults.settings
        return DeliverySettings(
            timeout=float(config.push_timeout_seconds),
            retry_seconds=float(config.push_retry_seconds),
            retry_max_seconds=float(config.push_retry_max_seconds),
            verify=config.push_ca_file or True,
            paused=bool(faults.push_paused),
            batch_size=int(faults.push_batch_size),
            reorder_window=int(faults.push_reorder_window),
            duplicate_rate=float(faults.push_duplicate_rate),
        )

    def _new_push_delivery(self, seed: int | None) -> None:
        previous = getattr(self, "push", None)
        if previous is not None:
            previous.stop()  # its thread ends after any list in flight; its links and queues are gone
        self.push = PushDelivery(self._push_settings, None if seed is None else seed + 2)
        self.store.on_event = self._queue_for_push

    def _queue_for_push(self, event: ConsentEvent) -> None:
        account = next((a for a in self.config.accounts() if event.brand_code in a.brand_codes), None)
        if account is not None:
            self.push.enqueue(event, account.iys_code)

    # ------------------------------------------------------------------ İYS endpoints
    def _ep_push_registration(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        connections = _json_object(request).get("connection")
        if not isinstance(connections, list) or not connections:
            raise BadRequest(error_response(error_item("H014")))
        errors = [
            error
            for index, item in enumerate(connections)
            if (error := connection_error(item, ["connection", index], index)) is not None
        ]
        if errors:
            return error_response(*errors, status=422)
        iys_code, brand_code = int(params["iys"]), int(params["brand"])
        overflowing = self.push.overflowing_index(brand_code, connections)
        if overflowing is not None:
            return error_response(push_error("H530", ["connection", overflowing, "type"], overflowing), status=422)
        settings = self._push_settings()

        def check_receivers() -> Callable[[], SimResponse]:
            for index, connection in enumerate(connections):
                code = check_link(
                    connection["url"],
                    connection["username"],
                    connection["password"],
                    timeout=settings.timeout,
                    verify=settings.verify,
                )
                if code is not None:
                    failed = error_response(push_error(code, ["connection", index, "url"], index), status=422)
                    return lambda: failed
            return store_links

        def store_links() -> SimResponse:
            # Checked again: another registration may have taken the slot while the receivers answered.
            overflowing = self.push.overflowing_index(brand_code, connections)
            if overflowing is not None:
                return error_response(push_error("H530", ["connection", overflowing, "type"], overflowing), status=422)
            self.push.add(iys_code, brand_code, connections, self.clock.epoch())
            return json_response(200, {"message": CREATED_MESSAGE})

        return SimResponse(then_outside_lock=check_receivers)

    def _ep_push_registration_list(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        return json_response(200, [link.status_body() for link in self.push.links_of(int(params["brand"]))])

    def _ep_push_unregistration(self, request: SimRequest, params: dict[str, str]) -> SimResponse:
        body = _json_object(request)
        error = connection_error(body, [])
        if error is not None:
            return error_response(error, status=422)
        if not self.push.remove(int(params["brand"]), body):
            return error_response(push_error("H530", ["url"], removing=True), status=422)
        return json_response(200, {"message": REMOVED_MESSAGE})

    # ------------------------------------------------------------------ Python-level control API
    def push_registrations(self) -> list[dict[str, Any]]:
        """Every active link (all brands), with its username and how many movements it has queued."""
        return self.push.registrations()

    def push_deliveries(self) -> list[dict[str, Any]]:
        """Delivery attempts, oldest first: transactionIds, url, status or error, attempt, times, duplicate."""
        return self.push.deliveries()

    def push_wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        """Block (without the app's lock) until nothing is queued or in flight; ``{"idle", "queued"}``."""
        return self.push.wait_idle(float(timeout))

    def close(self) -> None:
        """Stop the delivery thread (the server's stop)."""
        self.push.stop(join_timeout=float(self.config.push_timeout_seconds) + 1)

    def _ctl_push_registrations(self, payload: dict, request: SimRequest) -> dict:
        return {"registrations": self.push_registrations()}

    def _ctl_push_deliveries(self, payload: dict, request: SimRequest) -> dict:
        return {"deliveries": self.push_deliveries()}

    def _ctl_push_wait_idle(self, payload: dict, request: SimRequest) -> dict:
        unknown = set(payload) - {"timeout"}
        if unknown:
            raise ValueError(f"unknown wait_idle option(s): {sorted(unknown)}")
        return self.push_wait_idle(float(payload.get("timeout", 10.0)))


def _json_object(request: SimRequest) -> dict[str, Any]:
    """The body as a JSON object; anything else (no JSON, or not an object) is 400 H014."""
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise BadRequest(error_response(error_item("H014")))
    return body


PUSH_CONTROL_ROUTES: dict[tuple[str, str], Callable[[Any, dict, SimRequest], dict]] = {
    ("GET", "push/registrations"): PushEndpoints._ctl_push_registrations,
    ("GET", "push/deliveries"): PushEndpoints._ctl_push_deliveries,
}
#: Control routes that wait, so they run without the app's lock (other clients keep being served).
PUSH_CONTROL_ROUTES_OUTSIDE_LOCK: dict[tuple[str, str], Callable[[Any, dict, SimRequest], dict]] = {
    ("POST", "push/wait_idle"): PushEndpoints._ctl_push_wait_idle,
}
