"""Reading İYS's answers: JSON bodies into models, error bodies into typed exceptions."""

from __future__ import annotations

from functools import cache
from typing import Any

import requests
from pydantic import TypeAdapter, ValidationError

from iys_provider.exceptions import (
    HOURLY_QUOTA_H_CODES,
    ItemError,
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
)

RETRY_AFTER_CAP_SECONDS = 60.0


def decode_body(response: requests.Response, endpoint: str, *, allow_empty: bool = False) -> Any:
    """The JSON body of a successful answer; ``None`` for an empty one when ``allow_empty``."""
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


def api_error(response: requests.Response, endpoint: str) -> IysApiError:
    """The typed error of a failed answer, with İYS's H-code, message, location and item errors."""
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
        retry_after=retry_after_seconds(response),
    )


def retry_after_seconds(response: requests.Response) -> float | None:
    """İYS's ``Retry-After`` in seconds, capped at :data:`RETRY_AFTER_CAP_SECONDS`; ``None`` if absent or unreadable."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP_SECONDS)
    except ValueError:
        return None


def parse_body(model: Any, body: Any, endpoint: str) -> Any:
    """``body`` validated into ``model``; a mismatch is an :class:`IysMalformedResponseError`."""
    try:
        return _adapter(model).validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise IysMalformedResponseError(
            f"answer does not match the documented shape ({first['type']} at "
            f"{'.'.join(str(p) for p in first['loc']) or 'top level'})",
            endpoint=endpoint,
        ) from None


@cache
def _adapter(model: Any) -> TypeAdapter:
    return TypeAdapter(model)
