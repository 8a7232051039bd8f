"""The simulator's control API: ``/__sim/...`` over HTTP, and the same operations as Python methods.

Tests, the demo and compose use it to seed consents and synthetic populations, play citizens' changes,
move the simulated clock, inject faults and read counters. It needs no token and is exempt from rate
limits, counters and (unless the ``apply_to_control`` fault option is on) faults. :class:`ControlApi`
is mixed into :class:`~iys_simulator.app.SimulatorApp`, which owns the state and the lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .clock import format_turkey_time, parse_turkey_time
from .counters import fresh_counters
from .faults import FaultSettings
from .messages import BadRequest, SimRequest, SimResponse, json_body, json_response, query_value
from .push import PUSH_CONTROL_ROUTES, PUSH_CONTROL_ROUTES_OUTSIDE_LOCK
from .store import STREAM_HS, STREAM_IYS, StoredConsent, stream_of
from .synthetic import SyntheticPopulation
from .validation import CONSENT_TYPES, normalise_recipient

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


class ControlApi:
    """``/__sim/<action>`` routes (``CONTROL_ROUTES``) and the Python methods they call."""

    def _handle_control_with_optional_faults(self, request: SimRequest) -> SimResponse:
        waiting = PUSH_CONTROL_ROUTES_OUTSIDE_LOCK.get((request.method, request.path[len(CONTROL_PREFIX) :].strip("/")))
        if waiting is not None:
            # Waits for the push delivery thread, which needs no app lock; neither should this.
            try:
                payload = json_body(request, invalid_shape_code="H014", expect=dict, empty_is_object=True)
                return json_response(200, waiting(self, payload, request))
            except BadRequest as rejection:
                return rejection.response
            except (ValueError, TypeError) as problem:
                return json_response(400, {"error": f"{type(problem).__name__}: {problem}"})
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
        action = request.path[len(CONTROL_PREFIX) :].strip("/")
        handler = CONTROL_ROUTES.get((request.method, action))
        if handler is None:
            return json_response(404, {"error": f"unknown control endpoint {request.method} {request.path}"})
        payload = (
            json_body(request, invalid_shape_code="H014", expect=dict, empty_is_object=True)
            if request.method == "POST"
            else {}
        )
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
        recipient = query_value(request, "recipient", None)
        consent_type = query_value(request, "type", None)
        if not recipient or not consent_type:
            raise ValueError("recipient and type query parameters are required")
        brand = query_value(request, "brandCode", None)
        status = self.truth(
            recipient,
            consent_type,
            recipient_type=query_value(request, "recipientType", "BIREYSEL"),
            brand_code=int(brand) if brand else None,
        )
        return {"status": status}

    def _ctl_counters(self, payload: dict, request: SimRequest) -> dict:
        return json.loads(json.dumps(self.counters))

    def _ctl_counters_reset(self, payload: dict, request: SimRequest) -> dict:
        self.counters = fresh_counters()
        return {"ok": True}

    def _ctl_requests(self, payload: dict, request: SimRequest) -> dict:
        return {"requests": self.requests()}

    def _ctl_requests_reset(self, payload: dict, request: SimRequest) -> dict:
        with self._lock:
            self.request_log.clear()
        return {"ok": True}

    def _ctl_daily_file(self, payload: dict, request: SimRequest) -> dict:
        from datetime import date

        brand = query_value(request, "brandCode", None)
        day = query_value(request, "reportDate", None)
        if not day:
            raise ValueError("reportDate query parameter is required")
        with self._lock:
            content = self.daily_file(int(brand) if brand else self.config.brand_codes[0], date.fromisoformat(day))
        return {"content": content.decode("utf-8")}

    def requests(self) -> list[dict[str, Any]]:
        """The latest İYS requests (method, path, endpoint, status), oldest first; control calls are not logged."""
        with self._lock:
            return [dict(entry) for entry in self.request_log]

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
            return {
                "transactionId": record.transaction_id,
                "creationDate": record.creation_date,
                "cursor": event.cursor,
            }

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
                injected.append(
                    {"transactionId": transaction_id, "creationDate": creation_date, "cursor": event.cursor}
                )
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
            self.push.wake()  # e.g. push_paused cleared
            return self.faults.settings.to_json()

    def snapshot_counters(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self.counters))

    def reset_counters(self) -> None:
        with self._lock:
            self.counters = fresh_counters()


CONTROL_ROUTES: dict[tuple[str, str], Callable[[ControlApi, dict, SimRequest], dict]] = {
    ("POST", "reset"): ControlApi._ctl_reset,
    ("POST", "seed"): ControlApi._ctl_seed,
    ("POST", "citizen_change"): ControlApi._ctl_citizen_change,
    ("POST", "inject_events"): ControlApi._ctl_inject_events,
    ("POST", "seed_synthetic"): ControlApi._ctl_seed_synthetic,
    ("GET", "truth"): ControlApi._ctl_truth,
    ("GET", "counters"): ControlApi._ctl_counters,
    ("POST", "counters/reset"): ControlApi._ctl_counters_reset,
    ("GET", "state"): ControlApi._ctl_state,
    ("GET", "requests"): ControlApi._ctl_requests,
    ("POST", "requests/reset"): ControlApi._ctl_requests_reset,
    ("GET", "daily_file"): ControlApi._ctl_daily_file,
    ("GET", "events"): ControlApi._ctl_events,
    ("POST", "clock"): ControlApi._ctl_clock,
    ("GET", "clock"): ControlApi._ctl_clock_get,
    ("POST", "revoke_tokens"): ControlApi._ctl_revoke_tokens,
    ("POST", "config"): ControlApi._ctl_config,
    ("GET", "config"): ControlApi._ctl_config_get,
    ("POST", "faults"): ControlApi._ctl_faults,
    ("GET", "faults"): ControlApi._ctl_faults_get,
    **PUSH_CONTROL_ROUTES,
}
