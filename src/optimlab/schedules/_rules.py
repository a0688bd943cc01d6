"""The rules an optimizer's hyperparameters obey, checked before an adapter writes a value.

A schedule can reach values its optimizer's constructor would have refused
(``betas[0] = 1.5`` from a badly scaled 1cycle, ``inf`` from an overflowing
``scale``), and ``step()`` reads param groups without checking them again.  So
the adapters ask, before each write, whether the optimizer would accept the
param group with the new value in it:

- an optimlab optimizer answers itself: ``optimizer._validate(group)`` raises the
  constructor's own ``ValueError``;
- any other optimizer gets the rules torch's constructors apply to the entry
  (by name: every ``torch.optim`` optimizer spells its hyperparameters the same
  way), and every value must be finite: torch accepts ``lr=inf``, but no
  schedule means it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..optimizers.base import Optimizer as OptimlabOptimizer

__all__ = ["refusal"]

# entry -> (torch's name for it in "Invalid <what>: <value>", the rule, the rule in words)
_RULES: dict[str, tuple[str, Callable[[float], bool], str]] = {
    "lr": ("learning rate", lambda v: v >= 0, "a finite number >= 0"),
    "momentum": ("momentum value", lambda v: v >= 0, "a finite number >= 0"),
    "weight_decay": ("weight_decay value", lambda v: v >= 0, "a finite number >= 0"),
    "eps": ("epsilon value", lambda v: v >= 0, "a finite number >= 0"),
    "alpha": ("alpha value", lambda v: v >= 0, "a finite number >= 0"),
    "lr_decay": ("lr_decay value", lambda v: v >= 0, "a finite number >= 0"),
    "initial_accumulator_value": (
        "initial_accumulator_value value",
        lambda v: v >= 0,
        "a finite number >= 0",
    ),
    "momentum_decay": ("momentum_decay value", lambda v: v >= 0, "a finite number >= 0"),
    "betas": ("beta parameter", lambda v: 0 <= v < 1, "in [0, 1)"),
    "rho": ("rho value", lambda v: 0 <= v <= 1, "in [0, 1]"),
    "beta2_decay": ("beta2_decay value", lambda v: v <= 0, "a finite number <= 0"),
    "d": ("clipping threshold d", lambda v: v >= 1, "a finite number >= 1"),
}
# Rprop's (etaminus, etaplus): torch requires 0 < etaminus < 1 < etaplus.
_ETAS = [(lambda v: 0 < v < 1, "in (0, 1)"), (lambda v: v > 1, "a finite number > 1")]


def refusal(optimizer: torch.optim.Optimizer, group: dict[str, Any], key: str) -> str | None:
    """Why ``optimizer`` would refuse param group ``group``, whose ``key`` is new; None if not.

    ``key`` is the entry as the adapter names it (``"lr"``, ``"betas[0]"``).
    """
    if isinstance(optimizer, OptimlabOptimizer):
        try:
            optimizer._validate(group)
        except (TypeError, ValueError) as err:
            return str(err)
        return None
    return _torch_refusal(group, key)


def _torch_refusal(group: dict[str, Any], key: str) -> str | None:
    entry, _, index = key.partition("[")
    value = group[entry]
    if index:
        i = int(index.rstrip("]"))
        value = value[i]
    number = float(value)
    what, ok, rule = _RULES.get(entry, (f"{entry} value", lambda v: True, "a finite number"))
    if entry == "betas" and index:
        what = f"{what} at index {i}"
    if entry == "etas" and index and i < len(_ETAS):
        what, (ok, rule) = "eta value", _ETAS[i]
    if not (math.isfinite(number) and ok(number)):
        return f"Invalid {what}: {number} ({key} must be {rule})"
    if entry in ("momentum", "dampening") and group.get("nesterov"):
        # torch.optim.SGD's constructor rule, which a schedule reaching 0 would break
        if not (group.get("momentum", 0) > 0 and group.get("dampening", 0) == 0):
            return "Nesterov momentum requires a momentum and zero dampening"
    return None
