r"""RMSProp: Adagrad with a decaying average instead of a sum (slide 8).

The lecture's pseudo-code, with ``dr`` the decay rate (torch's ``alpha``)::

    dw_squared = dr * dw_squared + (1 - dr) * dw * dw
    w = w - lr * dw / sqrt(dw_squared + eps)

The average forgets old gradients, so the step no longer decays to zero as
Adagrad's does.  As in torch, ``eps`` sits outside the root by default
(``dw / (sqrt(dw_squared) + eps)``); ``eps_inside_sqrt=True`` is the lecture's
form.  ``centered=True`` divides by an estimate of the gradient's standard
deviation (``sqrt(E[g^2] - E[g]^2)``, Graves 2013) and ``momentum > 0`` keeps a
buffer of the normalized steps::

    b = momentum * b + dw / std
    w = w - lr * b
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from ..kernels import KernelCall, on
from .base import Optimizer, next_step, step_counter, zeros_like
from .checks import check, check_nonnegative, check_number

__all__ = ["RMSprop"]


class RMSpropHyper(NamedTuple):
    lr: float | Tensor
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    maximize: bool
    differentiable: bool
    eps_inside_sqrt: bool


class RMSprop(Optimizer):
    __doc__ = __doc__
    Hyper = RMSpropHyper

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        eps_inside_sqrt: bool = False,
        state_precision: str | None = None,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
            weight_decay=weight_decay, capturable=capturable, foreach=foreach,
            maximize=maximize, differentiable=differentiable, fused=fused,
            eps_inside_sqrt=eps_inside_sqrt,
            state_precision=state_precision, param_rounding=param_rounding,
            rounding_seed=rounding_seed,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_nonnegative("learning rate", "lr", group["lr"], tensor_ok=True)
        check_nonnegative("epsilon value", "eps", group["eps"])
        check_nonnegative("momentum value", "momentum", group["momentum"])
        check_nonnegative("weight_decay value", "weight_decay", group["weight_decay"])
        alpha = check_number("alpha", group["alpha"])
        # torch checks only alpha >= 0; above 1 the average goes negative and sqrt gives NaN
        check(0.0 <= alpha <= 1.0, "alpha value", alpha, "alpha", "in [0, 1]")

    def _new_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"step": step_counter(), "square_avg": zeros_like(param)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = zeros_like(param)
        return state

    @staticmethod
    def _update(param: Tensor, grad: Tensor, state: dict[str, Any], h: RMSpropHyper) -> None:
        next_step(state)
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            g = g.add(param, alpha=h.weight_decay)
        dw_squared = state["square_avg"]
        dw_squared.mul_(h.alpha).addcmul_(g, g, value=1 - h.alpha)  # dr*dw_sq + (1-dr)*dw*dw

        if h.centered:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(g, 1 - h.alpha)
            variance = dw_squared.addcmul(grad_avg, grad_avg, value=-1)  # E[g^2] - E[g]^2
        else:
            variance = dw_squared
        if h.eps_inside_sqrt:
            std = variance.add(h.eps).sqrt()  # sqrt(dw_squared + eps)
        else:
            std = variance.sqrt()
            # sqrt saves its output for backward: add eps out of place when differentiable
            std = std.add(h.eps) if h.differentiable else std.add_(h.eps)

        if h.momentum > 0:
            b = state["momentum_buffer"]
            b.mul_(h.momentum).addcdiv_(g, std)
            param.add_(b, alpha=-h.lr)
        else:
            param.addcdiv_(g, std, value=-h.lr)  # w = w - lr * dw / std

    def _kernel(self, h: RMSpropHyper) -> KernelCall:
        return KernelCall(
            "rmsprop",
            ("square_avg", "momentum_buffer" if h.momentum > 0 else None,
             "grad_avg" if h.centered else None),
            ("step",),
            dict(lr=h.lr, alpha=h.alpha, eps=h.eps, weight_decay=h.weight_decay,
                 momentum=h.momentum),
            on(maximize=h.maximize, weight_decay=h.weight_decay != 0,
               eps_inside=h.eps_inside_sqrt),
        )  # fmt: skip
