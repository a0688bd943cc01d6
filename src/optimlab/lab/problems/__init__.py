"""The lab's problems, by name, in the order the report shows them.

Each module documents its problem (formulas, data, model, the source it
follows); :func:`registry` builds the catalogue once per process.
"""

from __future__ import annotations

from functools import cache

from . import charlm, digits, functions2d, mnist1d, quadratic
from .base import FAMILIES, Problem, Task

__all__ = ["FAMILIES", "Problem", "Task", "get", "names", "registry"]


@cache
def registry() -> dict[str, Problem]:
    problems: list[Problem] = [
        *functions2d.problems(),
        *quadratic.problems(),
        *digits.problems(),
        *mnist1d.problems(),
        *charlm.problems(),
    ]
    return {p.name: p for p in problems}


def names() -> list[str]:
    return list(registry())


def get(name: str) -> Problem:
    return registry()[name]
