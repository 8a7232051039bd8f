"""One reading of each kind of templated operator argument.

A templated field reaches ``execute`` as text unless its DAG renders native objects
(``render_template_as_native_obj``): ``"true"``, ``"2000"``, and ``"None"`` for a null Param.
Operators read such fields only through these helpers, so every operator accepts the same
spellings and names the argument when a value cannot be read. The errors are
:class:`TemplatedValueError`, a :class:`ValueError`.
"""

from __future__ import annotations

import math

_TRUE = frozenset({"1", "true", "yes", "on"})
# "none" is how Jinja renders a null Param; "" an empty one.
_FALSE = frozenset({"0", "false", "no", "off", "", "none"})
_NULL = frozenset({"", "none"})


class TemplatedValueError(ValueError):
    """An operator argument that cannot be read as the kind of value it must be; names the argument."""


def as_bool(value: object, name: str) -> bool:
    """``value`` as a flag: a bool, 0 or 1, or text among true/false, yes/no, on/off, 1/0 (any case), "None", ""."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise TemplatedValueError(f"{name} must be true or false (also yes/no, on/off, 1/0), not {value!r}")


def as_int(value: object, name: str) -> int:
    """``value`` as a whole number: an int, a float without a fraction, or its text ("2000", " 2000 ")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise TemplatedValueError(f"{name} must be a whole number, not {value!r}")


def as_float(value: object, name: str) -> float:
    """``value`` as a finite number: an int, a float, or its text ("0.5", "2")."""
    number = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if not math.isfinite(number):
        raise TemplatedValueError(f"{name} must be a number, not {value!r}")
    return number


def as_optional_str(value: object) -> str | None:
    """``value`` as text, or None for a null value: None, "None" (a null Param rendered) or blank text."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text.lower() in _NULL else text
