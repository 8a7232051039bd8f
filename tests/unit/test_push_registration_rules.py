"""The push registration's decisions: what is sent to İYS, what is refused here, what is left alone."""

from __future__ import annotations

import pytest

from iys_provider.models import ConsentType, PushLink
from iys_provider.operators.push_registration import _channels
from iys_provider.push.registration_rules import (
    ListedLink,
    Verdict,
    base_url_problem,
    channels_problem,
    plan_registration,
    plan_unregistration,
    receiver_url,
    same_url,
)

BASE = "https://push.example.com"
OLD = "https://old.example.com/proxy"
ALL = ("ARAMA", "MESAJ", "EPOSTA")


def urls(base: str = BASE, conn_id: str = "iys_brand_a", channels=ALL) -> dict[str, str]:
    return {c: receiver_url(base, conn_id, c) for c in channels}


def verdicts(steps) -> dict[str, Verdict]:
    return {step.channel: step.verdict for step in steps}


def test_the_receiver_url_follows_the_receivers_route():
    assert receiver_url("https://push.example.com/", "iys_brand_a", "MESAJ") == (
        "https://push.example.com/iys-push/iys_brand_a/MESAJ"
    )
    assert receiver_url(" https://h.example.com/prefix ", "a/b c", "ARAMA") == (
        "https://h.example.com/prefix/iys-push/a%2Fb%20c/ARAMA"
    )


@pytest.mark.parametrize(
    ("base", "fragment"),
    [
        ("http://push.example.com", "not https"),
        ("push.example.com", "not https"),
        ("ftp://push.example.com", "not https"),
        ("https://", "names no host"),
        ("https://push.example.com?x=1", "query or fragment"),
        ("https://user:pw@push.example.com", "credentials in the URL"),
    ],
)
def test_base_urls_that_iys_would_refuse_or_could_not_route_are_named(base, fragment):
    problem = base_url_problem(base)
    assert problem is not None and fragment in problem
    assert "pw" not in problem


def test_an_https_base_url_passes():
    assert base_url_problem("https://push.example.com:8443/prefix/") is None


def test_channels_are_iyss_three():
    assert channels_problem(["MESAJ", "EPOSTA"]) is None
    assert "SMS" in channels_problem(["MESAJ", "SMS"])
    assert channels_problem([]) is not None


def test_same_url_ignores_case_of_scheme_and_host_and_a_final_slash_but_not_the_path():
    assert same_url("HTTPS://Push.Example.com/iys-push/a/MESAJ/", "https://push.example.com/iys-push/a/MESAJ")
    assert not same_url("https://push.example.com/iys-push/a/MESAJ", "https://push.example.com/iys-push/A/MESAJ")


def test_registering_with_nothing_listed_registers_every_channel():
    steps = plan_registration(ALL, urls(), set(ALL), [])
    assert verdicts(steps) == dict.fromkeys(ALL, Verdict.REGISTER)
    assert [s.url for s in steps] == [f"{BASE}/iys-push/iys_brand_a/{c}" for c in ALL]


def test_a_listed_link_is_not_registered_again():
    listed = [ListedLink(f"{BASE}/iys-push/iys_brand_a/MESAJ", "MESAJ", "Bağlantı Oluşturuldu")]
    steps = plan_registration(ALL, urls(), set(ALL), listed)
    assert verdicts(steps) == {
        "ARAMA": Verdict.REGISTER,
        "MESAJ": Verdict.ALREADY_REGISTERED,
        "EPOSTA": Verdict.REGISTER,
    }


def test_the_same_url_listed_for_another_channel_does_not_count():
    listed = [ListedLink(f"{BASE}/iys-push/iys_brand_a/MESAJ", "ARAMA", "Bağlantı Oluşturuldu")]
    assert verdicts(plan_registration(["MESAJ"], urls(channels=["MESAJ"]), {"MESAJ"}, listed)) == {
        "MESAJ": Verdict.REGISTER
    }


def test_a_link_iys_says_it_could_not_create_is_registered_again():
    listed = [ListedLink(f"{BASE}/iys-push/iys_brand_a/MESAJ", "MESAJ", "Bağlantı Oluşturulamadı")]
    assert verdicts(plan_registration(["MESAJ"], urls(channels=["MESAJ"]), {"MESAJ"}, listed)) == {
        "MESAJ": Verdict.REGISTER
    }


def test_a_second_url_is_registered_for_rotation_and_a_third_is_refused():
    one_other = [ListedLink(f"{OLD}/iys-push/iys_brand_a/MESAJ", "MESAJ")]
    assert plan_registration(["MESAJ"], urls(channels=["MESAJ"]), {"MESAJ"}, one_other)[0].verdict is Verdict.REGISTER
    two_others = [*one_other, ListedLink("https://third.example.com/iys-push/iys_brand_a/MESAJ", "MESAJ")]
    (step,) = plan_registration(["MESAJ"], urls(channels=["MESAJ"]), {"MESAJ"}, two_others)
    assert step.verdict is Verdict.REFUSED
    assert "at most 2" in step.reason and OLD in step.reason


def test_two_links_of_other_channels_do_not_fill_this_one():
    listed = [ListedLink(f"{OLD}/iys-push/x/ARAMA", "ARAMA"), ListedLink(f"{OLD}/iys-push/y/ARAMA", "ARAMA")]
    assert plan_registration(["MESAJ"], urls(channels=["MESAJ"]), {"MESAJ"}, listed)[0].verdict is Verdict.REGISTER


def test_with_two_links_held_the_one_being_registered_is_still_recognised_as_registered():
    listed = [ListedLink(f"{BASE}/iys-push/iys_brand_a/MESAJ", "MESAJ"), ListedLink(f"{OLD}/iys-push/a/MESAJ", "MESAJ")]
    step = plan_registration(["MESAJ"], urls(channels=["MESAJ"]), {"MESAJ"}, listed)[0]
    assert step.verdict is Verdict.ALREADY_REGISTERED


def test_a_channel_without_credentials_is_refused_naming_the_extras():
    steps = plan_registration(ALL, urls(), {"ARAMA", "EPOSTA"}, [])
    assert verdicts(steps)["MESAJ"] is Verdict.REFUSED
    assert "push_username" in steps[1].reason and "H093" in steps[1].reason
    assert verdicts(steps)["ARAMA"] is Verdict.REGISTER


def test_an_http_url_is_refused_before_anything_else():
    (step,) = plan_registration(["MESAJ"], urls("http://push.example.com", channels=["MESAJ"]), set(), [])
    assert step.verdict is Verdict.REFUSED and "H531" in step.reason


def test_unregistering_removes_only_listed_links_one_step_each():
    listed = [
        ListedLink(f"{BASE}/iys-push/iys_brand_a/MESAJ", "MESAJ"),
        ListedLink(f"{BASE}/iys-push/iys_brand_a/EPOSTA", "EPOSTA"),
        ListedLink(f"{OLD}/iys-push/iys_brand_a/ARAMA", "ARAMA"),
    ]
    steps = plan_unregistration(ALL, urls(), set(ALL), listed)
    assert verdicts(steps) == {
        "ARAMA": Verdict.ALREADY_ABSENT,
        "MESAJ": Verdict.UNREGISTER,
        "EPOSTA": Verdict.UNREGISTER,
    }


def test_unregistering_a_listed_link_without_credentials_is_refused_and_an_absent_one_needs_none():
    listed = [ListedLink(f"{BASE}/iys-push/iys_brand_a/MESAJ", "MESAJ")]
    steps = plan_unregistration(["MESAJ", "ARAMA"], urls(channels=["MESAJ", "ARAMA"]), set(), listed)
    assert verdicts(steps) == {"MESAJ": Verdict.REFUSED, "ARAMA": Verdict.ALREADY_ABSENT}


def test_the_listing_is_read_tolerantly():
    link = PushLink.model_validate(
        {
            "url": "https://a.example.com/x",
            "type": "MESAJ",
            "status": "Bağlantı Oluşturuldu",
            "registerTime": "2021-12-01 13:36:31",
            "new": 1,
        }
    )
    assert link.type is ConsentType.MESAJ
    assert link.registered_at.isoformat() == "2021-12-01T13:36:31+03:00"
    odd = PushLink.model_validate({"url": "https://a.example.com/x", "type": "WHATSAPP", "registerTime": 1638355000})
    assert odd.type == "WHATSAPP" and odd.status is None
    assert odd.register_time == "1638355000" and odd.registered_at is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["mesaj", "EPOSTA"], ["MESAJ", "EPOSTA"]),
        ("ARAMA, MESAJ", ["ARAMA", "MESAJ"]),
        ("['ARAMA', 'EPOSTA']", ["ARAMA", "EPOSTA"]),
        (("MESAJ",), ["MESAJ"]),
    ],
)
def test_the_operator_reads_channels_as_rendered(value, expected):
    assert _channels(value) == expected
