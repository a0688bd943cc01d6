"""Fused backends for the optimizers' step: ``cpu/`` (C + OpenMP); later ``triton/`` (GPU).

A backend executes an optimizer's update; it never decides its semantics.  An
optimizer describes its update as a :class:`KernelCall` (which kernel, which
state tensor sits in each of the kernel's slots, which scalar counters it
advances, the hyperparameters as numbers and the options that are on) and the
backend runs it over all tensors of a param group at once.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["KernelCall", "on"]


class KernelCall(NamedTuple):
    """One optimizer step as a fused kernel sees it."""

    name: str  # "sgd" | "adagrad" | "rmsprop" | "adam" | "nadam"
    # the state key in each of the kernel's three tensor slots, None where unused;
    # a key missing from a param's state is created as zeros (and the kernel told)
    slots: tuple[str | None, str | None, str | None]
    counters: tuple[str, ...]  # scalar state the kernel advances: "step", "mu_product"
    hyper: dict[str, float]  # lr, weight_decay, momentum, betas as beta1/beta2, ...
    flags: tuple[str, ...]  # options that are on: "maximize", "nesterov", "decoupled", ...

    @property
    def key(self) -> tuple:
        """What a cached layout depends on: the kernel and its state tensors."""
        return self.name, self.slots, self.counters


def on(**options: object) -> tuple[str, ...]:
    """The names of the options that are true: ``on(maximize=False, nesterov=True)``."""
    return tuple(name for name, value in options.items() if value)
