"""Requests and answers as the simulator's app sees them, and the helpers both of its APIs use.

``server.py`` turns HTTP into a :class:`SimRequest` and a :class:`SimResponse` back into HTTP; the İYS
endpoints (``endpoints.py``) and the control API (``control.py``) build their answers with these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import error_item, errors_body, http_status_of

JSON_CONTENT_TYPE = "application/json;charset=UTF-8"


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
    # Work that must run without the app's lock (a call to a brand's slow server): it returns the step
    # that, under the lock again, gives the real answer. ``SimulatorApp.handle`` runs both.
    then_outside_lock: Callable[[], Callable[[], SimResponse]] | None = None


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> SimResponse:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return SimResponse(status, body, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


def error_response(
    *items: dict[str, Any], status: int | None = None, headers: dict[str, str] | None = None
) -> SimResponse:
    response = json_response(status or http_status_of(items[0]["code"]), errors_body(*items), headers)
    response.error_code = items[0]["code"]
    return response


class BadRequest(Exception):
    """Raised inside handlers to answer with an error body."""

    def __init__(self, response: SimResponse) -> None:
        super().__init__(response.status)
        self.response = response


def json_body(request: SimRequest, invalid_shape_code: str, expect: type, empty_is_object: bool = False) -> Any:
    """The decoded JSON body; ``empty_is_object``: an empty body reads as ``{}`` (control API POSTs)."""
    if not request.body.strip():
        if empty_is_object and expect is dict:
            return {}
        raise BadRequest(error_response(error_item(invalid_shape_code)))
    try:
        body = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest(error_response(error_item("H014"))) from None
    if not isinstance(body, expect):
        raise BadRequest(error_response(error_item(invalid_shape_code)))
    return body


def query_value(request: SimRequest, name: str, default: str | None) -> str | None:
    values = request.query.get(name)
    return values[0] if values else default
