r"""Adam and AdamW: momentum and RMSProp combined, with bias correction (slides 9-10).

The lecture's pseudo-code::

    first_moment  = beta1 * first_moment  + (1 - beta1) * dw
    second_moment = beta2 * second_moment + (1 - beta2) * dw * dw
    first  = first_moment  / (1 - beta1 ** t)         # bias correction
    second = second_moment / (1 - beta2 ** t)
    w = w - lr * first / (sqrt(second) + eps)

Both moments start at zero, so without the correction the early averages are
too small; the second one much more so (``1 - beta2 = 0.001``), which makes the
first steps far larger than ``lr``.  ``bias_correction=False`` is slide 9's
uncorrected form, kept to show exactly that.

``amsgrad=True`` divides by the running maximum of ``second_moment`` (Reddi et
al. 2018).  ``weight_decay`` adds ``weight_decay * w`` to the gradient (L2), or
with ``decoupled_weight_decay=True`` (which is what :class:`AdamW` is) shrinks
the weights directly, ``w = w * (1 - lr * weight_decay)``, outside the moments
(Loshchilov & Hutter 2019).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..kernels import KernelCall, on
from .base import Optimizer, keep, next_step, step_counter, zeros_like
from .checks import check_betas, check_nonnegative

__all__ = ["Adam", "AdamW"]


class AdamHyper(NamedTuple):
    lr: float | Tensor
    betas: tuple[float | Tensor, float | Tensor]
    eps: float
    weight_decay: float
    amsgrad: bool
    maximize: bool
    differentiable: bool
    decoupled_weight_decay: bool
    bias_correction: bool


class Adam(Optimizer):
    __doc__ = __doc__
    Hyper = AdamHyper
    sparse_hint = ", please consider SparseAdam instead"

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
        state_precision: str | None = None,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay, bias_correction=bias_correction,
            state_precision=state_precision, param_rounding=param_rounding,
            rounding_seed=rounding_seed,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_nonnegative("learning rate", "lr", group["lr"], tensor_ok=True)
        check_nonnegative("epsilon value", "eps", group["eps"])
        check_betas(group["betas"])
        check_nonnegative("weight_decay value", "weight_decay", group["weight_decay"])

    def _new_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {
            "step": step_counter(),
            "exp_avg": zeros_like(param),
            "exp_avg_sq": zeros_like(param),
        }
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_like(param)
        return state

    @staticmethod
    def _update(param: Tensor, grad: Tensor, state: dict[str, Any], h: AdamHyper) -> None:
        t = next_step(state)
        # tensor betas are read as numbers (the same values torch uses) unless autograd needs them
        beta1, beta2 = (b if getattr(b, "requires_grad", False) else float(b) for b in h.betas)
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            if h.decoupled_weight_decay:
                param.mul_(1 - h.lr * h.weight_decay)  # AdamW: w = w * (1 - lr * wd)
            else:
                g = g.add(param, alpha=h.weight_decay)  # L2: dw = dw + wd * w

        first_moment, second_moment = state["exp_avg"], state["exp_avg_sq"]
        first_moment.lerp_(g, 1 - beta1)  # beta1 * m + (1 - beta1) * dw
        second_moment.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # beta2 * v + (1 - beta2) * dw^2
        if h.amsgrad:
            max_second = state["max_exp_avg_sq"]
            max_second.copy_(torch.maximum(keep(max_second, h.differentiable), second_moment))
            second_moment = max_second

        if h.bias_correction:
            bias_correction1, bias_correction2 = 1 - beta1**t, 1 - beta2**t
        else:
            bias_correction1 = bias_correction2 = 1.0
        # w = w - lr * (m / bc1) / (sqrt(v / bc2) + eps), with the scalar factors folded
        # out of the tensor expression exactly as torch folds them
        step_size = h.lr / bias_correction1
        denom = (second_moment.sqrt() / bias_correction2**0.5).add_(h.eps)
        first_moment = keep(first_moment, h.differentiable)
        if isinstance(step_size, Tensor) and step_size.requires_grad:
            param.sub_(step_size * first_moment / denom)
        else:
            param.addcdiv_(first_moment, denom, value=-step_size)

    def _kernel(self, h: AdamHyper) -> KernelCall:
        beta1, beta2 = (float(b) for b in h.betas)
        return KernelCall(
            "adam",
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if h.amsgrad else None),
            ("step",),
            dict(lr=h.lr, beta1=beta1, beta2=beta2, eps=h.eps,
                 weight_decay=h.weight_decay),
            on(maximize=h.maximize, weight_decay=h.weight_decay != 0,
               decoupled=h.decoupled_weight_decay, bias_correction=h.bias_correction),
        )  # fmt: skip


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019); see :class:`Adam`."""

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        bias_correction: bool = True,
        state_precision: str | None = None,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad,
            maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused, decoupled_weight_decay=True,
            bias_correction=bias_correction, state_precision=state_precision,
            param_rounding=param_rounding, rounding_seed=rounding_seed,
        )  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        # as torch: whatever was loaded, AdamW decays decoupled
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
