"""torch.compile of an optimlab step: one graph, a tensor lr, no recompiles under a schedule.

Under ``torch.compile`` a group takes the foreach backend, whose ops trace without reading
any tensor on the host.  The first step creates the state and runs eagerly (dynamo cannot
trace the creation); from the second step on the step is one graph with no graph breaks,
and a schedule that writes a tensor ``lr`` in place never recompiles it.  torch's own
AdamW, compiled the same way, is the yardstick: one graph.  Counting uses dynamo's
``backend="eager"`` (tracing only; compiling on 2 cores is slow), one test runs Inductor.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import optimlab
from optim_cases import case_id, ours
from optimlab.schedules import ScheduledLR, cosine, warmup

STEPS = 6
SHAPES = [(7, 5), (13,), (), (2, 3, 4)]

CASES = [
    ("SGD", dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(momentum=0.9, nesterov=True, momentum_form="lecture")),
    ("Adagrad", dict(lr_decay=0.05, weight_decay=0.1)),
    ("Adagrad", dict(eps_inside_sqrt=True, maximize=True)),
    ("RMSprop", dict(centered=True, momentum=0.5, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(eps_inside_sqrt=True)),
    ("Adam", dict(weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    ("Adam", dict(bias_correction=False)),
    ("AdamW", dict()),
    ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]


def _run(make, compiled: bool, backend: str = "eager", steps: int = STEPS, before_step=None):
    """``steps`` steps of the optimizer ``make(params, lr)`` under a warmup-cosine schedule
    of a tensor lr; returns the params and, per step, (frames compiled, graph breaks,
    graphs) added by that step.  Recompiling after the second step (the first creates the
    state) raises.  ``before_step(opt, i)`` runs before step ``i``."""
    torch._dynamo.reset()
    counters.clear()
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in SHAPES]
    opt = make(params, torch.tensor(0.01))
    schedule = ScheduledLR(opt, warmup(2, cosine(0.01, 10)))

    def step():
        opt.step()

    if compiled:
        step = torch.compile(step, backend=backend)
    per_step = []
    for i in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) + 0.5 * p.detach()
        if before_step is not None:
            before_step(opt, i)
        before = _counts()
        with torch._dynamo.config.patch(error_on_recompile=i >= 2):
            step()
        per_step.append(tuple(b - a for a, b in zip(before, _counts(), strict=True)))
        schedule.step()
    return params, per_step


def _counts() -> tuple[int, int, int]:
    return (
        counters["frames"]["total"],
        sum(counters["graph_break"].values()),
        counters["stats"]["unique_graphs"],
    )


def _graphs(per_step) -> int:
    return sum(graphs for _, _, graphs in per_step)


def _torch_adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr)


@functools.cache
def _yardstick() -> tuple[int, int, list]:
    """torch's AdamW compiled the same way: its graphs, the graph breaks of the step that
    traced its graph, and the per-step counts."""
    _, per_step = _run(_torch_adamw, compiled=True)
    return _graphs(per_step), max(b for _, b, g in per_step if g), per_step


def test_torch_adamw_compiles_to_one_graph():
    """The yardstick: torch's AdamW with a tensor lr under a schedule, one graph (its step
    has two graph breaks of its own, ``torch._dynamo.graph_break()`` around the update)."""
    graphs, breaks, per_step = _yardstick()
    assert (graphs, breaks) == (1, 2)
    assert per_step[2:] == [(0, 0, 0)] * (STEPS - 2)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_step_is_one_graph_without_recompiles(case):
    name, kwargs = case

    def make(params, lr):
        return ours(name, params, kwargs, lr=lr)

    compiled, per_step = _run(make, compiled=True)
    graphs, breaks, _ = _yardstick()
    assert _graphs(per_step) == graphs == 1
    # the step that traced it (the first, or the second where the first created state)
    # breaks no more often than torch's; a break inside the update would make two graphs
    assert max(b for _, b, g in per_step if g) <= breaks
    assert per_step[2:] == [(0, 0, 0)] * (STEPS - 2)  # nothing traced again
    eager, _ = _run(make, compiled=False)
    # traced, the per-tensor scalars (bias corrections, step sizes) are float32 tensor
    # arithmetic where eager uses Python floats, as in torch: close, not bitwise
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_changed_option_recompiles():
    """The control: a Python constant of the graph (here ``maximize``) that changes
    recompiles it, and the test harness sees it."""

    def flip(opt, i):
        opt.param_groups[0]["maximize"] = i >= 3

    with pytest.raises(Exception, match="[Rr]ecompil"):
        _run(lambda params, lr: optimlab.Adam(params, lr=lr), compiled=True, before_step=flip)


def test_float_lr_is_traced_as_an_input_too():
    """A float lr changed by a schedule does not recompile either: dynamo turns a float
    that changed into a graph input when it recompiles (here in the recompile that the
    state creation causes anyway; torch's AdamW recompiles once for it)."""

    def make(params, lr):
        return optimlab.Adam(params, lr=float(lr))

    compiled, per_step = _run(make, compiled=True)
    assert _graphs(per_step) == 1
    eager, _ = _run(make, compiled=False)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_first_step_creates_state_eagerly_and_is_not_a_graph():
    """The step that creates the state runs eagerly: it adds no graph of its own."""
    _, per_step = _run(lambda params, lr: optimlab.AdamW(params, lr=lr), compiled=True, steps=2)
    assert per_step[0][2] == 0 and per_step[1][2] == 1


def test_aot_eager_functionalizes_the_step():
    """AOTAutograd (what Inductor consumes) takes the traced in-place foreach ops."""

    def make(params, lr):
        return optimlab.NAdam(params, lr=lr, weight_decay=0.1)

    compiled, per_step = _run(make, compiled=True, backend="aot_eager")
    assert _graphs(per_step) == 1
    eager, _ = _run(make, compiled=False)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_inductor_step_matches_eager():
    """One real compile (Inductor, C++ codegen): the same trajectory as eager, one graph."""

    def make(params, lr):
        return optimlab.AdamW(params, lr=lr, weight_decay=0.1, amsgrad=True)

    compiled, per_step = _run(make, compiled=True, backend="inductor", steps=4)
    assert _graphs(per_step) == 1
    eager, _ = _run(make, compiled=False, steps=4)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
