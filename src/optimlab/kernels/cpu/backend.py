"""Run a param group's step through the C kernels (``optim.c``) over a plan's table.

The optimizer hands over a :class:`~optimlab.kernels.plan.Plan` (built from tensors it
has checked with :func:`problem` and whose state it has created) and the step as a
:class:`~optimlab.kernels.KernelCall`; :func:`run` makes one C call, which advances the
rows' counters and updates every element in one parallel region for the whole group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .. import CALL_FLAGS, HYPER_FIELDS, KernelCall
from .. import plan as plans
from . import _optim

__all__ = ["COUNTERS", "NAME", "PLANNED", "Plan", "problem", "run"]

NAME = "cpu"
PLANNED = True  # a cached table per group (kernels/plan.py), re-validated every step
COUNTERS = "cpu"  # the kernels read the step counters on the CPU (the params are there too)
Plan = plans.Plan
KERNELS = {name: i for i, name in enumerate(_optim.KERNELS)}
FLAGS = {name: 1 << bit for bit, name in enumerate(CALL_FLAGS)}


def problem(param: Tensor, state: Mapping[str, Any] | None, call: KernelCall) -> str:
    """Why the CPU kernels cannot step ``param`` ('' when they can)."""
    local = plans.view(param)
    if local is not None and local.device.type != "cpu":
        return f"a parameter is on {local.device}, the kernels are CPU kernels"
    return plans.problem(param, state, call, counter_device=torch.device("cpu"), formats=True)


def _floats(plan: Plan, hyper: dict[str, Any]) -> tuple[float, ...]:
    """The hyperparameters in HYPER_FIELDS order, as floats (kept while the dict is the same
    and holds no tensor: a tensor lr filled in place is read each step)."""
    cached = getattr(plan, "floats", None)
    if cached is not None and cached[0] is hyper:
        return cached[1]
    values = tuple(float(hyper.get(name, 0.0)) for name in HYPER_FIELDS)
    if not any(isinstance(v, Tensor) for v in hyper.values()):
        plan.floats = (hyper, values)
    return values


def _scalar_address(tensor: Tensor | None, keep: list) -> int:
    """Address of a float32 CPU copy of a GradScaler scalar (0 for None)."""
    if tensor is None:
        return 0
    if tensor.device.type != "cpu" or tensor.dtype != torch.float32:
        tensor = tensor.detach().to("cpu", torch.float32)
    keep.append(tensor)
    return tensor.data_ptr()


def run(plan: Plan, call: KernelCall, grad_scale: Tensor | None, found_inf: Tensor | None) -> None:
    """One step over the plan's active rows (``bind`` has just filled in their grads)."""
    if not plan.owners:
        return
    keep: list[Tensor] = []
    # runs: how many rows the kernel walked, after joining rows that continue each other
    _, plan.runs = _optim.step(
        KERNELS[call.name],
        plan.variant,
        torch.get_num_threads(),
        plan.address,
        len(plan.owners),
        _floats(plan, call.hyper),
        sum(FLAGS[flag] for flag in call.flags),
        _scalar_address(grad_scale, keep),
        _scalar_address(found_inf, keep),
        *call.rounding,
        plan.scratch_address,
    )
