"""Every schedule constructor, as values: pickle, ==/hash, spec round-trip, exact resume.

CATALOG has at least one row per constructor (a test checks that), including
joins nested inside warmups inside joins, so a new constructor is one new row.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import optimlab.schedules
from optimlab.schedules import (
    ScheduledHyperparameter,
    ScheduledLR,
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
    parse,
    polynomial,
    scale,
    step_decay,
    warmup,
    warmup_stable_decay,
)
from optimlab.schedules.spec import CONSTRUCTORS

NESTED = join(
    [
        warmup(5, join([constant(0.1), cosine(0.1, 20, final_lr=0.01)], [7])),
        join([linear(0.05, 10), exponential(0.02, 0.9)], [10]),
    ],
    [30],
)

CATALOG = [
    constant(0.1),
    step_decay(0.1, 7, 0.5),
    multistep(0.1, [10, 25, 40], 0.3),
    exponential(0.1, 0.97),
    cosine(0.1, 40),
    cosine(0.1, 40, final_lr=0.001),
    linear(0.1, 40, final_lr=0.01),
    polynomial(0.1, 40, 2.0),
    polynomial(0.1, 40, 0.5, final_lr=0.001),
    inverse_sqrt(0.1, 10),
    inverse_sqrt(0.1, 10, offset=10),
    scale(cosine(1.0, 40), 0.1),
    0.5 * step_decay(0.2, 10, 0.5),
    join([constant(0.1), linear(0.1, 20)], [15]),
    warmup(10, cosine(0.1, 40, final_lr=0.001)),
    warmup(10, linear(0.1, 30), start_lr=0.01),
    NESTED,
    join([NESTED, warmup(3, NESTED)], [45]),
    cosine_restarts(0.1, 8),
    cosine_restarts(0.1, 5, mult=2, final_lr=0.001),
    one_cycle(0.1, 60),
    one_cycle(0.1, 60, pct_start=0.25, anneal="linear", three_phase=True),
    one_cycle_momentum(60),
    one_cycle_momentum(60, base_momentum=0.8, three_phase=True),
    warmup_stable_decay(0.1, 10, 20, 20),
    warmup_stable_decay(0.1, 0, 0, 30, final_lr=0.01, decay="linear"),
]
IDS = [s.spec for s in CATALOG]


def test_catalog_has_every_constructor():
    assert {s.constructor for s in CATALOG} == set(CONSTRUCTORS)


@pytest.mark.parametrize("schedule", CATALOG, ids=IDS)
def test_pickle_and_copies_keep_the_value(schedule):
    for clone in (
        pickle.loads(pickle.dumps(schedule)),
        copy.deepcopy(schedule),
        copy.copy(schedule),
    ):
        assert clone == schedule
        assert hash(clone) == hash(schedule)
        assert [clone(t) for t in range(80)] == [schedule(t) for t in range(80)]


@pytest.mark.parametrize("schedule", CATALOG, ids=IDS)
def test_spec_round_trip(schedule):
    text = schedule.spec
    assert str(schedule) == repr(schedule) == text
    again = parse(text)
    assert again == schedule
    assert again.spec == text
    assert [again(t) for t in range(80)] == [schedule(t) for t in range(80)]
    # The same text is also the Python call that builds it.
    assert eval(text, vars(optimlab.schedules)) == schedule


@pytest.mark.parametrize("schedule", CATALOG, ids=IDS)
def test_schedules_are_immutable(schedule):
    with pytest.raises(AttributeError):
        schedule.lr = 1.0


def test_equality_and_hash_are_by_value():
    assert cosine(1, 10) == cosine(1.0, 10.0)  # ints and integral floats are normalised
    assert hash(cosine(1, 10)) == hash(cosine(1.0, 10))
    assert cosine(0.1, 10) != linear(0.1, 10)  # same fields, different schedule
    assert cosine(0.1, 10) != cosine(0.1, 11)
    assert len({warmup(5, cosine(0.1, 10)), warmup(5, cosine(0.1, 10)), NESTED}) == 2


# --- exact resume ------------------------------------------------------------


def _fresh(schedule, key="lr"):
    """Two param groups (one with a timm lr_scale) on SGD with momentum."""
    torch.manual_seed(0)
    a, b = torch.randn(3), torch.randn(2)
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.5}], lr=0.0, momentum=0.9)
    if key == "lr":
        sched = ScheduledLR(opt, schedule)
    else:
        sched = ScheduledHyperparameter(opt, key, schedule)
    return opt, sched, (a, b)


def _train(opt, sched, params, steps, key="lr"):
    """``steps`` optimizer+scheduler steps with fixed gradients; the values used at each."""
    used = []
    for _ in range(steps):
        for p in params:
            p.grad = torch.full_like(p, 0.25)
        used.append([group[key] for group in opt.param_groups])
        opt.step()
        sched.step()
    return used


def _checkpoint(obj):
    buffer = io.BytesIO()
    torch.save(obj.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("split", [1, 29, 41])
@pytest.mark.parametrize("schedule", CATALOG, ids=IDS)
def test_resume_equals_an_uninterrupted_run_exactly(schedule, split):
    total = 70
    opt, sched, params = _fresh(schedule)
    uninterrupted = _train(opt, sched, params, total)
    final_params = [p.clone() for p in params]

    opt, sched, params = _fresh(schedule)
    before = _train(opt, sched, params, split)
    opt_state, sched_state = _checkpoint(opt), _checkpoint(sched)

    opt, sched, fresh_params = _fresh(schedule)
    for p, saved in zip(fresh_params, params, strict=True):
        p.copy_(saved)  # the model's weights come from the checkpoint too
    opt.load_state_dict(opt_state)
    sched.load_state_dict(sched_state)
    after = _train(opt, sched, fresh_params, total - split)

    assert before + after == uninterrupted  # exact, per group (lr_scale included)
    assert all(torch.equal(p, q) for p, q in zip(fresh_params, final_params, strict=True))


@pytest.mark.parametrize("order", ["scheduler first", "optimizer first"])
def test_resume_in_either_load_order_for_a_scheduled_beta1(order):
    schedule = one_cycle_momentum(60)

    def fresh():
        torch.manual_seed(0)
        p = torch.randn(4)
        opt = torch.optim.Adam([p], lr=1e-2)
        return opt, ScheduledHyperparameter(opt, "betas[0]", schedule), (p,)

    opt, sched, params = fresh()
    uninterrupted = _train(opt, sched, params, 60, key="betas")

    opt, sched, params = fresh()
    before = _train(opt, sched, params, 23, key="betas")
    states = _checkpoint(opt), _checkpoint(sched)
    opt, sched, fresh_params = fresh()
    fresh_params[0].copy_(params[0])
    if order == "scheduler first":
        sched.load_state_dict(states[1])
        opt.load_state_dict(states[0])
    else:
        opt.load_state_dict(states[0])
        sched.load_state_dict(states[1])
    after = _train(opt, sched, fresh_params, 37, key="betas")
    assert before + after == uninterrupted
