r"""SGD, SGD with momentum, and Nesterov momentum (lecture slides 2-6).

torch's form (the default) keeps a momentum buffer ``b`` that does not carry the
learning rate::

    b = mu * b + (1 - dampening) * g        (b = g on the first step)
    w = w - lr * (g + mu * b  if nesterov else  b)

The lecture's form (``momentum_form="lecture"``, slide 3) keeps a velocity ``v``
that does::

    v = beta * v - lr * g
    w = w + v

With ``v = -lr * b`` the two are the same trajectory while the learning rate is
constant; once it changes (a schedule) they differ: torch's buffer applies the
*new* lr to all past gradients, the lecture's velocity keeps each gradient's
own lr.  The velocity is stored under its own state key, ``velocity``, so it is
never mistaken for torch's ``momentum_buffer``.

Nesterov momentum comes in two forms.  ``nesterov_form="reformulated"`` (the
default, as torch and Sutskever et al. 2013 write it) needs only the gradient
at the current weights.  ``nesterov_form="lookahead"`` is slide 4 verbatim: the
gradient is evaluated at the look-ahead point ``w + beta * v`` (torch form:
``w - lr * mu * b``), so ``step`` needs a closure that recomputes it; the
update is then plain momentum with that gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..kernels import KernelCall, on
from .base import Optimizer
from .checks import check, check_choice, check_nonnegative, check_number

__all__ = ["SGD"]


class SGDHyper(NamedTuple):
    lr: float | Tensor
    momentum: float
    dampening: float
    weight_decay: float | Tensor
    nesterov: bool
    maximize: bool
    differentiable: bool
    momentum_form: str
    nesterov_form: str


def _add_scaled_(target: Tensor, value: Tensor, scale: float | Tensor) -> Tensor:
    """``target += scale * value``, keeping autograd's view of a tensor ``scale``."""
    if isinstance(scale, Tensor) and scale.requires_grad:
        return target.addcmul_(value, scale)
    return target.add_(value, alpha=scale)


class SGD(Optimizer):
    __doc__ = __doc__
    Hyper = SGDHyper
    supports_sparse = True

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        momentum_form: str = "torch",
        nesterov_form: str = "reformulated",
        state_precision: str | None = None,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize, foreach=foreach,
            differentiable=differentiable, fused=fused,
            momentum_form=momentum_form, nesterov_form=nesterov_form,
            state_precision=state_precision, param_rounding=param_rounding,
            rounding_seed=rounding_seed,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        check_nonnegative("learning rate", "lr", group["lr"], tensor_ok=True)
        check_nonnegative("momentum value", "momentum", group["momentum"])
        check_nonnegative(
            "weight_decay value", "weight_decay", group["weight_decay"], tensor_ok=True
        )
        dampening = check_number("dampening", group["dampening"])
        check(0.0 <= dampening <= 1.0, "dampening value", dampening, "dampening", "in [0, 1]")
        if group["nesterov"] and (group["momentum"] <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        check_choice("momentum_form", group["momentum_form"], ("torch", "lecture"))
        check_choice("nesterov_form", group["nesterov_form"], ("reformulated", "lookahead"))
        if group["momentum_form"] == "lecture" and dampening != 0:
            raise ValueError(
                f"Invalid dampening value: {dampening} (momentum_form='lecture' has no dampening)"
            )
        if group["nesterov_form"] == "lookahead" and not group["nesterov"]:
            raise ValueError("nesterov_form='lookahead' requires nesterov=True")

    def _has_state(self, group: dict[str, Any]) -> bool:
        return group["momentum"] != 0

    def _new_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {}  # the buffer is born from the first gradient (torch) or zero (lecture)

    @staticmethod
    def _update(param: Tensor, grad: Tensor, state: dict[str, Any], h: SGDHyper) -> None:
        g = -grad if h.maximize else grad
        if h.weight_decay != 0:
            if isinstance(h.weight_decay, Tensor) and h.weight_decay.requires_grad:
                g = g.addcmul_(param.clone(), h.weight_decay)
            else:
                g = g.add(param, alpha=h.weight_decay)
        plain_momentum = h.nesterov_form == "lookahead"  # the gradient was taken at w + beta*v

        if h.momentum != 0 and h.momentum_form == "lecture":
            v = state.get("velocity")
            if v is None:
                v = state["velocity"] = torch.zeros_like(param).detach()
            _add_scaled_(v.mul_(h.momentum), g, -h.lr)  # v = beta * v - lr * dw
            if h.nesterov and not plain_momentum:
                # w = w + beta * v - lr * dw: the same step taken from the look-ahead point
                _add_scaled_(param.add_(v, alpha=h.momentum), g, -h.lr)
            else:
                param.add_(v)  # w = w + v
            return

        if h.momentum != 0:
            b = state.get("momentum_buffer")
            if b is None:
                b = state["momentum_buffer"] = g.detach().clone()
            else:
                b.mul_(h.momentum).add_(g, alpha=1 - h.dampening)
            g = g.add(b, alpha=h.momentum) if h.nesterov and not plain_momentum else b
        _add_scaled_(param, g, -h.lr)  # w = w - lr * dw

    def _kernel(self, h: SGDHyper) -> KernelCall:
        buffer = "velocity" if h.momentum_form == "lecture" else "momentum_buffer"
        return KernelCall(
            "sgd",
            (buffer if h.momentum != 0 else None, None, None),
            (),
            dict(lr=h.lr, momentum=h.momentum, dampening=h.dampening,
                 weight_decay=h.weight_decay),
            on(maximize=h.maximize, weight_decay=h.weight_decay != 0,
               nesterov=h.nesterov and h.nesterov_form != "lookahead",
               lecture=h.momentum_form == "lecture"),
            lazy=True,
        )  # fmt: skip

    # -- Nesterov's look-ahead form -------------------------------------------

    def step(self, closure: Any = None) -> Any:
        lookahead = [
            g for g in self.param_groups if g["nesterov"] and g["nesterov_form"] == "lookahead"
        ]
        if not lookahead:
            return super().step(closure)
        if closure is None:
            raise RuntimeError(
                "nesterov_form='lookahead' evaluates the gradient at w + beta * v, so "
                "step() needs a closure that recomputes the loss and the gradients"
            )
        saved = []
        with torch.no_grad():
            for group in lookahead:
                for param in group["params"]:
                    ahead = self._lookahead_offset(self.state.get(param, {}), group)
                    if ahead is not None:
                        saved.append((param, param.detach().clone()))
                        param.add_(ahead)
        try:
            with torch.enable_grad():
                loss = closure()
        finally:
            with torch.no_grad():
                for param, weights in saved:
                    param.copy_(weights)  # exact restore: (w + d) - d may round
        super().step()
        return loss

    @staticmethod
    def _lookahead_offset(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
        """How far the next momentum step moves w before its gradient term: the look-ahead."""
        if "velocity" in state:
            return group["momentum"] * state["velocity"]
        if "momentum_buffer" in state:
            return (-group["lr"] * group["momentum"]) * state["momentum_buffer"]
        return None
