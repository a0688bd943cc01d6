r"""Adagrad: per-parameter learning rates from the running sum of squared gradients (slide 7).

The lecture's pseudo-code::

    dw_squared += dw * dw
    w = w - lr * dw / sqrt(dw_squared + eps)

torch (and the original paper's implementations) put ``eps`` outside the root,
``dw / (sqrt(dw_squared) + eps)``; that is the default here too, for parity with
``torch.optim.Adagrad``.  ``eps_inside_sqrt=True`` is the lecture's form.  The two
differ only while ``dw_squared`` is comparable to ``eps`` (the first steps of a
coordinate whose gradients are tiny).

Because ``dw_squared`` only grows, the effective step ``lr / sqrt(dw_squared)``
decays to zero: the slide's "step size decays to zero over time".
``lr_decay`` additionally scales lr by ``1 / (1 + (t - 1) * lr_decay)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..kernels import KernelCall, on
from .base import Optimizer, next_step, step_counter
from .checks import check_nonnegative

__all__ = ["Adagrad"]


class AdagradHyper(NamedTuple):
    lr: float | Tensor
    lr_decay: float
    weight_decay: float
    eps: float
    maximize: bool
    differentiable: bool
    eps_inside_sqrt: bool


class Adagrad(Optimizer):
    __doc__ = __doc__
    Hyper = AdagradHyper
    supports_sparse = True

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        eps_inside_sqrt: bool = False,
        state_precision: str | None = None,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach,
            maximize=maximize, differentiable=differentiable, fused=fused,
            eps_inside_sqrt=eps_inside_sqrt,
            state_precision=state_precision, param_rounding=param_rounding,
            rounding_seed=rounding_seed,
        )  # fmt: skip
        super().__init__(params, defaults)
        # torch creates Adagrad's state at construction, not at the first step,
        # so a state_dict taken before any step already holds it: do the same.
        for group in self.param_groups:
            for param in group["params"]:
                self._state_of(param, group)

    def _validate(self, group: dict[str, Any]) -> None:
        check_nonnegative("learning rate", "lr", group["lr"], tensor_ok=True)
        check_nonnegative("lr_decay value", "lr_decay", group["lr_decay"])
        check_nonnegative("weight_decay value", "weight_decay", group["weight_decay"])
        check_nonnegative(
            "initial_accumulator_value value",
            "initial_accumulator_value",
            group["initial_accumulator_value"],
        )
        check_nonnegative("epsilon value", "eps", group["eps"])

    def _new_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        init = group["initial_accumulator_value"]
        if param.is_complex():
            init = complex(init, init)
        return {
            "step": step_counter(),
            "sum": torch.full_like(param, init, memory_format=torch.preserve_format),
        }

    @staticmethod
    def _update(param: Tensor, grad: Tensor, state: dict[str, Any], h: AdagradHyper) -> None:
        t = next_step(state)
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            if g.is_sparse:
                raise RuntimeError("weight_decay option is not compatible with sparse gradients")
            g = g.add(param, alpha=h.weight_decay)
        clr = h.lr / (1 + (t - 1) * h.lr_decay)
        dw_squared = state["sum"]

        if g.is_sparse:
            _sparse_update(param, g, dw_squared, clr, h)
            return
        dw_squared.addcmul_(g, g, value=1)  # dw_squared += dw * dw
        if h.eps_inside_sqrt:
            std = dw_squared.add(h.eps).sqrt()  # sqrt(dw_squared + eps)
        else:
            std = dw_squared.sqrt() + h.eps if h.differentiable else dw_squared.sqrt().add_(h.eps)
        param.addcdiv_(g, std, value=-clr)  # w = w - lr * dw / std

    def _kernel(self, h: AdagradHyper) -> KernelCall:
        return KernelCall(
            "adagrad",
            ("sum", None, None),
            ("step",),
            dict(lr=h.lr, lr_decay=h.lr_decay, weight_decay=h.weight_decay, eps=h.eps),
            on(maximize=h.maximize, weight_decay=h.weight_decay != 0,
               eps_inside=h.eps_inside_sqrt),
        )  # fmt: skip


def _sparse_update(param: Tensor, g: Tensor, dw_squared: Tensor, clr: Any, h: AdagradHyper) -> None:
    """The same update on the rows a sparse gradient touches (embedding tables)."""
    g = g.coalesce()  # the update is non-linear in g, so indices must be unique

    def like_g(values: Tensor) -> Tensor:
        # g's own (coalesced, valid) indices: the invariant checks would only cost time
        return torch.sparse_coo_tensor(g._indices(), values, g.size(), check_invariants=False)

    dw_squared.add_(like_g(g._values().pow(2)))
    touched = dw_squared.sparse_mask(g)._values()
    std = touched.add_(h.eps).sqrt_() if h.eps_inside_sqrt else touched.sqrt_().add_(h.eps)
    param.add_(like_g(g._values() / std), alpha=-clr)
