"""The ``iys`` connection parsed into IysConnectionSettings, from Connection objects built in-process."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from iys_provider.exceptions import IysError
from iys_provider.hooks.settings import DEFAULT_BASE_URL, IysConnectionSettings

CODES = {"iys_code": 700001, "brand_code": 700002}
PASSWORD = "s3cret-iys-password"


def connection(extra: dict | None = None, **fields) -> Connection:
    attrs = {"conn_type": "iys", "login": "iys-user", "password": PASSWORD, **fields}
    return Connection(conn_id="iys_test", extra=json.dumps(CODES if extra is None else extra), **attrs)


def settings(extra: dict | None = None, **fields) -> IysConnectionSettings:
    return IysConnectionSettings.from_connection(connection(extra, **fields))


def test_defaults_apply_when_only_the_codes_and_credentials_are_set():
    assert settings().model_dump() == {
        "base_url": DEFAULT_BASE_URL,
        "username": "iys-user",
        "password": PASSWORD,
        "iys_code": 700001,
        "brand_code": 700002,
        "rate_limit_per_second": 8.0,
        "auth_requests_per_hour": 10,
        "auth_block_seconds": 3600,
        "batch_result_delay_seconds": 300,
        "timeout": 30.0,
        "success_ratio_floor": 0.9,
        "success_ratio_min_calls": 1000,
        "shared_state_conn_id": "iys_postgres",
        "egress_ip": "",
        "verify_ssl": True,
        "proxies": None,
        "push_username": None,
        "push_password": None,
        "push_credentials": None,
    }


#: Each extra as the connection form stores it (text), and the typed value the hook uses.
EVERY_EXTRA = {
    "iys_code": ("11", 11),
    "brand_code": ("12", 12),
    "rate_limit_per_second": ("2.5", 2.5),
    "auth_requests_per_hour": ("4", 4),
    "auth_block_seconds": ("60", 60),
    "batch_result_delay_seconds": ("0", 0),
    "timeout": ("7", 7.0),
    "success_ratio_floor": ("0.8", 0.8),
    "success_ratio_min_calls": ("50", 50),
    "shared_state_conn_id": ("other_pg", "other_pg"),
    "egress_ip": ("203.0.113.7", "203.0.113.7"),
    "verify_ssl": ("false", False),
    "proxies": ('{"https": "http://proxy:3128"}', {"https": "http://proxy:3128"}),
}


def test_every_extra_is_read_and_typed_even_when_the_form_stored_text():
    parsed = settings({name: text for name, (text, _) in EVERY_EXTRA.items()} | {"unrelated": "ignored"})
    # repr() tells 7 from 7.0 and False from 0: the types are checked too.
    assert {name: repr(getattr(parsed, name)) for name in EVERY_EXTRA} == {
        name: repr(typed) for name, (_, typed) in EVERY_EXTRA.items()
    }


@pytest.mark.parametrize("blank", [None, ""])
def test_a_blank_extra_takes_the_default_but_a_blank_shared_state_means_none(blank):
    names = ("rate_limit_per_second", "auth_requests_per_hour", "auth_block_seconds", "timeout", "verify_ssl")
    parsed = settings({**CODES, **dict.fromkeys(names, blank), "shared_state_conn_id": blank})
    assert parsed == settings().model_copy(update={"shared_state_conn_id": None})


@pytest.mark.parametrize("value", [False, "false", "FALSE", 0, "0", "no"])
def test_an_explicit_no_turns_tls_verification_off(value):
    assert settings({**CODES, "verify_ssl": value}).verify_ssl is False


@pytest.mark.parametrize("value", [True, "true", "1", "off", "", None])
def test_anything_else_keeps_tls_verification_on(value):
    assert settings({**CODES, "verify_ssl": value}).verify_ssl is True


@pytest.mark.parametrize(
    ("fields", "base_url"),
    [
        ({"host": "https://iys.example/"}, "https://iys.example"),
        ({"host": "iys.example"}, "https://iys.example"),
        ({"host": "iys.example", "schema": "http", "port": 8080}, "http://iys.example:8080"),
        ({"host": "http://127.0.0.1:9000", "port": 8080}, "http://127.0.0.1:9000"),
    ],
)
def test_base_url_is_built_from_host_schema_and_port(fields, base_url):
    assert settings(**fields).base_url == base_url


def test_a_brand_code_override_replaces_the_extra():
    parsed = IysConnectionSettings.from_connection(connection(), brand_code=42)
    assert parsed.brand_code == 42
    assert IysConnectionSettings.from_connection(connection(), brand_code=None).brand_code == 700002


@pytest.mark.parametrize(
    ("extra", "missing"),
    [({}, "iys_code, brand_code"), ({"iys_code": 1}, "brand_code"), ({"iys_code": "", "brand_code": 2}, "iys_code")],
)
def test_missing_codes_name_the_connection_and_the_extras(extra, missing):
    with pytest.raises(IysError, match=f"^Connection 'iys_test' lacks {missing}: set the İYS code"):
        settings(extra)


@pytest.mark.parametrize("fields", [{"login": None}, {"password": None}, {"login": ""}])
def test_missing_credentials_name_the_connection(fields):
    with pytest.raises(IysError, match="Connection 'iys_test' needs the İYS API username \\(login\\) and password"):
        settings(**fields)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("iys_code", "abc"),
        ("brand_code", "7x"),
        ("rate_limit_per_second", "fast"),
        ("auth_requests_per_hour", "ten"),
        ("auth_block_seconds", "1h"),
        ("batch_result_delay_seconds", "5m"),
        ("timeout", "30s"),
        ("shared_state_conn_id", 5),
    ],
)
def test_a_bad_extra_value_is_a_clear_error(name, value):
    with pytest.raises(IysError, match=f"^Connection 'iys_test' has an invalid extra value: {name}={value!r}: "):
        settings({**CODES, name: value})


def test_the_password_stays_out_of_the_repr_and_the_keys():
    parsed = settings(host="https://iys.example:8443")
    assert PASSWORD not in repr(parsed)
    assert PASSWORD not in parsed.account_key
    assert parsed.ip_budget_key == "iys.example:8443"


def test_account_key_tells_accounts_apart_and_is_stable():
    assert settings().account_key == settings().account_key
    assert settings().account_key != settings(login="other-user").account_key
    assert settings().account_key != settings({**CODES, "iys_code": 9}).account_key
