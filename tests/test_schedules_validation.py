"""Bad arguments: each raises ValueError naming the argument and the value it got."""

from __future__ import annotations

import math

import pytest

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

OK = cosine(0.1, 10)

BAD = [
    # lr and other non-negative numbers
    (lambda: constant(-1), "lr must be a non-negative number, got lr=-1"),
    (lambda: constant(math.nan), "lr must be a non-negative number, got lr=nan"),
    (lambda: constant(math.inf), "lr must be a non-negative number, got lr=inf"),
    (lambda: constant("0.1"), "lr must be a non-negative number, got lr='0.1'"),
    (lambda: constant(True), "lr must be a non-negative number, got lr=True"),
    (lambda: constant(None), "lr must be a non-negative number, got lr=None"),
    (lambda: cosine(-0.1, 10), "lr must be a non-negative number, got lr=-0.1"),
    (
        lambda: cosine(0.1, 10, final_lr=-1e-5),
        "final_lr must be a non-negative number, got final_lr=-1e-05",
    ),
    (
        lambda: linear(0.1, 10, final_lr=-1),
        "final_lr must be a non-negative number, got final_lr=-1",
    ),
    (
        lambda: warmup(10, OK, start_lr=-1),
        "start_lr must be a non-negative number, got start_lr=-1",
    ),
    # steps / every / timescale / period
    (lambda: cosine(0.1, 0), "steps must be a positive integer, got steps=0"),
    (lambda: cosine(0.1, -5), "steps must be a positive integer, got steps=-5"),
    (lambda: cosine(0.1, 2.5), "steps must be a positive integer, got steps=2.5"),
    (lambda: cosine(0.1, "10"), "steps must be a positive integer, got steps='10'"),
    (lambda: cosine(0.1, True), "steps must be a positive integer, got steps=True"),
    (lambda: linear(0.1, 0), "steps must be a positive integer, got steps=0"),
    (lambda: polynomial(0.1, 0, 1.0), "steps must be a positive integer, got steps=0"),
    (lambda: step_decay(0.1, 0, 0.5), "every must be a positive integer, got every=0"),
    (lambda: step_decay(0.1, -1, 0.5), "every must be a positive integer, got every=-1"),
    (lambda: inverse_sqrt(0.1, 0), "timescale must be a positive integer, got timescale=0"),
    (lambda: inverse_sqrt(0.1, 10, offset=-1), "offset must be an integer >= 0, got offset=-1"),
    (lambda: warmup(0, OK), "steps must be a positive integer, got steps=0"),
    (lambda: cosine_restarts(0.1, 0), "period must be a positive integer, got period=0"),
    (lambda: cosine_restarts(0.1, 10, mult=0), "mult must be a positive integer, got mult=0"),
    (lambda: cosine_restarts(0.1, 10, mult=1.5), "mult must be a positive integer, got mult=1.5"),
    (lambda: one_cycle(0.1, 0), "steps must be a positive integer, got steps=0"),
    (lambda: one_cycle_momentum(-3), "steps must be a positive integer, got steps=-3"),
    (
        lambda: warmup_stable_decay(0.1, -1, 0, 10),
        "warmup_steps must be an integer >= 0, got warmup_steps=-1",
    ),
    (
        lambda: warmup_stable_decay(0.1, 0, -1, 10),
        "stable_steps must be an integer >= 0, got stable_steps=-1",
    ),
    (
        lambda: warmup_stable_decay(0.1, 0, 0, 0),
        "decay_steps must be a positive integer, got decay_steps=0",
    ),
    # gamma in (0, 1]
    (lambda: step_decay(0.1, 10, 0), "gamma must be a positive number, got gamma=0"),
    (lambda: step_decay(0.1, 10, 1.5), "gamma must be in (0, 1], got gamma=1.5"),
    (lambda: exponential(0.1, -0.5), "gamma must be a positive number, got gamma=-0.5"),
    (lambda: exponential(0.1, 1.01), "gamma must be in (0, 1], got gamma=1.01"),
    (lambda: multistep(0.1, [10], 2), "gamma must be in (0, 1], got gamma=2"),
    # milestones / boundaries
    (
        lambda: multistep(0.1, [60, 30], 0.1),
        "milestones must be a strictly increasing list of positive integers, "
        "got milestones=[60, 30]",
    ),
    (lambda: multistep(0.1, [30, 30], 0.1), "got milestones=[30, 30]"),
    (lambda: multistep(0.1, [0, 10], 0.1), "got milestones=[0, 10]"),
    (lambda: multistep(0.1, [10.5], 0.1), "got milestones=[10.5]"),
    (lambda: multistep(0.1, 30, 0.1), "got milestones=30"),
    (lambda: multistep(0.1, "30", 0.1), "got milestones='30'"),
    (
        lambda: join([OK, OK], [20, 10]),
        "boundaries must be a strictly increasing list of positive integers, "
        "got boundaries=[20, 10]",
    ),
    (lambda: join([OK, OK], [0]), "got boundaries=[0]"),
    (
        lambda: join([OK, OK], []),
        "boundaries must have len(schedules) - 1 = 1 entries, got boundaries=[]",
    ),
    (
        lambda: join([OK, OK], [5, 10]),
        "boundaries must have len(schedules) - 1 = 1 entries, got boundaries=[5, 10]",
    ),
    (
        lambda: join([OK], [5]),
        "boundaries must have len(schedules) - 1 = 0 entries, got boundaries=[5]",
    ),
    (lambda: join([], []), "schedules must be a non-empty list of schedules, got schedules=[]"),
    (
        lambda: join(OK, []),
        "schedules must be a non-empty list of schedules, got schedules=cosine(0.1, 10)",
    ),
    (lambda: join([OK, 0.1], [5]), "schedules[1] must be a schedule, got schedules[1]=0.1"),
    # other arguments
    (lambda: polynomial(0.1, 10, 0), "power must be a positive number, got power=0"),
    (lambda: polynomial(0.1, 10, -1), "power must be a positive number, got power=-1"),
    (lambda: scale(OK, -1), "factor must be a non-negative number, got factor=-1"),
    (lambda: scale(0.1, 2), "schedule must be a schedule, got schedule=0.1"),
    (lambda: warmup(10, lambda t: 0.1), "then must be a schedule, got then=<function"),
    (
        lambda: one_cycle(0.1, 100, pct_start=0),
        "pct_start must be a positive number, got pct_start=0",
    ),
    (lambda: one_cycle(0.1, 100, pct_start=1.0), "pct_start must be in (0, 1), got pct_start=1.0"),
    (
        lambda: one_cycle(0.1, 100, div_factor=0),
        "div_factor must be a positive number, got div_factor=0",
    ),
    (
        lambda: one_cycle(0.1, 100, final_div_factor=-1),
        "final_div_factor must be a positive number, got final_div_factor=-1",
    ),
    (
        lambda: one_cycle(0.1, 100, anneal="cosine"),
        "anneal must be one of 'cos', 'linear', got anneal='cosine'",
    ),
    (
        lambda: one_cycle(0.1, 100, three_phase=1),
        "three_phase must be True or False, got three_phase=1",
    ),
    (
        lambda: one_cycle(0.1, 3),
        "pct_start * steps must leave every phase at least one step, "
        "got pct_start=0.3, steps=3 (phase lengths [0, 2])",
    ),
    (lambda: one_cycle(0.1, 10, pct_start=0.95), "phase lengths [9, 0]"),
    (lambda: one_cycle(0.1, 11, pct_start=0.5, three_phase=True), "phase lengths [5, 5, 0]"),
    (lambda: one_cycle(0.1, 10, pct_start=0.6, three_phase=True), "phase lengths [5, 5, -1]"),
    (
        lambda: one_cycle_momentum(100, base_momentum=-0.1),
        "base_momentum must be a non-negative number, got base_momentum=-0.1",
    ),
    (
        lambda: one_cycle_momentum(100, max_momentum=math.nan),
        "max_momentum must be a non-negative number, got max_momentum=nan",
    ),
    (
        lambda: warmup_stable_decay(0.1, 0, 0, 10, decay="exp"),
        "decay must be one of 'cosine', 'linear', got decay='exp'",
    ),
    # evaluating at a bad step
    (lambda: OK(-1), "step must be a non-negative integer, got step=-1"),
    (lambda: OK(1.0), "step must be a non-negative integer, got step=1.0"),
    (lambda: OK("3"), "step must be a non-negative integer, got step='3'"),
    (lambda: warmup(5, OK)(-2), "step must be a non-negative integer, got step=-2"),
]


@pytest.mark.parametrize(("build", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_arguments(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("schedule", "expected", "text"),
    [
        (cosine(0.1, 1e4), cosine(0.1, 10000), "cosine(0.1, 10000)"),
        (step_decay(1, 10.0, 1), step_decay(1.0, 10, 1.0), "step_decay(1.0, 10, 1.0)"),
        (
            multistep(0.1, (10.0, 20), 0.5),
            multistep(0.1, [10, 20], 0.5),
            "multistep(0.1, [10, 20], 0.5)",
        ),
    ],
)
def test_integral_floats_are_accepted_where_an_int_is_due(schedule, expected, text):
    assert schedule == expected
    assert schedule.spec == text


def test_edge_values_that_are_valid():
    assert constant(0)(5) == 0.0
    assert exponential(0.1, 1)(1000) == 0.1  # gamma = 1 is allowed
    assert multistep(0.1, [], 0.5)(10**6) == 0.1
    assert cosine(0.1, 10, final_lr=0.2)(10) == 0.2  # final_lr above lr: a ramp up
    assert scale(OK, 0)(0) == 0.0
    assert warmup_stable_decay(0.1, 0, 0, 10)(0) == 0.1
