"""What the simulator counts (``GET /__sim/counters``): requests by İYS endpoint and their answers.

Control API requests are not counted (a fault injected into one still counts as ``injected_errors``).
"""

from __future__ import annotations

from typing import Any

from .messages import SimResponse

COUNTER_BY_ENDPOINT = {
    "token": "token_requests",
    "single_status": "single_status_calls",
    "multi_status": "multi_status_calls",
    "changes": "changes_calls",
}


def fresh_counters() -> dict[str, Any]:
    return {
        "requests": 0,
        "responses_by_status": {},
        "http_429": 0,
        "h124": 0,
        "token_requests": 0,
        "token_requests_by_username": {},  # every call of the token endpoint, by the account it names
        "tokens_issued": 0,
        "h084": 0,
        "recipients_created": 0,
        "writes": 0,
        "single_status_calls": 0,
        "multi_status_calls": 0,
        "changes_calls": 0,
        "batch_submits": 0,
        "dropped_connections": 0,
        "injected_errors": 0,  # answers replaced by a fault: fail_next rules, random 5xx, proxy pages
        "latency_spikes": 0,  # requests held an extra latency_spike_ms
        "by_endpoint": {},
        "by_endpoint_status": {},
    }


def count_request(counters: dict[str, Any], endpoint: str) -> None:
    counters["requests"] += 1
    counters["by_endpoint"][endpoint] = counters["by_endpoint"].get(endpoint, 0) + 1
    if endpoint in COUNTER_BY_ENDPOINT:
        counters[COUNTER_BY_ENDPOINT[endpoint]] += 1


def count_response(counters: dict[str, Any], endpoint: str, response: SimResponse) -> None:
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


def count_token_caller(counters: dict[str, Any], username: str) -> None:
    by_user = counters["token_requests_by_username"]
    by_user[username] = by_user.get(username, 0) + 1
