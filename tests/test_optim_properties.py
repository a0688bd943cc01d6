"""Property tests: for random shapes (empty ones included), hyperparameters and
gradient sequences, the reference path equals torch.optim bit for bit."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optim_cases import ours, theirs

unit = st.floats(0.0, 0.99)
positive = st.floats(1e-4, 0.5)

HYPERPARAMETERS = {
    "SGD": st.fixed_dictionaries(
        {"lr": positive, "momentum": unit, "weight_decay": unit, "maximize": st.booleans()},
        optional={"dampening": unit},
    ),
    "Adagrad": st.fixed_dictionaries(
        {"lr": positive, "lr_decay": unit, "weight_decay": unit, "eps": st.floats(0.0, 1e-3)},
        optional={"initial_accumulator_value": unit, "maximize": st.booleans()},
    ),
    "RMSprop": st.fixed_dictionaries(
        {"lr": positive, "alpha": unit, "momentum": unit, "centered": st.booleans()},
        optional={"weight_decay": unit, "eps": st.floats(1e-8, 1e-3)},
    ),
    "Adam": st.fixed_dictionaries(
        {"lr": positive, "betas": st.tuples(unit, unit), "amsgrad": st.booleans()},
        optional={"weight_decay": unit, "decoupled_weight_decay": st.booleans()},
    ),
    "AdamW": st.fixed_dictionaries(
        {"lr": positive, "betas": st.tuples(unit, unit), "weight_decay": unit},
        optional={"amsgrad": st.booleans(), "maximize": st.booleans()},
    ),
    "NAdam": st.fixed_dictionaries(
        {"lr": positive, "betas": st.tuples(unit, unit), "momentum_decay": unit},
        optional={"weight_decay": unit, "decoupled_weight_decay": st.booleans()},
    ),
}

shapes = st.lists(st.lists(st.integers(0, 5), max_size=3).map(tuple), min_size=1, max_size=3)


@st.composite
def problems(draw):
    name = draw(st.sampled_from(sorted(HYPERPARAMETERS)))
    return name, draw(HYPERPARAMETERS[name])


@settings(max_examples=150, deadline=None)
@given(
    problem=problems(),
    shape_list=shapes,
    steps=st.integers(1, 6),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_reference_equals_torch_for_random_problems(problem, shape_list, steps, dtype, seed):
    name, kwargs = problem
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=gen, dtype=dtype) for s in shape_list]
    a = [t.clone().requires_grad_() for t in init]
    b = [t.clone().requires_grad_() for t in init]
    opt_a, opt_b = ours(name, a, kwargs, fused=False), theirs(name, b, kwargs)
    for _ in range(steps):
        for pa, pb in zip(a, b, strict=True):
            g = torch.randn(pa.shape, generator=gen, dtype=dtype)
            pa.grad, pb.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, equal_nan=True)
