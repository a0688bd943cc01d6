"""Schedule values against independent oracles.

1. torch's schedulers, stepped on a real optimizer for hundreds of steps (what
   users actually get from torch, not its ``_get_closed_form_lr``).
2. Published formulas (HF transformers, Vaswani et al.), written out here.
3. Hand-computed values at the off-by-one boundaries.

Tolerance against torch: rel=1e-12, abs=1e-14 * lr.  Several torch schedulers
(ExponentialLR, LinearLR, PolynomialLR, CosineAnnealingLR) compute each lr
recursively from the previous one; that drifts from the closed form by up to
~1e-14 relative over 400 steps (measured).  OneCycleLR's linear anneal writes
the same line as ``(end - start) * pct + start``, which differs by ~1e-17
absolute where the values are tiny.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim import lr_scheduler as L

from optimlab.schedules import (
    constant,
    cosine,
    cosine_restarts,
    exponential,
    inverse_sqrt,
    join,
    linear,
    multistep,
    one_cycle,
    one_cycle_momentum,
    polynomial,
    scale,
    step_decay,
    warmup,
    warmup_stable_decay,
)

REL = 1e-12


def torch_trace(make_scheduler, lr, steps, key="lr", optimizer=torch.optim.SGD, **opt_kwargs):
    """The value of ``group[key]`` that each of ``steps`` optimizer steps uses under torch."""
    param = torch.zeros(2, requires_grad=True)
    opt = optimizer([param], lr=lr, **opt_kwargs)
    sched = make_scheduler(opt)
    trace = []
    for _ in range(steps):
        trace.append(opt.param_groups[0][key])
        param.grad = torch.ones_like(param)
        opt.step()
        sched.step()
    return trace


TORCH_CASES = [
    # (schedule, torch scheduler on an optimizer whose lr is the schedule's lr, steps)
    (constant(0.1), lambda o: L.ConstantLR(o, factor=1.0), 50),
    (step_decay(0.1, 7, 0.5), lambda o: L.StepLR(o, 7, 0.5), 400),
    (step_decay(0.1, 1, 0.9), lambda o: L.StepLR(o, 1, 0.9), 400),
    (
        multistep(0.1, [10, 50, 51, 200], 0.3),
        lambda o: L.MultiStepLR(o, [10, 50, 51, 200], 0.3),
        400,
    ),
    (exponential(0.1, 0.99), lambda o: L.ExponentialLR(o, 0.99), 400),
    (exponential(0.1, 1.0), lambda o: L.ExponentialLR(o, 1.0), 50),
    # torch's cosine rises again after T_max; ours stays flat, so compare t <= steps only.
    (cosine(0.1, 300), lambda o: L.CosineAnnealingLR(o, 300), 301),
    (cosine(0.1, 300, final_lr=1e-3), lambda o: L.CosineAnnealingLR(o, 300, 1e-3), 301),
    (cosine(0.1, 1), lambda o: L.CosineAnnealingLR(o, 1), 2),
    (linear(0.1, 300), lambda o: L.LinearLR(o, 1.0, 0.0, 300), 400),
    (linear(0.1, 300, final_lr=1e-3), lambda o: L.LinearLR(o, 1.0, 0.01, 300), 400),
    (polynomial(0.1, 300, 2.0), lambda o: L.PolynomialLR(o, 300, 2.0), 400),
    (polynomial(0.1, 250, 0.5), lambda o: L.PolynomialLR(o, 250, 0.5), 400),
    (polynomial(0.1, 300, 1.0), lambda o: L.PolynomialLR(o, 300, 1.0), 400),
    (cosine_restarts(0.1, 7), lambda o: L.CosineAnnealingWarmRestarts(o, 7), 400),
    (
        cosine_restarts(0.1, 10, mult=2, final_lr=1e-4),
        lambda o: L.CosineAnnealingWarmRestarts(o, 10, 2, 1e-4),
        400,
    ),
    (
        cosine_restarts(0.1, 3, mult=3),
        lambda o: L.CosineAnnealingWarmRestarts(o, 3, 3),
        400,
    ),
    # OneCycleLR raises past total_steps; its last step is total_steps - 1.
    (one_cycle(0.1, 400), lambda o: L.OneCycleLR(o, 0.1, total_steps=400), 400),
    (
        one_cycle(0.1, 250, pct_start=0.4, div_factor=10.0, final_div_factor=100.0),
        lambda o: L.OneCycleLR(
            o, 0.1, total_steps=250, pct_start=0.4, div_factor=10.0, final_div_factor=100.0
        ),
        250,
    ),
    (
        one_cycle(0.1, 400, anneal="linear", three_phase=True),
        lambda o: L.OneCycleLR(o, 0.1, total_steps=400, anneal_strategy="linear", three_phase=True),
        400,
    ),
    (
        one_cycle(0.1, 300, pct_start=0.2, three_phase=True),
        lambda o: L.OneCycleLR(o, 0.1, total_steps=300, pct_start=0.2, three_phase=True),
        300,
    ),
]


@pytest.mark.parametrize(
    ("schedule", "make_scheduler", "steps"), TORCH_CASES, ids=[c[0].spec for c in TORCH_CASES]
)
def test_matches_torch_scheduler(schedule, make_scheduler, steps):
    lr = schedule.lr  # torch schedulers start from the optimizer's lr (OneCycleLR: max_lr)
    expected = torch_trace(make_scheduler, lr, steps, momentum=0.9)
    ours = [schedule(t) for t in range(steps)]
    assert ours == pytest.approx(expected, rel=REL, abs=1e-14 * lr)


@pytest.mark.parametrize(
    ("steps", "pct_start", "anneal", "three_phase"),
    [(400, 0.3, "cos", False), (250, 0.4, "linear", False), (300, 0.2, "cos", True)],
)
@pytest.mark.parametrize(
    ("optimizer", "key", "kwargs"),
    [
        (torch.optim.SGD, "momentum", {"momentum": 0.9}),
        (torch.optim.Adam, "betas", {}),
    ],
)
def test_one_cycle_momentum_matches_torch(
    steps, pct_start, anneal, three_phase, optimizer, key, kwargs
):
    def make(o):
        return L.OneCycleLR(
            o,
            0.1,
            total_steps=steps,
            pct_start=pct_start,
            anneal_strategy=anneal,
            three_phase=three_phase,
            base_momentum=0.8,
            max_momentum=0.9,
        )

    expected = torch_trace(make, 0.1, steps, key=key, optimizer=optimizer, **kwargs)
    if key == "betas":
        expected = [beta1 for beta1, _ in expected]
    schedule = one_cycle_momentum(steps, 0.8, 0.9, pct_start, anneal, three_phase)
    assert [schedule(t) for t in range(steps)] == pytest.approx(expected, rel=REL, abs=1e-15)


# --- published formulas, written out independently ---------------------------


def hf_cosine_with_warmup(t, warmup_steps, total):
    # transformers.optimization._get_cosine_schedule_with_warmup_lr_lambda, num_cycles=0.5
    if t < warmup_steps:
        return t / max(1, warmup_steps)
    progress = (t - warmup_steps) / max(1, total - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def hf_linear_with_warmup(t, warmup_steps, total):
    if t < warmup_steps:
        return t / max(1, warmup_steps)
    return max(0.0, (total - t) / max(1, total - warmup_steps))


def hf_polynomial_with_warmup(t, warmup_steps, total, lr_init, lr_end, power):
    if t < warmup_steps:
        return t / max(1, warmup_steps)
    if t > total:
        return lr_end / lr_init
    decay = (lr_init - lr_end) * (1 - (t - warmup_steps) / (total - warmup_steps)) ** power
    return (decay + lr_end) / lr_init


def hf_inverse_sqrt(t, warmup_steps, timescale):
    if t < warmup_steps:
        return t / max(1, warmup_steps)
    shift = timescale - warmup_steps
    return 1.0 / math.sqrt((t + shift) / timescale)


def hf_wsd(t, warmup_steps, stable, decay_steps, decay_type, min_lr_ratio):
    # transformers get_wsd_schedule with warmup_type="linear", num_cycles=0.5
    if t < warmup_steps:
        factor = t / max(1, warmup_steps)
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    if t < warmup_steps + stable:
        return 1.0
    if t < warmup_steps + stable + decay_steps:
        progress = (t - warmup_steps - stable) / max(1, decay_steps)
        if decay_type == "linear":
            factor = 1.0 - progress
        else:
            factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
        return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


def vaswani(t, d_model, warmup_steps):
    # "Attention Is All You Need", eq. (3); the paper counts steps from 1.
    if t == 0:
        return 0.0
    return d_model**-0.5 * min(t**-0.5, t * warmup_steps**-1.5)


LR = 3e-4
FORMULA_CASES = [
    # (schedule, oracle(t), steps to compare, where it holds)
    (warmup(100, cosine(LR, 900)), lambda t: LR * hf_cosine_with_warmup(t, 100, 1000), 1000),
    (warmup(1, cosine(LR, 99)), lambda t: LR * hf_cosine_with_warmup(t, 1, 100), 100),
    (warmup(100, linear(LR, 900)), lambda t: LR * hf_linear_with_warmup(t, 100, 1000), 1200),
    (warmup(50, constant(LR)), lambda t: LR * min(1.0, t / 50), 200),
    (
        warmup(100, polynomial(LR, 900, 2.0, final_lr=1e-7)),
        lambda t: LR * hf_polynomial_with_warmup(t, 100, 1000, LR, 1e-7, 2.0),
        1200,
    ),
    (
        warmup(100, inverse_sqrt(LR, 100, offset=100)),
        lambda t: LR * hf_inverse_sqrt(t, 100, 100),
        2000,
    ),
    (
        warmup(100, inverse_sqrt(LR, 1000, offset=1000)),
        lambda t: LR * hf_inverse_sqrt(t, 100, 1000),
        3000,
    ),
    (
        warmup(4000, inverse_sqrt(512**-0.5 * 4000**-0.5, 4000, offset=4000)),
        lambda t: vaswani(t, 512, 4000),
        12000,
    ),
    (
        warmup_stable_decay(LR, 100, 500, 400),
        lambda t: LR * hf_wsd(t, 100, 500, 400, "cosine", 0.0),
        1200,
    ),
    (
        warmup_stable_decay(LR, 100, 500, 400, decay="linear"),
        lambda t: LR * hf_wsd(t, 100, 500, 400, "linear", 0.0),
        1200,
    ),
    # HF's warmup starts at min_lr_ratio * lr, ours at 0: equal from the end of warmup on.
    (
        join([constant(0.0), warmup_stable_decay(LR, 0, 500, 400, final_lr=LR / 10)], [100]),
        lambda t: LR * hf_wsd(t, 100, 500, 400, "cosine", 0.1) if t >= 100 else 0.0,
        1200,
    ),
]


@pytest.mark.parametrize(
    ("schedule", "oracle", "steps"), FORMULA_CASES, ids=[c[0].spec for c in FORMULA_CASES]
)
def test_matches_published_formula(schedule, oracle, steps):
    expected = [oracle(t) for t in range(steps)]
    assert [schedule(t) for t in range(steps)] == pytest.approx(expected, rel=REL, abs=1e-18)


# --- boundaries: t = every-1, every, every+1; milestone at t; end of warmup; steps, steps+1 --

c = math.cos
BOUNDARIES = [
    (step_decay(1.0, 10, 0.5), {0: 1.0, 9: 1.0, 10: 0.5, 11: 0.5, 19: 0.5, 20: 0.25, 21: 0.25}),
    (multistep(1.0, [5, 8], 0.1), {4: 1.0, 5: 0.1, 6: 0.1, 7: 0.1, 8: 0.01, 9: 0.01}),
    (exponential(1.0, 0.5), {0: 1.0, 1: 0.5, 3: 0.125}),
    (cosine(1.0, 10), {0: 1.0, 5: 0.5, 9: (1 + c(0.9 * math.pi)) / 2, 10: 0.0, 11: 0.0}),
    (cosine(1.0, 10, final_lr=0.5), {0: 1.0, 5: 0.75, 10: 0.5, 11: 0.5, 1000: 0.5}),
    (linear(1.0, 10, final_lr=0.5), {0: 1.0, 9: 0.55, 10: 0.5, 11: 0.5}),
    (linear(0.0, 4, final_lr=1.0), {0: 0.0, 1: 0.25, 3: 0.75, 4: 1.0, 5: 1.0}),
    (polynomial(1.0, 10, 2.0), {0: 1.0, 9: 0.01, 10: 0.0, 11: 0.0}),
    (inverse_sqrt(1.0, 100), {0: 1.0, 99: 1.0, 100: 1.0, 101: 1 / math.sqrt(1.01), 400: 0.5}),
    (inverse_sqrt(1.0, 100, offset=300), {0: 1 / math.sqrt(3), 100: 0.5}),
    (warmup(4, constant(1.0)), {0: 0.0, 1: 0.25, 3: 0.75, 4: 1.0, 5: 1.0}),
    (
        warmup(4, linear(1.0, 4), start_lr=0.2),
        {0: 0.2, 3: 0.8, 4: 1.0, 5: 0.75, 8: 0.0, 9: 0.0},
    ),
    (
        join([constant(1.0), constant(2.0), linear(3.0, 2)], [3, 5]),
        {0: 1.0, 2: 1.0, 3: 2.0, 4: 2.0, 5: 3.0, 6: 1.5, 7: 0.0, 8: 0.0},
    ),
    (
        join([warmup(2, join([constant(1.0), constant(3.0)], [1])), constant(9.0)], [4]),
        {0: 0.0, 1: 0.5, 2: 1.0, 3: 3.0, 4: 9.0},
    ),
    (
        cosine_restarts(1.0, 4, mult=2),  # restarts at t = 4 and 4 + 8 = 12
        {
            3: (1 + c(3 * math.pi / 4)) / 2,
            4: 1.0,
            5: (1 + c(math.pi / 8)) / 2,
            11: (1 + c(7 * math.pi / 8)) / 2,
            12: 1.0,
            13: (1 + c(math.pi / 16)) / 2,
        },
    ),
    (
        cosine_restarts(1.0, 4),
        {3: (1 + c(3 * math.pi / 4)) / 2, 4: 1.0, 8: 1.0, 9: (1 + c(math.pi / 4)) / 2},
    ),
    (one_cycle(1.0, 100), {0: 0.04, 29: 1.0, 99: 4e-6, 100: 4e-6, 500: 4e-6}),
    (one_cycle_momentum(100), {0: 0.95, 29: 0.85, 99: 0.95, 100: 0.95}),
    (
        warmup_stable_decay(1.0, 10, 20, 10, final_lr=0.1, decay="linear"),
        {0: 0.0, 9: 0.9, 10: 1.0, 29: 1.0, 30: 1.0, 31: 0.91, 39: 0.19, 40: 0.1, 41: 0.1},
    ),
    (scale(step_decay(1.0, 2, 0.5), 0.1), {0: 0.1, 1: 0.1, 2: 0.05}),
]


@pytest.mark.parametrize(("schedule", "expected"), BOUNDARIES, ids=[b[0].spec for b in BOUNDARIES])
def test_boundary_values(schedule, expected):
    assert {t: schedule(t) for t in expected} == pytest.approx(expected, rel=REL, abs=1e-15)


def test_cosine_stays_flat_where_torch_rises_again():
    torch_values = torch_trace(lambda o: L.CosineAnnealingLR(o, 10), 1.0, 21)
    ours = cosine(1.0, 10)
    assert torch_values[15] > 0.1  # torch's curve goes back up after T_max ...
    assert [ours(t) for t in range(10, 21)] == [0.0] * 11  # ... this one does not


def test_evaluating_a_late_step_costs_no_more_than_step_zero():
    # Closed form: no counter to run forward.  Values at huge steps are still right.
    assert step_decay(1.0, 10, 0.5)(10**12) == 0.0
    assert cosine(1.0, 10**9)(5 * 10**8) == pytest.approx(0.5, rel=REL)
    assert cosine_restarts(1.0, 4, mult=2)(4 * (2**60 - 1)) == 1.0  # a restart
