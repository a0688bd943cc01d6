"""The ``torch._foreach_*`` backend: every optimizer's update as multi-tensor ops, any device.

Each update follows torch's own foreach implementation (``_multi_tensor_<name>`` in
``torch/optim/<name>.py``) op for op, so on CPU a step is bitwise equal to
``torch.optim.<Name>(foreach=True)``; the lecture's forms (the velocity of SGD, ``eps``
inside the root, Adam without bias correction) are the same ops with one line changed.
Tensors are grouped by device and dtype as torch groups them; complex tensors are
stepped as real views of their (real, imag) pairs where torch's foreach path does so.

Under ``torch.compile`` the step traces into one graph: nothing calls ``.item()`` then
(step counters and a tensor ``lr`` stay tensors, and so do the per-tensor scalars
computed from them), so a learning rate that a schedule writes into a tensor ``lr``
changes no guard and causes no recompile.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import KernelCall

NAME = "foreach"
PLANNED = False  # lists handed over every step, as torch's foreach path takes them
COUNTERS = "cpu"  # torch's foreach path keeps step counters on the CPU (capturable aside)


def problem(param: Tensor, state: Mapping[str, Any] | None, call: KernelCall) -> str:
    """Why this backend cannot step ``param`` ('' when it can)."""
    grad = param.grad
    if param.layout != torch.strided or (grad is not None and grad.layout != torch.strided):
        return "sparse tensors (torch's foreach ops take dense tensors only)"
    if not (param.is_floating_point() or param.is_complex()):
        return f"a {param.dtype} parameter (not a floating-point or complex dtype)"
    return _stored(param, call)


def _stored(param: Tensor, call: KernelCall) -> str:
    """Why ``param`` or its state is stored in a format the foreach ops cannot keep."""
    precision = getattr(call, "state_precision", None)
    rounding = getattr(call, "param_rounding", "nearest")
    if precision is None and rounding == "nearest":
        return ""
    from . import storage

    if storage.state_format(param, precision) is not None:
        return f"state_precision={precision!r} (foreach keeps state in the param's dtype)"
    if storage.param_mode(param, rounding) != "nearest":
        return f"param_rounding={rounding!r} (foreach rounds params to nearest)"
    return ""


class Tensors(NamedTuple):
    """One device's and dtype's share of a step, as parallel lists."""

    params: list[Tensor]
    grads: list[Tensor]
    slots: tuple[list[Tensor] | None, ...]  # the KernelCall's three slots (None: unused)
    counters: dict[str, list[Tensor]]  # "step", "mu_product": CPU scalar tensors
    fresh: list[bool]  # the lazy slots created for this step (SGD's momentum buffer)


def run(
    call: KernelCall,
    params: list[Tensor],
    grads: list[Tensor],
    states: list[dict[str, Any]],
    fresh: set[int],
    grad_scale: Tensor | None,
) -> None:
    """One step of ``params`` (``fresh``: ids of params whose lazy slots were just created)."""
    update, flags = UPDATES[call.name], frozenset(call.flags)
    groups = torch.optim.Optimizer._group_tensors_by_device_and_dtype(
        [params, grads], with_indices=True
    )
    for (device_params, device_grads), indices in groups.values():
        if grad_scale is not None:  # as torch's fused kernels: unscaled in place, first
            torch._foreach_div_(device_grads, grad_scale.to(device_params[0].device))
        mine = [states[i] for i in indices]
        slots = tuple([state[key] for state in mine] if key else None for key in call.slots)
        tensors = Tensors(
            list(device_params),
            list(device_grads),
            slots,
            {key: [state[key] for state in mine] for key in call.counters},
            [id(params[i]) in fresh for i in indices],
        )
        if call.name not in COMPLEX_ARITHMETIC:
            _view_as_real(tensors.params, tensors.grads, *filter(None, slots))
        update(tensors, call.hyper, flags)


# torch's SGD steps complex tensors in complex arithmetic, its other optimizers on real
# views of them: the last bit can differ, so do as torch does
COMPLEX_ARITHMETIC = {"sgd"}


def _view_as_real(params: list[Tensor], *others: list[Tensor]) -> None:
    """Complex entries as real views of their (real, imag) pairs, in place in the lists."""
    for i, param in enumerate(params):
        if param.is_complex():
            params[i] = torch.view_as_real(param)
            for tensors in others:
                tensors[i] = torch.view_as_real(tensors[i])


# -- what the updates share ---------------------------------------------------------------


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _value(x: Any) -> Any:
    """A tensor scalar as a Python number, except while compiling (no ``.item()`` there)."""
    return x.item() if isinstance(x, Tensor) and not _compiling() else x


def _addcdiv_(
    targets: list[Tensor], numerators: list[Tensor], denominators: list[Tensor], scale: Any
) -> None:
    """``targets += scale * numerators / denominators``; ``scale``: one number for all, or a
    list of one per tensor.  While compiling, tensor scales multiply the numerators first:
    torch's foreach Adam passes them stacked into one tensor, which dynamo's fake-tensor
    pass refuses for our state ("Expected scalars to be on CPU, got meta"; torch's own
    state reaches the graph through _init_group, which dynamo wraps differently)."""
    scales = scale if isinstance(scale, list) else [scale]
    if scales and isinstance(scales[0], Tensor) and _compiling():
        torch._foreach_addcdiv_(targets, torch._foreach_mul(numerators, scale), denominators)
    elif isinstance(scale, list):
        torch._foreach_addcdiv_(targets, numerators, denominators, scale)
    else:
        torch._foreach_addcdiv_(targets, numerators, denominators, value=scale)


def _add_scaled(targets: list[Tensor], tensors: list[Tensor], scale: Any, *, out: bool = False):
    """``targets += scale * tensors`` (``out``: into new tensors, returned).  While compiling
    a tensor ``scale`` multiplies first: ``alpha=`` would read it on the host (``.item()``)."""
    if isinstance(scale, Tensor) and _compiling():
        tensors, scale = torch._foreach_mul(tensors, scale), 1
    if out:
        return torch._foreach_add(targets, tensors, alpha=scale)
    torch._foreach_add_(targets, tensors, alpha=scale)
    return targets


def _count(steps: list[Tensor]) -> None:
    if not _compiling() and steps[0].is_cpu:
        # one wrapped 1.0 for the whole list: a Python 1 is wrapped again per CPU tensor
        torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
    else:
        torch._foreach_add_(steps, 1)


def _gradient(t: Tensors, lr: Any, weight_decay: Any, flags: frozenset) -> list[Tensor]:
    """The gradient the update follows: negated to maximize, plus L2 weight decay
    ``wd * w``; decoupled weight decay shrinks the params instead, ``w *= 1 - lr * wd``.
    A new list where it differs from the grads (which are never written)."""
    grads = t.grads
    if "maximize" in flags:
        grads = torch._foreach_neg(grads)
    if "weight_decay" not in flags:
        return grads
    if "decoupled" in flags:
        torch._foreach_mul_(t.params, 1 - lr * weight_decay)
    else:  # into the negated copy when there is one (ours to reuse)
        grads = _add_scaled(grads, t.params, weight_decay, out=grads is t.grads)
    return grads


def _root(squares: list[Tensor], eps: float, flags: frozenset) -> list[Tensor]:
    """``sqrt(squares) + eps`` (torch's form) or ``sqrt(squares + eps)`` (the lecture's), new."""
    if "eps_inside" in flags:
        std = torch._foreach_add(squares, eps)
        torch._foreach_sqrt_(std)
    else:
        std = torch._foreach_sqrt(squares)
        torch._foreach_add_(std, eps)
    return std


# -- one function per optimizer ------------------------------------------------------------


def _sgd(t: Tensors, h: dict[str, Any], flags: frozenset) -> None:
    lr, momentum = h["lr"], h["momentum"]
    grads = _gradient(t, lr, h["weight_decay"], flags)
    bufs = t.slots[0]
    if bufs is None:
        _add_scaled(t.params, grads, -lr)  # w = w - lr * dw
        return
    if "lecture" in flags:
        torch._foreach_mul_(bufs, momentum)
        _add_scaled(bufs, grads, -lr)  # v = beta * v - lr * dw
        if "nesterov" in flags:  # w = w + beta * v - lr * dw
            torch._foreach_add_(t.params, bufs, alpha=momentum)
            _add_scaled(t.params, grads, -lr)
        else:
            torch._foreach_add_(t.params, bufs)  # w = w + v
        return
    if any(t.fresh):  # b = g on the first step: tensor by tensor, as torch's foreach path
        for buf, grad, fresh in zip(bufs, grads, t.fresh, strict=True):
            if fresh:
                buf.copy_(grad)
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - h["dampening"])
    else:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads, alpha=1 - h["dampening"])
    if "nesterov" in flags:  # w = w - lr * (g + mu * b)
        grads = _add_scaled(grads, bufs, momentum, out=grads is t.grads)
    else:
        grads = bufs
    _add_scaled(t.params, grads, -lr)


def _adagrad(t: Tensors, h: dict[str, Any], flags: frozenset) -> None:
    steps, sums = t.counters["step"], t.slots[0]
    _count(steps)
    grads = _gradient(t, h["lr"], h["weight_decay"], flags)
    minus_clr = [-h["lr"] / (1 + (_value(step) - 1) * h["lr_decay"]) for step in steps]
    torch._foreach_addcmul_(sums, grads, grads, value=1)  # dw_squared += dw * dw
    std = _root(sums, h["eps"], flags)
    if grads is not t.grads:
        torch._foreach_mul_(grads, minus_clr)
        numerator = grads
    else:
        numerator = torch._foreach_mul(grads, minus_clr)
    torch._foreach_addcdiv_(t.params, numerator, std)  # w = w - lr * dw / std


def _rmsprop(t: Tensors, h: dict[str, Any], flags: frozenset) -> None:
    square_avgs, bufs, grad_avgs = t.slots
    lr, alpha = h["lr"], h["alpha"]
    _count(t.counters["step"])
    grads = _gradient(t, lr, h["weight_decay"], flags)
    torch._foreach_mul_(square_avgs, alpha)  # dr * dw_squared + (1 - dr) * dw * dw
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
    variance = square_avgs
    if grad_avgs is not None:  # centered: E[g^2] - E[g]^2
        torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
        variance = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
    std = _root(variance, h["eps"], flags)
    if bufs is not None:  # b = momentum * b + dw / std;  w = w - lr * b
        torch._foreach_mul_(bufs, h["momentum"])
        torch._foreach_addcdiv_(bufs, grads, std)
        _add_scaled(t.params, bufs, -lr)
    else:
        _addcdiv_(t.params, grads, std, -lr)  # w = w - lr * dw / std


def _adam(t: Tensors, h: dict[str, Any], flags: frozenset) -> None:
    exp_avgs, exp_avg_sqs, max_exp_avg_sqs = t.slots
    steps = t.counters["step"]
    # torch's eager foreach Adam refuses a tensor lr (capturable aside): it acts as its value
    lr, beta1, beta2 = _value(h["lr"]), h["beta1"], h["beta2"]
    _count(steps)
    grads = _gradient(t, lr, h["weight_decay"], flags)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)  # beta1 * m + (1 - beta1) * dw
    torch._foreach_mul_(exp_avg_sqs, beta2)  # beta2 * v + (1 - beta2) * dw * dw
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    del grads
    if "bias_correction" in flags:
        bias_correction1 = [1 - beta1 ** _value(step) for step in steps]
        bias_correction2 = [1 - beta2 ** _value(step) for step in steps]
    else:
        bias_correction1 = bias_correction2 = [1.0] * len(steps)
    # w = w - lr * (m / bc1) / (sqrt(v / bc2) + eps), the scalars folded out as torch does
    step_size = [(lr / bc) * -1 for bc in bias_correction1]
    if max_exp_avg_sqs is not None:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        exp_avg_sqs = max_exp_avg_sqs
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, [bc**0.5 for bc in bias_correction2])
    torch._foreach_add_(denom, h["eps"])
    _addcdiv_(t.params, exp_avgs, denom, step_size)


def _nadam(t: Tensors, h: dict[str, Any], flags: frozenset) -> None:
    exp_avgs, exp_avg_sqs, _ = t.slots
    steps, mu_products = t.counters["step"], t.counters["mu_product"]
    beta1, beta2, decay = h["beta1"], h["beta2"], h["momentum_decay"]
    _count(steps)
    grads = _gradient(t, h["lr"], h["weight_decay"], flags)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    ts = [_value(step) for step in steps]
    mus = [beta1 * (1.0 - 0.5 * (0.96 ** (t * decay))) for t in ts]  # mu_t
    mu_nexts = [beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * decay))) for t in ts]  # mu_{t+1}
    torch._foreach_mul_(mu_products, mus)
    torch._foreach_div_(denom, [(1 - beta2**t) ** 0.5 for t in ts])
    torch._foreach_add_(denom, h["eps"])
    lr, products = _value(h["lr"]), [_value(p) for p in mu_products]
    # w = w - lr (1 - mu_t) / (1 - prod mu_1..t) dw / denom
    #       - lr mu_{t+1} / (1 - prod mu_1..t+1) m / denom
    grad_steps = [(lr * (1.0 - mu) / (1.0 - p)) * -1 for p, mu in zip(products, mus, strict=True)]
    moment_steps = [
        (lr * mu_next / (1.0 - p * mu_next)) * -1
        for p, mu_next in zip(products, mu_nexts, strict=True)
    ]
    _addcdiv_(t.params, grads, denom, grad_steps)
    _addcdiv_(t.params, exp_avgs, denom, moment_steps)


UPDATES = {"sgd": _sgd, "adagrad": _adagrad, "rmsprop": _rmsprop, "adam": _adam, "nadam": _nadam}
