"""Issue #13: the ``egress_ip`` extra names the client IP İYS counts against; it joins the budget key."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from iys_provider.exceptions import IysError
from iys_provider.get_provider_info import get_provider_info
from iys_provider.hooks.settings import IysConnectionSettings

CODES = {"iys_code": 700001, "brand_code": 700002}


def settings(extra: dict | None = None, **fields) -> IysConnectionSettings:
    attrs = {"conn_type": "iys", "login": "iys-user", "password": "pw", "host": "https://iys.example:8443", **fields}
    conn = Connection(conn_id="iys_test", extra=json.dumps({**CODES, **(extra or {})}), **attrs)
    return IysConnectionSettings.from_connection(conn)


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_without_a_label_the_budget_key_is_the_api_host_as_before(blank):
    # Rows written before labels existed are keyed by the bare host: they must stay the budget.
    assert settings({"egress_ip": blank}).ip_budget_key == "iys.example:8443"
    assert settings({"egress_ip": blank}).egress_ip == ""
    assert settings().ip_budget_key == "iys.example:8443"


def test_a_label_joins_the_host_in_the_budget_key():
    assert settings({"egress_ip": "203.0.113.7"}).ip_budget_key == "iys.example:8443|203.0.113.7"
    assert settings({"egress_ip": "2001:db8::7"}).ip_budget_key == "iys.example:8443|2001:db8::7"


def test_labels_are_compared_without_case_or_surrounding_blanks():
    # Two workers spelling one IP's label differently must not get two budgets for it.
    assert settings({"egress_ip": " NAT-a "}).ip_budget_key == settings({"egress_ip": "nat-A"}).ip_budget_key


def test_different_labels_give_different_budget_keys_but_one_account():
    a, b = settings({"egress_ip": "nat-a"}), settings({"egress_ip": "nat-b"})
    assert a.ip_budget_key != b.ip_budget_key
    assert a.ip_budget_key != settings().ip_budget_key
    # The token belongs to the account, whichever IP fetched it.
    assert a.account_key == b.account_key == settings().account_key


def test_the_budget_key_leaves_out_the_account_and_the_brand():
    other_account = settings({"iys_code": 9, "brand_code": 9, "egress_ip": "nat-a"}, login="another-user")
    assert other_account.ip_budget_key == settings({"egress_ip": "nat-a"}).ip_budget_key
    assert other_account.account_key != settings({"egress_ip": "nat-a"}).account_key


@pytest.mark.parametrize("label", ["nat|a", "nat a", "-nat", "ü-nat", "a" * 101, "10.0.0.1/32"])
def test_a_label_that_could_blur_the_key_is_refused_naming_the_connection(label):
    with pytest.raises(IysError, match=r"^Connection 'iys_test' has an invalid extra value: egress_ip="):
        settings({"egress_ip": label})


def test_the_form_offers_the_label_with_the_model_default_and_the_same_rule():
    import re

    field = get_provider_info()["connection-types"][0]["conn-fields"]["egress_ip"]
    assert field["schema"]["default"] == IysConnectionSettings.model_fields["egress_ip"].default == ""
    pattern = re.compile(field["schema"]["pattern"])
    for accepted in ("", "203.0.113.7", "nat-a", "2001:db8::7"):
        assert pattern.match(accepted), accepted
        settings({"egress_ip": accepted})
    for refused in ("nat|a", "nat a", "-nat"):
        assert not pattern.match(refused), refused
    assert "H084" in field["description"] and "per client IP" in field["description"]
