"""Hyperparameter validation shared by the optimizers: torch.optim's messages, plus the
argument's name and value."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

__all__ = ["check", "check_betas", "check_choice", "check_nonnegative", "check_number"]


def check(ok: Any, what: str, value: Any, name: str, rule: str) -> None:
    """Raise ``ValueError("Invalid <what>: <value> (<name> must be <rule>)")`` unless ``ok``.

    The prefix is torch.optim's own message, so code matching torch's errors still matches.
    """
    if not ok:
        raise ValueError(f"Invalid {what}: {value} ({name} must be {rule})")


def check_number(name: str, value: Any, *, tensor_ok: bool = False) -> float:
    """The float value of hyperparameter ``name``; ``TypeError`` if it is not a number."""
    if isinstance(value, Tensor):
        if not tensor_ok:
            raise TypeError(f"{name} must be a float, got a Tensor: {value}")
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    return float(value)


def check_nonnegative(what: str, name: str, value: Any, *, tensor_ok: bool = False) -> None:
    number = check_number(name, value, tensor_ok=tensor_ok)
    check(0.0 <= number < math.inf, what, value, name, "a finite number >= 0")


def check_betas(betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        number = check_number(f"betas[{i}]", beta, tensor_ok=True)
        check(0.0 <= number < 1.0, f"beta parameter at index {i}", beta, f"betas[{i}]", "in [0, 1)")
    if isinstance(betas[0], Tensor) != isinstance(betas[1], Tensor):
        raise ValueError("betas must be either both floats or both Tensors")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be one of {', '.join(choices)})")
