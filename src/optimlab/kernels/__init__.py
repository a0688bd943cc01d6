"""Backends that run the optimizers' step: ``cpu/`` (C + OpenMP), ``triton/`` (GPUs) and
``foreach`` (``torch._foreach_*`` ops, any device).

A backend executes an optimizer's update; it never decides its semantics.  An optimizer
describes one step of a param group as a :class:`KernelCall` (which update, which state
tensor sits in each of the update's slots, which scalar counters it advances, the
hyperparameters and the options that are on) and hands every backend that same value,
together with the tensors: the params, their grads and their state, which the optimizer
has already created (data flows one way: no backend calls back into an optimizer).

How a state slot is *stored* (the param's dtype, bfloat16, 8-bit blocks) is read off the
state tensors themselves by each backend's driver; the update function of an optimizer
never knows it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["CALL_FLAGS", "HYPER_FIELDS", "KernelCall", "ROW_FIELDS", "on"]


class KernelCall(NamedTuple):
    """One optimizer step as a backend sees it."""

    name: str  # "sgd" | "adagrad" | "rmsprop" | "adam" | "nadam"
    # the state key in each of the update's three tensor slots, None where unused
    slots: tuple[str | None, str | None, str | None]
    counters: tuple[str, ...]  # scalar state the update advances: "step", "mu_product"
    # lr, weight_decay, momentum, dampening, alpha, eps, beta1, beta2, lr_decay,
    # momentum_decay: floats, except ``lr`` (and weight_decay), which may be the group's
    # Tensor (foreach keeps it a tensor, so torch.compile sees no Python float to guard on)
    hyper: dict[str, Any]
    flags: tuple[str, ...]  # options that are on: "maximize", "nesterov", "decoupled", ...
    # True: the slots are born at the first step (SGD's momentum buffer is the first
    # gradient).  The optimizer then creates a missing slot as zeros and marks the param
    # *fresh*; a backend initialises a fresh slot as the update's first step says.
    lazy: bool = False
    # How state and params are stored (kernels/storage.py): the group's state_precision and
    # param_rounding, and the (seed, step) of its stochastic rounding
    state_precision: str | None = None
    param_rounding: str = "nearest"
    rounding: tuple[int, int] = (0, 0)

    @property
    def key(self) -> tuple:
        """What a cached layout depends on: the update, its state tensors, their formats."""
        return self.name, self.slots, self.counters, self.state_precision, self.param_rounding


def on(**options: object) -> tuple[str, ...]:
    """The names of the options that are true: ``on(maximize=False, nesterov=True)``."""
    return tuple(name for name, value in options.items() if value)


# One row of a plan's table, one per tensor (int64 each; C's ``Row`` in cpu/optim.h has the
# same fields in the same order, and the Triton kernels read the same table on the device).
ROW_FIELDS = (
    "param", "grad", "slot0", "slot1", "slot2",  # data pointers
    "scale0", "scale1", "scale2",  # 8-bit slots: their per-block fp32 absmax (else 0)
    "comp",  # Kahan-compensated params: the compensation buffer (else 0)
    "numel", "step", "mu_product",  # element count; the counters' data pointers (else 0)
    "flags",  # dtype, per-slot storage, and state bits (cpu/optim.h)
    "key",  # the tensor's stochastic-rounding stream: (group index << 32) | param index
)  # fmt: skip

# A call's options as bits of a row's flags (bit i: CALL_FLAGS[i]; cpu/optim.h's F_*).
CALL_FLAGS = (
    "maximize", "weight_decay", "nesterov", "lecture", "decoupled", "eps_inside",
    "bias_correction",
)  # fmt: skip
# The hyperparameters a kernel reads, in the order the C kernels take them (H_* in optim.h).
HYPER_FIELDS = (
    "lr", "weight_decay", "momentum", "dampening", "alpha", "eps", "beta1", "beta2",
    "lr_decay", "momentum_decay",
)  # fmt: skip
