"""The optimizers and schedules the lab compares, by the names the command line accepts.

An optimizer entry is an ``optimlab`` class and its keyword arguments (besides
``lr``); a schedule entry turns the tuned peak learning rate and the run's
length into an :mod:`optimlab.schedules` value, whose SPEC text goes into the
run's configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import optimlab
from optimlab import schedules as S

__all__ = ["OPTIMIZERS", "SCHEDULES", "OptimizerSpec", "ScheduleSpec", "build_optimizer"]


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    label: str
    cls: str  # attribute of ``optimlab``
    kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = "sgd"  # which learning-rate guess of a problem applies (problems.FAMILIES)
    lecture: str = ""
    #: the dtype the model's parameters are stored (and computed) in
    param_dtype: str = "float32"
    #: bumped when the library changes what this optimizer computes, so the lab re-runs its
    #: stored runs (and only its): 1 for 8-bit state, whose stores now round stochastically
    revision: int = 0


# sorted by the lecture's order
OPTIMIZERS: dict[str, OptimizerSpec] = {
    o.name: o
    for o in (
        OptimizerSpec("sgd", "SGD", "SGD", {}, "sgd", "slide 3: w -= lr * dw"),
        OptimizerSpec(
            "momentum", "SGD + momentum", "SGD", {"momentum": 0.9}, "momentum",
            "slides 3, 5 in torch's form: buffer b = beta b + dw; w -= lr b (beta = 0.9)",
        ),
        OptimizerSpec(
            "nesterov", "Nesterov", "SGD", {"momentum": 0.9, "nesterov": True}, "momentum",
            "slide 4: gradient at the look-ahead point (torch's reformulation)",
        ),
        OptimizerSpec("adagrad", "Adagrad", "Adagrad", {}, "adagrad", "slide 7"),
        OptimizerSpec("rmsprop", "RMSProp", "RMSprop", {"alpha": 0.99}, "rmsprop", "slide 8"),
        OptimizerSpec("adam", "Adam", "Adam", {"betas": [0.9, 0.999]}, "adam", "slide 10"),
        OptimizerSpec(
            "adam_nobc", "Adam, no bias correction", "Adam",
            {"betas": [0.9, 0.999], "bias_correction": False}, "adam", "slide 9",
        ),
        OptimizerSpec(
            "adamw", "AdamW", "AdamW", {"betas": [0.9, 0.999], "weight_decay": 0.01}, "adam",
            "Adam with decoupled weight decay 0.01 (Loshchilov & Hutter 2019)",
        ),
        OptimizerSpec(
            "nadam", "NAdam", "NAdam", {"betas": [0.9, 0.999]}, "adam",
            "Adam with Nesterov momentum (Dozat 2016); not in the default studies",
        ),
        # the lecture's own forms, run beside torch's at the same lr (never tuned alone)
        OptimizerSpec(
            "momentum_lecture", "momentum, lecture's velocity", "SGD",
            {"momentum": 0.9, "momentum_form": "lecture"}, "momentum",
            "slide 3 verbatim: v = beta v - lr dw; w = w + v (the velocity carries the lr)",
        ),
        OptimizerSpec(
            "nesterov_lookahead", "Nesterov, look-ahead gradient", "SGD",
            {"momentum": 0.9, "nesterov": True, "nesterov_form": "lookahead"}, "momentum",
            "slide 4 verbatim: the gradient evaluated at w + beta v",
        ),
        OptimizerSpec(
            "adagrad_eps_inside", "Adagrad, eps inside the root", "Adagrad",
            {"eps_inside_sqrt": True}, "adagrad", "slide 7 verbatim: dw / sqrt(sum + eps)",
        ),
        OptimizerSpec(
            "rmsprop_eps_inside", "RMSProp, eps inside the root", "RMSprop",
            {"alpha": 0.99, "eps_inside_sqrt": True}, "rmsprop",
            "slide 8 verbatim: dw / sqrt(avg + eps)",
        ),
        # Adam with its state or its parameters stored in low precision (optimlab's
        # state_precision and param_rounding), run beside float32 Adam at its lr
        OptimizerSpec(
            "adam_bf16_state", "Adam, bf16 state", "Adam",
            {"betas": [0.9, 0.999], "state_precision": "bf16"}, "adam",
            "Adam, both moments stored in bfloat16 with stochastic rounding",
        ),
        OptimizerSpec(
            "adam_8bit_state", "Adam, 8-bit state", "Adam",
            {"betas": [0.9, 0.999], "state_precision": "8bit"}, "adam",
            "Adam, both moments in 8-bit blocks of 256 with a float32 absmax each, rounded "
            "stochastically (tensors under 4,096 elements stay float32)",
            revision=1,
        ),
        *(
            OptimizerSpec(
                f"adam_bf16_{rounding}", f"Adam, bf16 weights, {how}", "Adam",
                {"betas": [0.9, 0.999], "state_precision": "fp32", "param_rounding": rounding},
                "adam", f"Adam on a bfloat16 model (float32 state), {text}",
                param_dtype="bfloat16",
            )
            for rounding, how, text in (
                ("nearest", "round to nearest", "each updated weight rounded to the nearest"),
                ("stochastic", "stochastic rounding", "each updated weight rounded up or down "
                 "at random, unbiased"),
                ("kahan", "Kahan summation", "rounded to nearest, a bfloat16 buffer keeping "
                 "what each rounding lost"),
            )
        ),
    )
}  # fmt: skip

#: the lecture's form of each: (torch's form, the lecture's), compared in "The lecture's forms"
FORMS = {
    "momentum_lecture": "momentum",
    "nesterov_lookahead": "nesterov",
    "adagrad_eps_inside": "adagrad",
    "rmsprop_eps_inside": "rmsprop",
}


#: the low-precision variants: (float32 group they run beside, what is stored low)
PRECISIONS = {
    "adam_bf16_state": ("adam", "state"),
    "adam_8bit_state": ("adam", "state"),
    "adam_bf16_nearest": ("adam", "params"),
    "adam_bf16_stochastic": ("adam", "params"),
    "adam_bf16_kahan": ("adam", "params"),
}
#: optimizers that only run beside another one, at its tuned lr: their source
BESIDE = {**FORMS, **{name: source for name, (source, _) in PRECISIONS.items()}}


def build_optimizer(
    name: str, params: list[torch.Tensor], lr: float, seed: int = 0
) -> torch.optim.Optimizer:
    """``seed`` seeds stochastic rounding (a run's seed: seeds differ in their rounding too)."""
    spec = OPTIMIZERS[name]
    kwargs = dict(spec.kwargs)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if "state_precision" in kwargs or "param_rounding" in kwargs:
        kwargs["rounding_seed"] = seed
    return getattr(optimlab, spec.cls)(params, lr=lr, **kwargs)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    label: str
    make: Callable[[float, int], S.Schedule]  # (peak lr, steps) -> schedule
    text: str


def _warm(steps: int) -> int:
    return max(1, steps // 10)


def _with_warmup(base: Callable[[float, int], S.Schedule]) -> Callable[[float, int], S.Schedule]:
    def make(lr: float, steps: int) -> S.Schedule:
        w = _warm(steps)
        return S.warmup(w, base(lr, steps - w))

    return make


def _constant(lr: float, steps: int) -> S.Schedule:
    return S.constant(lr)


def _step(lr: float, steps: int) -> S.Schedule:
    return S.step_decay(lr, every=max(1, math.ceil(steps / 3)), gamma=0.1)


def _cosine(lr: float, steps: int) -> S.Schedule:
    return S.cosine(lr, max(1, steps))


def _linear(lr: float, steps: int) -> S.Schedule:
    return S.linear(lr, max(1, steps))


def _inv_sqrt(lr: float, steps: int) -> S.Schedule:
    return S.inverse_sqrt(lr, timescale=_warm(steps))


def _warmup_inv_sqrt(lr: float, steps: int) -> S.Schedule:
    w = _warm(steps)  # Vaswani et al. 2017: lr * min(t / w, sqrt(w / t))
    return S.warmup(w, S.inverse_sqrt(lr, timescale=w, offset=w))


SCHEDULES: dict[str, ScheduleSpec] = {
    s.name: s
    for s in (
        ScheduleSpec("constant", "constant", _constant, "the tuned lr at every step"),
        ScheduleSpec("step", "step decay", _step, "x0.1 after each third of the run"),
        ScheduleSpec("cosine", "cosine", _cosine, "cosine annealing to 0 over the run"),
        ScheduleSpec("linear", "linear decay", _linear, "straight line to 0 over the run"),
        ScheduleSpec(
            "inv_sqrt", "inverse sqrt", _inv_sqrt,
            "flat for the first 10 %, then lr * sqrt(t0 / t) (ends at lr / sqrt(10))",
        ),
        ScheduleSpec(
            "warmup_constant", "warmup + constant", _with_warmup(_constant),
            "linear warmup over the first 10 %, then constant",
        ),
        ScheduleSpec(
            "warmup_cosine", "warmup + cosine", _with_warmup(_cosine),
            "linear warmup over the first 10 %, then cosine to 0",
        ),
        ScheduleSpec(
            "warmup_linear", "warmup + linear", _with_warmup(_linear),
            "linear warmup over the first 10 %, then linear decay to 0",
        ),
        ScheduleSpec(
            "warmup_inv_sqrt", "warmup + inverse sqrt", _warmup_inv_sqrt,
            "Vaswani et al. 2017: lr * min(t / w, sqrt(w / t)), w = 10 % of the run",
        ),
    )
}  # fmt: skip

#: schedules whose value decays over the run (claim 6 compares them with ``constant``)
DECAYING = ("step", "cosine", "linear", "inv_sqrt")
