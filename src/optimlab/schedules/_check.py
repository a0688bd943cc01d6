"""Argument checks shared by the schedule constructors.

Every check raises ``ValueError`` naming the argument and the value it got, in
one form: ``"<name> must be <rule>, got <name>=<value>"``, so a bad value in a
config file is found by reading the message alone.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from itertools import pairwise
from typing import Any


def _fail(name: str, rule: str, value: Any) -> ValueError:
    if isinstance(value, tuple):
        value = list(value)
    return ValueError(f"{name} must be {rule}, got {name}={value!r}")


def number(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a finite float that is >= 0 (> 0 with ``positive``)."""
    rule = "a positive number" if positive else "a non-negative number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, rule, value)
    result = float(value)
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise _fail(name, rule, value)
    return result


def integer(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; an integral float such as ``1e4`` is accepted.

    Integral floats are accepted because config files and the SPEC text write
    large step counts as ``1e4``.
    """
    rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    if isinstance(value, bool):
        raise _fail(name, rule, value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise _fail(name, rule, value)
        value = int(value)
    try:
        result = operator.index(value)
    except TypeError:
        raise _fail(name, rule, value) from None
    if result < minimum:
        raise _fail(name, rule, value)
    return result


def gamma(name: str, value: Any) -> float:
    """A decay factor in (0, 1]."""
    result = number(name, value, positive=True)
    if result > 1:
        raise _fail(name, "in (0, 1]", value)
    return result


def fraction(name: str, value: Any) -> float:
    """A number strictly between 0 and 1."""
    result = number(name, value, positive=True)
    if result >= 1:
        raise _fail(name, "in (0, 1)", value)
    return result


def increasing(name: str, values: Any) -> tuple[int, ...]:
    """A strictly increasing sequence of positive integers, as a tuple."""
    rule = "a strictly increasing list of positive integers"
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise _fail(name, rule, values)
    try:
        result = tuple(integer(name, v) for v in values)
    except ValueError:
        raise _fail(name, rule, values) from None
    if any(a >= b for a, b in pairwise(result)):
        raise _fail(name, rule, values)
    return result


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(name, "True or False", value)
    return value


def step(value: Any) -> int:
    """The step a schedule is evaluated at: an int >= 0 (no floats: steps are counted)."""
    try:
        result = operator.index(value)
    except TypeError:
        raise _fail("step", "a non-negative integer", value) from None
    if result < 0:
        raise _fail("step", "a non-negative integer", value)
    return result
