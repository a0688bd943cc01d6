"""A scheduled value is written only if the optimizer's own rules accept it.

Each row of ``REFUSED`` is a schedule that reaches, at ``step``, a value the
optimizer's constructor refuses; the adapter must raise a ``ValueError`` naming
the schedule, the step and the value, and leave the param groups, the step and
the last values as they were.  The oracle for "refuses" is the optimizer's
constructor itself (torch.optim's, or optimlab's), checked in
``test_the_constructor_refuses_the_same_value``.
"""

from __future__ import annotations

import re

import pytest
import torch

import optimlab
from optimlab.schedules import (
    ScheduledHyperparameter,
    ScheduledLR,
    constant,
    linear,
    scale,
)


def _params():
    torch.manual_seed(0)
    return [torch.randn(3, requires_grad=True)]


def _tensor_betas(value):
    return (torch.tensor(value), torch.tensor(0.999))


# (id, make optimizer from params, key, schedule, adapter kwargs, the step that is refused,
#  what the message says after "refuses: ", the constructor call that the rules mirror)
REFUSED = [
    (
        "torch Adam beta1 1.5",
        lambda ps: torch.optim.Adam(ps, lr=0.1),
        "betas[0]",
        constant(1.5),
        {},
        0,
        "Invalid beta parameter at index 0: 1.5",
        lambda ps: torch.optim.Adam(ps, betas=(1.5, 0.999)),
    ),
    (
        "optimlab Adam beta1 reaches 1 at step 2",
        lambda ps: optimlab.Adam(ps, lr=0.1),
        "betas[0]",
        linear(0.9, 10, final_lr=1.5),  # 0.9, 0.96, 1.02
        {},
        2,
        "Invalid beta parameter at index 0: 1.02",
        lambda ps: optimlab.Adam(ps, betas=(1.02, 0.999)),
    ),
    (
        "torch Adam tensor beta1 rounds to 1 in float32",
        lambda ps: torch.optim.Adam(ps, lr=0.1, betas=_tensor_betas(0.9)),
        "betas[0]",
        constant(0.99999999),
        {},
        0,
        "Invalid beta parameter at index 0: 1.0",
        lambda ps: torch.optim.Adam(ps, betas=_tensor_betas(0.99999999)),
    ),
    (
        "optimlab Adam tensor beta1 rounds to 1 in float32",
        lambda ps: optimlab.Adam(ps, lr=0.1, betas=_tensor_betas(0.9)),
        "betas[0]",
        constant(0.99999999),
        {},
        0,
        "Invalid beta parameter at index 0: 1.0",
        lambda ps: optimlab.Adam(ps, betas=_tensor_betas(0.99999999)),
    ),
    (
        "torch SGD lr inf through lr_scale",
        lambda ps: torch.optim.SGD([{"params": ps, "lr_scale": 1e10}], lr=0.1),
        "lr",
        linear(0.0, 4, final_lr=4e298),  # times 1e10: 0, 1e308, then inf at step 2
        {},
        2,
        "Invalid learning rate: inf",
        None,  # torch's constructor takes lr=inf; the adapters require finite values
    ),
    (
        "optimlab Adam lr inf through lr_scale",
        lambda ps: optimlab.Adam([{"params": ps, "lr_scale": 1e10}], lr=0.1),
        "lr",
        constant(1e300),
        {},
        0,
        "Invalid learning rate: inf",
        lambda ps: optimlab.Adam(ps, lr=float("inf")),
    ),
    (
        "torch SGD negative lr through lr_scale",
        lambda ps: torch.optim.SGD([{"params": ps, "lr_scale": -1.0}], lr=0.1),
        "lr",
        constant(0.1),
        {},
        0,
        "Invalid learning rate: -0.1",
        lambda ps: torch.optim.SGD(ps, lr=-0.1),
    ),
    (
        "torch Adam tensor lr negative",
        lambda ps: torch.optim.Adam([{"params": ps, "lr_scale": -1.0}], lr=torch.tensor(0.1)),
        "lr",
        constant(0.1),
        {},
        0,
        "Invalid learning rate: -0.1",
        lambda ps: torch.optim.Adam(ps, lr=torch.tensor(-0.1)),
    ),
    (
        "optimlab SGD tensor lr negative",
        lambda ps: optimlab.SGD([{"params": ps, "lr_scale": -1.0}], lr=torch.tensor(0.1)),
        "lr",
        constant(0.1),
        {},
        0,
        "Invalid learning rate: -0.1",
        lambda ps: optimlab.SGD(ps, lr=torch.tensor(-0.1)),
    ),
    (
        "torch SGD negative momentum",
        lambda ps: torch.optim.SGD([{"params": ps, "neg": -3.0}], lr=0.1, momentum=0.9),
        "momentum",
        constant(1.0),
        {"scale_key": "neg"},
        0,
        "Invalid momentum value: -3.0",
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=-3.0),
    ),
    (
        "torch SGD nesterov momentum reaches 0",
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        "momentum",
        linear(0.9, 3),
        {},
        3,
        "Nesterov momentum requires a momentum and zero dampening",
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.0, nesterov=True),
    ),
    (
        "optimlab SGD nesterov momentum reaches 0",
        lambda ps: optimlab.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        "momentum",
        linear(0.9, 3),
        {},
        3,
        "Nesterov momentum requires a momentum and zero dampening",
        lambda ps: optimlab.SGD(ps, lr=0.1, momentum=0.0, nesterov=True),
    ),
    (
        "optimlab SGD dampening 2",
        lambda ps: optimlab.SGD(ps, lr=0.1, momentum=0.9),
        "dampening",
        constant(2.0),
        {},
        0,
        "Invalid dampening value: 2.0",
        lambda ps: optimlab.SGD(ps, lr=0.1, momentum=0.9, dampening=2.0),
    ),
    (
        "optimlab RMSprop alpha 1.5",
        lambda ps: optimlab.RMSprop(ps, lr=0.1),
        "alpha",
        constant(1.5),
        {},
        0,
        "Invalid alpha value: 1.5",
        lambda ps: optimlab.RMSprop(ps, lr=0.1, alpha=1.5),
    ),
    (
        "torch Adadelta rho 1.5",
        lambda ps: torch.optim.Adadelta(ps),
        "rho",
        linear(0.9, 2, final_lr=1.5),  # 0.9, 1.2
        {},
        1,
        "Invalid rho value: 1.2",
        lambda ps: torch.optim.Adadelta(ps, rho=1.2),
    ),
    (
        "torch Rprop etaplus 0.5",
        lambda ps: torch.optim.Rprop(ps),
        "etas[1]",
        constant(0.5),
        {},
        0,
        "Invalid eta value: 0.5",
        lambda ps: torch.optim.Rprop(ps, etas=(0.5, 0.5)),
    ),
]


def _snapshot(opt):
    """Every param-group entry but the params, tensors as (id, value), to compare before/after."""

    def plain(v):
        if isinstance(v, torch.Tensor):
            return ("tensor", id(v), v.item())
        if isinstance(v, (tuple, list)):
            return type(v)(plain(x) for x in v)
        return v

    return [{k: plain(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]


def _adapter(opt, key, schedule, kwargs):
    if key == "lr":
        return ScheduledLR(opt, schedule, **kwargs)
    return ScheduledHyperparameter(opt, key, schedule, **kwargs)


@pytest.mark.parametrize(
    ("make", "key", "schedule", "kwargs", "step", "reason"),
    [row[1:7] for row in REFUSED],
    ids=[row[0] for row in REFUSED],
)
def test_a_refused_value_raises_and_writes_nothing(make, key, schedule, kwargs, step, reason):
    opt = make(_params())
    before = _snapshot(opt)
    pattern = (
        rf"schedule {re.escape(schedule.spec)} at step {step} gives {re.escape(key)}="
        rf".*for param_groups\[0\], which {type(opt).__name__} refuses: {re.escape(reason)}"
    )
    if step == 0:  # the constructor writes step 0
        with pytest.raises(ValueError, match=pattern):
            _adapter(opt, key, schedule, kwargs)
        assert _snapshot(opt) == before
        return
    sched = _adapter(opt, key, schedule, kwargs)
    for _ in range(step - 1):
        sched.step()
    before = _snapshot(opt), sched.last_epoch, sched._step_count, list(sched.get_last_lr())
    with pytest.raises(ValueError, match=pattern):
        sched.step()
    after = _snapshot(opt), sched.last_epoch, sched._step_count, list(sched.get_last_lr())
    assert after == before
    # the same step reached by a jump or by loading a checkpoint is refused too
    with pytest.raises(ValueError, match=pattern):
        sched.step(step)
    state = {**sched.state_dict(), "last_epoch": step}
    with pytest.raises(ValueError, match=pattern):
        sched.load_state_dict(state)
    assert (_snapshot(opt), sched.last_epoch) == before[:2]


@pytest.mark.parametrize(
    ("reason", "construct"),
    [(row[6], row[7]) for row in REFUSED if row[7] is not None],
    ids=[row[0] for row in REFUSED if row[7] is not None],
)
def test_the_constructor_refuses_the_same_value(reason, construct):
    # The oracle: the rules the adapter applies are the constructor's own.
    with pytest.raises(ValueError, match=re.escape(reason.split(":")[0])):
        construct(_params())


def test_message_shows_the_scale_and_the_rounding():
    opt = torch.optim.SGD([{"params": _params(), "lr_scale": -2.0}], lr=0.1)
    with pytest.raises(ValueError, match=r"lr=-0.2 \(schedule value 0.1 \* lr_scale -2.0\)"):
        ScheduledLR(opt, constant(0.1))
    opt = torch.optim.Adam(_params(), betas=_tensor_betas(0.9))
    with pytest.raises(ValueError, match=r"stored in a torch.float32 tensor as 1.0"):
        ScheduledHyperparameter(opt, "betas[0]", constant(0.99999999))


def test_an_overflowing_schedule_is_refused_by_the_schedule_itself():
    # scale(1e308, 10) is inf at every step: the schedule says so before any optimizer sees it
    opt = torch.optim.SGD(_params(), lr=0.1)
    big = scale(constant(1e308), 10)
    with pytest.raises(ValueError, match=re.escape(f"{big.spec} at step 0 is inf")):
        ScheduledLR(opt, big)
    assert opt.param_groups[0]["lr"] == 0.1


# Values the optimizer's constructor accepts are written, however odd: the adapter
# applies the optimizer's rules, not rules of its own.
ACCEPTED = [
    ("torch SGD momentum 3", lambda ps: torch.optim.SGD(ps, lr=0.1), "momentum", 3.0),
    ("optimlab SGD momentum 3", lambda ps: optimlab.SGD(ps, lr=0.1), "momentum", 3.0),
    ("torch RMSprop alpha 1.5", lambda ps: torch.optim.RMSprop(ps), "alpha", 1.5),
    ("torch SGD dampening 2", lambda ps: torch.optim.SGD(ps, lr=0.1), "dampening", 2.0),
    ("torch Adam beta1 0", lambda ps: torch.optim.Adam(ps), "betas[0]", 0.0),
    ("optimlab Adam lr 0", lambda ps: optimlab.Adam(ps), "lr", 0.0),
]


@pytest.mark.parametrize(
    ("make", "key", "value"), [r[1:] for r in ACCEPTED], ids=[r[0] for r in ACCEPTED]
)
def test_values_the_optimizer_accepts_are_written(make, key, value):
    opt = make(_params())
    ScheduledHyperparameter(opt, key, constant(value))
    entry, _, index = key.partition("[")
    written = opt.param_groups[0][entry]
    assert (written[int(index[0])] if index else written) == value
