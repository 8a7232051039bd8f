"""The leavers' safety rule and arguments, without a database."""

from __future__ import annotations

import pytest

from iys_provider.people.leavers import (
    DEFAULT_MAX_LEAVER_SHARE,
    Forgotten,
    TooManyLeaversError,
    check_leavers,
    parse_max_leaver_share,
    refusal,
)


@pytest.mark.parametrize(
    ("leavers", "known", "share", "refused"),
    [
        (0, 0, 0.5, False),  # nothing synced yet
        (0, 1000, 0.5, False),
        (1, 1000, 0.5, False),
        (500, 1000, 0.5, False),  # exactly the share: allowed
        (501, 1000, 0.5, True),
        (2, 3, 0.5, True),  # a tiny user base needs the override
        (2, 3, 0.67, False),
        (29, 100, 0.29, False),  # no float rounding at the boundary (0.29 × 100 < 29 in floats)
        (30, 100, 0.29, True),
        (1000, 1000, 0.5, True),  # the source returns none of the known users
        (1000, 1000, 0.99, True),
        (1000, 1000, 1.0, False),  # the override: everyone really left
        (999, 1000, 1.0, False),
    ],
)
def test_the_safety_rule(leavers, known, share, refused):
    assert (refusal(leavers=leavers, known_users=known, max_share=share) is not None) is refused
    if refused:
        with pytest.raises(TooManyLeaversError):
            check_leavers(leavers=leavers, known_users=known, max_share=share)
    else:
        check_leavers(leavers=leavers, known_users=known, max_share=share)


def test_a_refusal_names_the_numbers_and_the_override_that_lets_them_through():
    message = refusal(leavers=612, known_users=1000, max_share=DEFAULT_MAX_LEAVER_SHARE)
    assert "612 of the 1000 users" in message and "61%" in message
    assert "max_leaver_share=0.5 allows" in message and "max_leaver_share=0.62" in message
    assert "IysForgetLeaversOperator" in message and "nobody was forgotten" in message
    # The value it suggests does let them through.
    assert refusal(leavers=612, known_users=1000, max_share=0.62) is None


def test_a_source_returning_nobody_is_called_broken_and_only_a_share_of_one_lets_it_through():
    message = refusal(leavers=1000, known_users=1000, max_share=0.5)
    assert "returns none of the 1000 users" in message and "max_leaver_share=1" in message


@pytest.mark.parametrize(("given", "share"), [(0.5, 0.5), ("0.25", 0.25), (" 1 ", 1.0), (1, 1.0), ("0.001", 0.001)])
def test_max_leaver_share_as_given_or_templated(given, share):
    assert parse_max_leaver_share(given) == share


@pytest.mark.parametrize("given", [0, "0", -0.1, 1.01, "2", "half", "", None, "nan", True])
def test_max_leaver_share_out_of_range_is_refused(given):
    with pytest.raises(ValueError, match="max_leaver_share must be"):
        parse_max_leaver_share(given)


def test_outcomes_add_up():
    assert Forgotten(1, 2, 3, 4) + Forgotten(10, 20, 30, 40) == Forgotten(11, 22, 33, 44)
    assert Forgotten() + Forgotten(leavers=2) == Forgotten(leavers=2)


def test_the_operators_template_the_share_and_take_keyword_arguments_only(monkeypatch):
    from iys_provider.operators.initial_sync import IysPlanInitialSyncOperator
    from iys_provider.operators.leavers import IysForgetLeaversOperator

    monkeypatch.delenv("AIRFLOW_CONN_IYS_DEFAULT", raising=False)  # nothing may be looked up here
    task = IysForgetLeaversOperator(task_id="forget_leavers", max_leaver_share="{{ params.max_leaver_share }}")
    assert {"iys_conn_id", "postgres_conn_id", "recipients_sql", "max_leaver_share"} <= set(task.template_fields)
    assert task.template_ext == (".sql",)
    assert "max_leaver_share" in IysPlanInitialSyncOperator.template_fields
    with pytest.raises(TypeError):
        IysForgetLeaversOperator("forget_leavers")
