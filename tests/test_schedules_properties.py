"""Hypothesis properties: monotone where the math says so, no seams where pieces meet."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

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
    step_decay,
    warmup,
    warmup_stable_decay,
)

lrs = st.floats(1e-6, 10.0)
short = st.integers(1, 300)
gammas = st.floats(1e-3, 1.0)
FAST = settings(max_examples=60, deadline=None)


def non_increasing(values):
    return all(b <= a for a, b in pairwise(values))


@st.composite
def lr_and_lower(draw):
    lr = draw(lrs)
    return lr, draw(st.floats(0.0, lr))


@st.composite
def decays(draw):
    """A schedule that never goes up, and how many steps to look at."""
    (lr, final), steps = draw(lr_and_lower()), draw(short)
    kind = draw(
        st.sampled_from(["cosine", "linear", "polynomial", "step", "multi", "exp", "isqrt"])
    )
    schedule = {
        "cosine": lambda: cosine(lr, steps, final),
        "linear": lambda: linear(lr, steps, final),
        "polynomial": lambda: polynomial(lr, steps, draw(st.floats(0.1, 5.0)), final),
        "step": lambda: step_decay(lr, steps, draw(gammas)),
        "multi": lambda: multistep(lr, sorted(draw(st.sets(short, max_size=4))), draw(gammas)),
        "exp": lambda: exponential(lr, draw(gammas)),
        "isqrt": lambda: inverse_sqrt(lr, steps, draw(st.integers(0, 300))),
    }[kind]()
    return schedule, 2 * steps + 2


@FAST
@given(decays())
def test_decays_never_go_up(case):
    schedule, horizon = case
    assert non_increasing([schedule(t) for t in range(horizon)])


@FAST
@given(lr_and_lower(), short, st.sampled_from([cosine, linear]))
def test_decays_stay_between_their_end_points(ends, steps, make):
    lr, final = ends
    values = [make(lr, steps, final)(t) for t in range(steps + 3)]
    assert all(final <= v <= lr for v in values)
    assert values[steps:] == [final] * 3  # exactly final_lr from `steps` on


@FAST
@given(lr_and_lower(), st.integers(1, 30), st.integers(1, 3))
def test_cosine_restarts_never_go_up_within_a_cycle(ends, period, mult):
    lr, final = ends
    schedule = cosine_restarts(lr, period, mult, final)
    start, length = 0, period
    for _ in range(4):
        cycle = [schedule(t) for t in range(start, start + length)]
        assert cycle[0] == lr and non_increasing(cycle)
        start, length = start + length, length * mult


@FAST
@given(st.integers(2, 200), lr_and_lower(), short)
def test_warmup_rises_to_where_the_schedule_starts(steps, ends, then_steps):
    lr, start = ends
    schedule = warmup(steps, cosine(lr, then_steps), start_lr=start)
    rise = [schedule(t) for t in range(steps + 1)]
    assert rise[0] == start and rise[-1] == lr
    assert non_increasing(rise[::-1])


@FAST
@given(lrs, st.integers(50, 500), st.floats(0.1, 0.45), st.sampled_from(["cos", "linear"]))
def test_one_cycle_rises_to_its_peak_then_falls(lr, steps, pct_start, anneal):
    schedule = one_cycle(lr, steps, pct_start, anneal=anneal)
    values = [schedule(t) for t in range(steps + 2)]
    peak = values.index(max(values))
    assert values[peak] == lr
    assert non_increasing(values[peak::-1]) and non_increasing(values[peak:])


# --- no seams: where the composites join pieces, there is no jump ---------------


def seam_free(schedule, boundary, rel=1e-9):
    """The step into ``boundary`` is no bigger than the steps on either side of it."""
    v = [schedule(t) for t in range(boundary - 2, boundary + 2)]
    before, into, after = abs(v[1] - v[0]), abs(v[2] - v[1]), abs(v[3] - v[2])
    return into <= max(before, after) * (1 + rel) + 1e-15 * max(map(abs, v))


def test_the_seam_check_can_fail():
    assert not seam_free(join([constant(1.0), constant(0.5)], [3]), 3)
    assert not seam_free(join([cosine(1.0, 10), cosine(1.0, 10)], [10]), 10)  # a restart
    assert seam_free(join([cosine(1.0, 10, 0.5), constant(0.5)], [10]), 10)


ramps = st.one_of(
    st.builds(cosine, lrs, short, lrs),
    st.builds(linear, lrs, short, lrs),
    st.builds(constant, lrs),
)


@FAST
@given(st.integers(2, 300), ramps, st.floats(0.0, 10.0))
def test_warmup_has_no_seam(steps, then, start_lr):
    assert seam_free(warmup(steps, then, start_lr=start_lr), steps)


@FAST
@given(lrs, st.integers(2, 100), st.integers(0, 100), st.integers(2, 100), st.floats(0, 1))
def test_warmup_stable_decay_has_no_seams(lr, warm, stable, decay, final_ratio):
    for kind in ("cosine", "linear"):
        schedule = warmup_stable_decay(lr, warm, stable, decay, lr * final_ratio, kind)
        for boundary in (warm, warm + stable):
            assert seam_free(schedule, boundary)


@FAST
@given(
    st.integers(100, 2000), st.floats(0.05, 0.3), st.booleans(), st.sampled_from(["cos", "linear"])
)
def test_one_cycle_has_no_seams(steps, pct_start, three_phase, anneal):
    for schedule in (
        one_cycle(1.0, steps, pct_start, anneal=anneal, three_phase=three_phase),
        one_cycle_momentum(steps, pct_start=pct_start, anneal=anneal, three_phase=three_phase),
    ):
        for boundary in schedule.expand().boundaries:
            assert seam_free(schedule, boundary)
