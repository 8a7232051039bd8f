"""İYS answers read into models and typed errors, from canned ``requests.Response`` objects."""

from __future__ import annotations

import json

import pytest
import requests

from iys_provider.exceptions import (
    ItemError,
    IysApiError,
    IysAuthError,
    IysMalformedResponseError,
    IysQuotaExceededError,
)
from iys_provider.hooks.responses import api_error, decode_body, parse_body, retry_after_seconds
from iys_provider.models import Brand

HTML = b"<html><body>502 Bad Gateway</body></html>"


def answer(status: int, body: object = None, *, raw: bytes | None = None, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = raw if raw is not None else json.dumps(body).encode()
    response.headers.update({"Content-Type": "application/json", **headers})
    return response


def test_an_iys_error_list_gives_code_message_location_index_and_every_item_error():
    body = {
        "errors": [
            {"code": "H121", "message": "bad recipient", "location": ["recipient"], "index": 3},
            {"code:": "H174", "message": "same status", "index": 7},
            {"code": "H999", "message": "no index"},
            {"code": "H998", "message": "bool index", "index": True},
        ]
    }
    error = api_error(answer(422, body), "submit_batch")
    assert type(error) is IysApiError
    assert (error.status_code, error.code, error.iys_message) == (422, "H121", "bad recipient")
    assert error.location == ["recipient"] and error.index == 3
    assert error.endpoint == "submit_batch"
    assert error.item_errors == (ItemError(3, "H121", "bad recipient"), ItemError(7, "H174", "same status"))
    assert str(error) == (
        "İYS error H121 (HTTP 422) on submit_batch: bad recipient [field: recipient] [batch index: 3]"
    )


@pytest.mark.parametrize(
    ("status", "body", "error_class", "code", "message"),
    [
        (400, {"error": "invalid_grant", "error_description": "Bad credentials"}, IysApiError, None, "Bad credentials"),
        (401, {"error": "invalid_token"}, IysAuthError, None, "invalid_token"),
        (403, {"errors": [{"code": "H104", "message": "no permission"}]}, IysAuthError, "H104", "no permission"),
        (400, {"code:": "H123", "message": "busy"}, IysApiError, "H123", "busy"),
        (429, {"errors": [{"code": "H086", "message": "hourly"}]}, IysQuotaExceededError, "H086", "hourly"),
        (429, {"errors": [{"code": "H084", "message": "blocked"}]}, IysApiError, "H084", "blocked"),
        (503, {"unexpected": True}, IysApiError, None, "HTTP 503"),
        (500, [1, 2], IysApiError, None, "HTTP 500"),
    ],
)
def test_error_bodies_become_typed_errors(status, body, error_class, code, message):
    error = api_error(answer(status, body), "brands")
    assert type(error) is error_class
    assert (error.status_code, error.code, error.iys_message) == (status, code, message)
    assert error.item_errors == ()


def test_a_non_json_error_body_is_a_malformed_response():
    error = api_error(answer(502, raw=HTML, **{"Content-Type": "text/html"}), "brands")
    assert isinstance(error, IysMalformedResponseError)
    assert error.status_code == 502 and error.retryable
    assert "non-JSON body (content-type 'text/html')" in str(error)


def test_the_error_carries_retry_after():
    error = api_error(answer(429, {"errors": [{"code": "H124", "message": "slow down"}]}, **{"Retry-After": "2"}), "x")
    assert error.retry_after == 2.0 and error.retryable


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("", None), ("soon", None), ("1.5", 1.5), ("-3", 0.0), ("3600", 60.0)],
)
def test_retry_after_is_read_in_seconds_and_capped(header, seconds):
    response = answer(429, {}) if header is None else answer(429, {}, **{"Retry-After": header})
    assert retry_after_seconds(response) == seconds


@pytest.mark.parametrize("raw", [b"", b"  \n"])
def test_an_empty_body_is_none_only_where_allowed(raw):
    assert decode_body(answer(200, raw=raw), "changes", allow_empty=True) is None
    with pytest.raises(IysMalformedResponseError, match="empty body where İYS documents a JSON answer"):
        decode_body(answer(200, raw=raw), "brands")


def test_a_non_json_success_body_names_the_content_type():
    with pytest.raises(IysMalformedResponseError, match="answer is not JSON \\(content-type 'text/html'\\)"):
        decode_body(answer(200, raw=HTML, **{"Content-Type": "text/html"}), "brands")
    assert decode_body(answer(200, {"a": 1}), "brands") == {"a": 1}


def test_parse_body_validates_into_the_model_or_names_the_first_mismatch():
    assert parse_body(list[Brand], [{"brandCode": 7, "name": "Brand"}], "brands")[0].brand_code == 7
    with pytest.raises(IysMalformedResponseError, match=r"does not match the documented shape \(.* at 0\.brandCode\)"):
        parse_body(list[Brand], [{"name": "Brand"}], "brands")
