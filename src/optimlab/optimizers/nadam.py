r"""NAdam: Adam with Nesterov momentum (Dozat 2016), as torch implements it.

Adam's first moment is replaced by a Nesterov look-ahead: the step mixes the
current gradient, weighted by this step's momentum coefficient ``mu_t``, with
the first moment, weighted by the *next* step's ``mu_{t+1}``::

    mu_t  = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))      # momentum warms up
    m = beta1 * m + (1 - beta1) * dw
    v = beta2 * v + (1 - beta2) * dw * dw
    denom = sqrt(v / (1 - beta2 ** t)) + eps
    w = w - lr * (1 - mu_t) / (1 - prod(mu_1..mu_t)) * dw / denom
          - lr * mu_{t+1} / (1 - prod(mu_1..mu_{t+1})) * m / denom

``mu_product`` (torch's state key) holds ``prod(mu_1..mu_t)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from ..kernels import KernelCall, on
from .base import Optimizer, keep, next_step, step_counter, zeros_like
from .checks import check_betas, check_nonnegative

__all__ = ["NAdam"]


class NAdamHyper(NamedTuple):
    lr: float | Tensor
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    momentum_decay: float
    decoupled_weight_decay: bool
    maximize: bool
    differentiable: bool


class NAdam(Optimizer):
    __doc__ = __doc__
    Hyper = NAdamHyper

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        state_precision: str | None = None,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused,
            state_precision=state_precision, param_rounding=param_rounding,
            rounding_seed=rounding_seed,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_nonnegative("learning rate", "lr", group["lr"], tensor_ok=True)
        check_nonnegative("epsilon value", "eps", group["eps"])
        check_betas(group["betas"])
        check_nonnegative("weight_decay value", "weight_decay", group["weight_decay"])
        check_nonnegative("momentum_decay value", "momentum_decay", group["momentum_decay"])

    def _new_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": step_counter(),
            "mu_product": step_counter(1.0),
            "exp_avg": zeros_like(param),
            "exp_avg_sq": zeros_like(param),
        }

    @staticmethod
    def _update(param: Tensor, grad: Tensor, state: dict[str, Any], h: NAdamHyper) -> None:
        t = next_step(state)
        beta1, beta2 = (float(b) for b in h.betas)
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            if h.decoupled_weight_decay:
                param.mul_(1 - h.lr * h.weight_decay)
            else:
                g = g.add(param, alpha=h.weight_decay)

        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * h.momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * h.momentum_decay)))
        state["mu_product"] *= mu
        mu_product = state["mu_product"].item()
        mu_product_next = mu_product * mu_next

        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.div(1 - beta2**t).sqrt()
        # sqrt saves its output for backward: add eps out of place when differentiable
        denom = denom.add(h.eps) if h.differentiable else denom.add_(h.eps)
        param.addcdiv_(g, denom, value=(-h.lr * (1.0 - mu) / (1.0 - mu_product)))
        param.addcdiv_(
            keep(m, h.differentiable), denom, value=(-h.lr * mu_next) / (1.0 - mu_product_next)
        )

    def _kernel(self, h: NAdamHyper) -> KernelCall:
        beta1, beta2 = (float(b) for b in h.betas)
        return KernelCall(
            "nadam",
            ("exp_avg", "exp_avg_sq", None),
            ("step", "mu_product"),
            dict(lr=h.lr, beta1=beta1, beta2=beta2, eps=h.eps,
                 weight_decay=h.weight_decay, momentum_decay=h.momentum_decay),
            on(maximize=h.maximize, weight_decay=h.weight_decay != 0,
               decoupled=h.decoupled_weight_decay),
        )  # fmt: skip
