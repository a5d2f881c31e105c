"""Validation primitives: each checks one value and raises ``ValueError("must be ..., got ...")``.

A schema (the training config, ``model.json``, a distiller's or a command's options)
calls these and only puts its own key path in front of the message, so every schema
accepts the same values and words a refusal the same way.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np


# ------------------------------------------------------------------ predicates
def is_int(value: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def is_real(value: Any) -> bool:
    """An int or float (NumPy ones too), not a bool; may be infinite or NaN."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return is_real(value) and math.isfinite(value)


def show(value: Any) -> str:
    """``repr(value)``, or ``a mapping`` (a whole section is never printed)."""
    return repr(value) if not isinstance(value, Mapping) else "a mapping"


# ------------------------------------------------------------------ "must be <what>, got <value>"
def need(ok: bool, what: str, value: Any) -> None:
    """``ValueError("must be <what>, got <value!r>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"must be {what}, got {value!r}")


def integer_at_least(value: Any, low: int) -> int:
    """An integer >= ``low`` (``must be an integer >= 1, got 0``)."""
    need(is_int(value) and value >= low, f"an integer >= {low}", value)
    return int(value)


def optional_integer_at_least(value: Any, low: int) -> int | None:
    """``None`` or an integer >= ``low`` (``must be an integer >= 1 or None, got 0``)."""
    need(value is None or (is_int(value) and value >= low), f"an integer >= {low} or None", value)
    return None if value is None else int(value)


def positive_number(value: Any) -> float:
    """A finite number > 0 (``must be a number > 0, got ...``)."""
    need(is_number(value) and value > 0, "a number > 0", value)
    return float(value)


def non_negative_number(value: Any) -> float:
    """A finite number >= 0."""
    need(is_number(value) and value >= 0, "a number >= 0", value)
    return float(value)


def number_in(value: Any, low: float, high: float, high_open: bool = False, low_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (brackets follow ``low_open`` / ``high_open``)."""
    inside = is_number(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    need(inside, f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}", value)
    return float(value)


def number_range(value: Any) -> tuple[float, float]:
    """``[low, high]`` of two finite numbers with low <= high, as a tuple of floats."""
    need(isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value)
         and value[0] <= value[1], "[low, high] with low <= high", value)
    return float(value[0]), float(value[1])


def choice(*choices: str) -> Callable[[Any], str]:
    """A check accepting one of ``choices`` (``must be one of a, b, got 'c'``)."""

    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


def module_names(value: Any) -> list[str] | None:
    """``None`` (use the defaults) or a non-empty list of unique module names."""
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, str) and v for v in value)
        or len(set(value)) != len(value)
    ):
        raise ValueError(f"must be null or a non-empty list of unique module names, got {value!r}")
    return list(value)


# ------------------------------------------------------------------ config wording ("must be an integer, got ...")
def integer(value: Any, low: int | None = None) -> int:
    """An integer, optionally >= ``low`` (``must be an integer, got 1.5``; ``must be at least 1, got 0``)."""
    if not is_int(value):
        raise ValueError(f"must be an integer, got {show(value)}")
    if low is not None and value < low:
        raise ValueError(f"must be at least {low}, got {value}")
    return int(value)


def number(value: Any, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> float:
    """A finite number, optionally in an interval (``must be a number, got 'x'``; ``must be >= 0, got -1``)."""
    if not is_number(value):
        raise ValueError(f"must be a number, got {show(value)}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            interval = f"{'>' if low_open else '>='} {low:g}"
        else:
            interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"must be {interval}, got {value:g}")
    return value


def boolean(value: Any) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {show(value)}")
    return value


def text(value: Any, choices: Sequence[str] | None = None, non_empty: bool = True) -> str:
    """A string (non-empty unless ``non_empty=False``), optionally one of ``choices``."""
    if non_empty and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"must be a non-empty string, got {show(value)}")
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {show(value)}")
    if choices is not None and value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def plain_data(value: Any) -> Any:
    """Mappings and sequences (YAML / JSON nodes) as plain dicts and lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    return value


def check_options(options: Any, label: str, rules: Mapping[str, Callable[[Any], Any]]) -> None:
    """Check the attributes of ``options`` in the order of ``rules``; the first bad one raises.

    Raises:
        ConfigError: ``<label> option '<name>' must be ..., got ...``.
    """
    from .errors import ConfigError

    for name, rule in rules.items():
        try:
            rule(getattr(options, name))
        except ValueError as exc:
            raise ConfigError(f"{label} option '{name}' {exc}") from None
