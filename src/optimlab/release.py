"""Gradient release: step each parameter the moment its gradient is ready, then free it.

A normal training step holds every gradient at once between ``backward()`` and
``optimizer.step()``: one more copy of the model.  With gradient release the optimizer
steps each parameter from inside ``backward()``, as soon as autograd has accumulated its
gradient (torch's ``register_post_accumulate_grad_hook``), and drops the gradient right
away, so at most a few gradients exist at any moment::

    release = optimlab.release_gradients(optimizer)
    for x, y in data:
        loss_fn(model(x), y).backward()  # steps every parameter, frees every gradient
        schedule.step()                  # schedules work as usual
    release.remove()                     # back to optimizer.step()

``optimizer.step()`` and ``zero_grad()`` may stay in the loop: they find no gradients.
The optimizer's state, ``state_dict`` and checkpoints are unchanged, and each parameter
takes the same path it would in ``optimizer.step()`` (the fused kernels, or the reference
path), with the group's current hyperparameters.

What it cannot do, by construction: accumulate gradients over several ``backward()``
calls (each one steps); clip by the norm of *all* gradients (they never coexist); use
``torch.amp.GradScaler`` (it must see every gradient before the step; train in bfloat16
autocast instead, which needs no scaler); run under DistributedDataParallel (which
all-reduces gradients after the hooks run).  Optimizer step hooks do not fire.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["GradientRelease", "release_gradients"]


class GradientRelease:
    """The hooks that step ``optimizer``'s params during backward; ``remove()`` ends it."""

    def __init__(self, optimizer: Any) -> None:
        if not hasattr(optimizer, "_step_released"):
            raise TypeError(
                f"release_gradients needs an optimlab optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self._handles = [
            param.register_post_accumulate_grad_hook(self._step)
            for group in optimizer.param_groups
            for param in group["params"]
        ]

    def _step(self, param: Tensor) -> None:
        with torch.no_grad():
            self.optimizer._step_released(param)
        param.grad = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> GradientRelease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def release_gradients(optimizer: Any) -> GradientRelease:
    """Step ``optimizer``'s params inside ``backward()``, freeing each gradient at once."""
    return GradientRelease(optimizer)
