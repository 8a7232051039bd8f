"""Templated operator arguments: one reading of each kind, the same in every operator."""

from __future__ import annotations

import math
import re

import pytest

from iys_provider.templating import TemplatedValueError, as_bool, as_float, as_int, as_optional_str


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (None, False),
        ("True", True),  # a boolean Param rendered as text
        ("False", False),
        (" true ", True),
        ("YES", True),
        ("on", True),
        ("1", True),
        ("no", False),
        ("off", False),
        ("0", False),
        ("", False),
        ("None", False),  # a null Param rendered as text
    ],
)
def test_as_bool_reads_flags_and_their_rendered_text(value, expected):
    assert as_bool(value, "dry_run") is expected


@pytest.mark.parametrize("value", ["maybe", "2", "tru", 2, -1, 0.5, [], {"a": 1}])
def test_as_bool_refuses_anything_else_naming_the_argument(value):
    with pytest.raises(TemplatedValueError, match=r"dry_run must be true or false .*not " + re.escape(repr(value))):
        as_bool(value, "dry_run")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2000, 2000), ("2000", 2000), (" 2000 ", 2000), ("-3", -3), (2000.0, 2000), (0, 0)],
)
def test_as_int_reads_whole_numbers_and_their_text(value, expected):
    result = as_int(value, "batch_size")
    assert result == expected and type(result) is int


@pytest.mark.parametrize("value", ["2000.5", "2k", "", "None", None, 2.5, True, False, math.nan, "1e3"])
def test_as_int_refuses_anything_else_naming_the_argument(value):
    with pytest.raises(TemplatedValueError, match="batch_size must be a whole number, not "):
        as_int(value, "batch_size")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, 0.5), ("0.5", 0.5), (" 2 ", 2.0), (3, 3.0), ("1e-1", 0.1), (0, 0.0)],
)
def test_as_float_reads_numbers_and_their_text(value, expected):
    result = as_float(value, "max_share")
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", ["half", "", "None", None, True, "nan", "inf", math.inf, [0.5]])
def test_as_float_refuses_anything_else_naming_the_argument(value):
    with pytest.raises(TemplatedValueError, match="max_share must be a number, not "):
        as_float(value, "max_share")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("None", None),  # a null Param rendered as text
        ("none", None),
        ("", None),
        ("   ", None),
        ("2026-11-27", "2026-11-27"),
        (" s3://bucket/x ", "s3://bucket/x"),
        (7, "7"),
    ],
)
def test_as_optional_str_maps_null_spellings_to_none(value, expected):
    assert as_optional_str(value) == expected


def test_the_errors_are_value_errors():
    """Callers that handled the ValueError of int()/float() keep working."""
    assert issubclass(TemplatedValueError, ValueError)
