"""ScheduledLR / ScheduledHyperparameter: torch's LRScheduler contract, any optimizer, any key."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler, StepLR

import optimlab
from optimlab.schedules import (
    ScheduledHyperparameter,
    ScheduledLR,
    constant,
    cosine,
    linear,
    one_cycle,
    one_cycle_momentum,
    step_decay,
    warmup,
)

SCHEDULE = warmup(3, cosine(0.1, 10, final_lr=0.01))
EXPECTED = [0.0, 0.1 / 3, 0.2 / 3, *(cosine(0.1, 10, final_lr=0.01)(t) for t in range(12))]

OPTIMIZERS = {
    "torch.SGD": lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9),
    "torch.Adam": lambda ps: torch.optim.Adam(ps, lr=1.0),
    "torch.AdamW": lambda ps: torch.optim.AdamW(ps, lr=1.0),
    "torch.RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=1.0),
    "torch.Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1.0),
    "optimlab.SGD": lambda ps: optimlab.SGD(ps, lr=1.0, momentum=0.9),
    "optimlab.Adam": lambda ps: optimlab.Adam(ps, lr=1.0),
    "optimlab.RMSprop": lambda ps: optimlab.RMSprop(ps, lr=1.0),
}


def _params(n=2):
    torch.manual_seed(0)
    return [torch.randn(3, requires_grad=True) for _ in range(n)]


def _step(opt, sched):
    for group in opt.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    opt.step()
    sched.step()


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_drives_any_optimizer_with_torch_step_convention(make):
    opt = make(_params(1))
    sched = ScheduledLR(opt, SCHEDULE)
    assert isinstance(sched, LRScheduler)
    seen = [opt.param_groups[0]["lr"]]  # after construction: schedule(0)
    assert sched.last_epoch == 0 and sched.get_last_lr() == [SCHEDULE(0)]
    for t in range(1, len(EXPECTED)):
        _step(opt, sched)
        assert sched.last_epoch == t
        assert sched.get_last_lr() == [opt.param_groups[0]["lr"]]
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx(EXPECTED, rel=1e-15)
    assert seen == [SCHEDULE(t) for t in range(len(EXPECTED))]


def test_lr_scale_per_group_like_timm():
    a, b, c = _params(3)
    opt = torch.optim.SGD(
        [{"params": [a]}, {"params": [b], "lr_scale": 0.5}, {"params": [c], "lr_scale": 0.0}],
        lr=1.0,
    )
    sched = ScheduledLR(opt, step_decay(0.8, 1, 0.5))
    assert [g["lr"] for g in opt.param_groups] == [0.8, 0.4, 0.0]
    _step(opt, sched)
    assert [g["lr"] for g in opt.param_groups] == [0.4, 0.2, 0.0]
    assert sched.get_last_lr() == [0.4, 0.2, 0.0]


def test_scale_key_can_be_ignored_or_renamed():
    a, b = _params(2)
    groups = [{"params": [a], "lr_scale": 0.5, "mult": 2.0}, {"params": [b]}]
    opt = torch.optim.SGD(groups, lr=1.0)
    ScheduledLR(opt, constant(0.1), scale_key=None)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    ScheduledLR(opt, constant(0.1), scale_key="mult")
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.1]


def test_tensor_lr_is_updated_in_place():
    opt = torch.optim.Adam(_params(1), lr=torch.tensor(1.0))
    lr = opt.param_groups[0]["lr"]
    sched = ScheduledLR(opt, SCHEDULE)
    for t in range(1, 6):
        _step(opt, sched)
        assert opt.param_groups[0]["lr"] is lr  # same tensor object
        assert lr.item() == pytest.approx(SCHEDULE(t), rel=1e-6)  # float32 tensor
    last = sched.get_last_lr()[0]
    assert isinstance(last, torch.Tensor) and last is not lr  # a copy, as torch returns
    last.fill_(123.0)
    assert lr.item() != 123.0


def test_tensor_lr_keeps_a_compiled_step_from_recompiling():
    @torch.compile(backend="eager", fullgraph=True)
    def update(param, grad, lr):
        param.sub_(grad * lr)

    def run(lr):
        torch._dynamo.reset()
        param = torch.zeros(4)
        opt = torch.optim.SGD([param], lr=lr)
        sched = ScheduledLR(opt, linear(0.1, 10))
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(5):
                update(param, torch.ones(4), opt.param_groups[0]["lr"])
                sched.step()
        return param

    assert torch.allclose(run(torch.tensor(0.1)), torch.full((4,), -0.4))
    # Control: a float lr changes every step, and dynamo recompiles on it.
    with pytest.raises(Exception, match="[Rr]ecompil"):
        run(0.1)


@pytest.mark.parametrize(
    ("make", "key", "read"),
    [
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5), "momentum", lambda g: g["momentum"]),
        (lambda ps: torch.optim.AdamW(ps, lr=0.1), "weight_decay", lambda g: g["weight_decay"]),
        (lambda ps: torch.optim.Adam(ps, lr=0.1), "betas[0]", lambda g: g["betas"][0]),
        (lambda ps: optimlab.Adam(ps, lr=0.1), "betas[0]", lambda g: g["betas"][0]),
        (lambda ps: optimlab.SGD(ps, lr=0.1, momentum=0.5), "momentum", lambda g: g["momentum"]),
    ],
    ids=["SGD momentum", "AdamW weight_decay", "Adam beta1", "optimlab Adam beta1", "optimlab SGD"],
)
def test_any_hyperparameter(make, key, read):
    opt = make(_params(1))
    schedule = one_cycle_momentum(20)
    sched = ScheduledHyperparameter(opt, key, schedule)
    seen = [read(opt.param_groups[0])]
    for _ in range(19):
        _step(opt, sched)
        seen.append(read(opt.param_groups[0]))
    assert seen == [schedule(t) for t in range(20)]
    assert opt.param_groups[0]["lr"] == 0.1  # untouched
    if key == "betas[0]":
        assert opt.param_groups[0]["betas"][1] == 0.999
        assert isinstance(opt.param_groups[0]["betas"], tuple)


def test_tensor_beta1_is_updated_in_place():
    betas = (torch.tensor(0.9), torch.tensor(0.999))
    opt = torch.optim.Adam(_params(1), lr=0.1, betas=betas)
    sched = ScheduledHyperparameter(opt, "betas[0]", linear(0.9, 4, final_lr=0.5))
    _step(opt, sched)
    assert opt.param_groups[0]["betas"][0] is betas[0]
    assert betas[0].item() == pytest.approx(0.8)


def test_one_cycle_pair_reproduces_torch_onecycle_lr_and_beta1():
    steps = 100

    def trace(make):
        opt = torch.optim.Adam(_params(1), lr=0.1)
        scheds = make(opt)
        out = []
        for _ in range(steps):
            out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
            _step(opt, scheds[0])
            for extra in scheds[1:]:
                extra.step()
        return out

    ours = trace(
        lambda o: (
            ScheduledLR(o, one_cycle(0.1, steps)),
            ScheduledHyperparameter(o, "betas[0]", one_cycle_momentum(steps)),
        )
    )
    theirs = trace(lambda o: (torch.optim.lr_scheduler.OneCycleLR(o, 0.1, total_steps=steps),))
    for (lr, beta), (torch_lr, torch_beta) in zip(ours, theirs, strict=True):
        assert lr == pytest.approx(torch_lr, rel=1e-12)
        assert beta == pytest.approx(torch_beta, rel=1e-12)


def test_no_call_order_warnings_ever():
    opt = torch.optim.SGD(_params(1), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = ScheduledLR(opt, SCHEDULE)
        sched.step()  # before any optimizer.step(): torch warns here, we must not
        sched.step()
        _step(opt, sched)
        sched.get_lr()  # torch warns when get_lr is called outside step
        sched.load_state_dict(sched.state_dict())
        sched.step(epoch=7)  # torch warns EPOCH_DEPRECATION_WARNING
    assert opt.param_groups[0]["lr"] == SCHEDULE(7)


def test_the_warning_check_can_fail():
    # Control for the test above: torch's own scheduler does warn in that order.
    opt = torch.optim.SGD(_params(1), lr=0.1)
    sched = StepLR(opt, 1)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()


def test_step_with_epoch_jumps_to_that_step():
    opt = torch.optim.SGD(_params(1), lr=0.1)
    sched = ScheduledLR(opt, SCHEDULE)
    sched.step(epoch=9)
    assert sched.last_epoch == 9 and opt.param_groups[0]["lr"] == SCHEDULE(9)
    sched.step()
    assert opt.param_groups[0]["lr"] == SCHEDULE(10)
    sched.step(0)
    assert opt.param_groups[0]["lr"] == SCHEDULE(0)


def test_state_dict_is_the_step_and_the_schedule():
    opt = torch.optim.SGD(_params(1), lr=0.1)
    sched = ScheduledLR(opt, SCHEDULE)
    for _ in range(4):
        _step(opt, sched)
    expected = {"last_epoch": 4, "schedule": SCHEDULE.spec, "key": "lr", "_step_count": 5}
    assert sched.state_dict() == expected
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain ints and strings only

    other = torch.optim.SGD(_params(1), lr=0.5)
    restored = ScheduledLR(other, SCHEDULE)
    restored.load_state_dict(state)  # no optimizer state loaded: the lr is set at once
    assert other.param_groups[0]["lr"] == SCHEDULE(4)
    assert restored.last_epoch == 4 and restored.get_last_lr() == [SCHEDULE(4)]
    assert restored._step_count == 5


def test_loads_the_state_dicts_saved_before_step_count():
    # the adapters saved {"last_epoch", "schedule", "key"} before they had _step_count
    opt = torch.optim.SGD(_params(1), lr=0.5)
    sched = ScheduledLR(opt, SCHEDULE)
    sched.load_state_dict({"last_epoch": 6, "schedule": SCHEDULE.spec, "key": "lr"})
    assert sched.last_epoch == 6 and opt.param_groups[0]["lr"] == SCHEDULE(6)
    assert sched._step_count == 7  # what torch's counter reads after 6 steps


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"last_epoch": 4, "schedule": "cosine(0.1, 20)", "key": "lr"}, "for schedule cosine"),
        ({"last_epoch": 4, "schedule": SCHEDULE.spec, "key": "momentum"}, "on 'momentum'"),
        ({"last_epoch": 4, "base_lrs": [0.1]}, "not a ScheduledLR state_dict"),
        (StepLR(torch.optim.SGD(_params(1), lr=0.1), 3).state_dict(), "not a ScheduledLR"),
        ([4], "not a ScheduledLR state_dict"),
        ({"last_epoch": -1, "schedule": SCHEDULE.spec, "key": "lr"}, "step must be"),
        (
            {"last_epoch": 4, "schedule": SCHEDULE.spec, "key": "lr", "_step_count": 0},
            "_step_count must be a positive integer, got _step_count=0",
        ),
        (
            {"last_epoch": 4, "schedule": SCHEDULE.spec, "key": "lr", "base_lrs": [0.1]},
            "not a ScheduledLR state_dict",
        ),
    ],
    ids=[
        "other schedule",
        "other key",
        "missing keys",
        "torch StepLR state",
        "a list",
        "bad step",
        "bad step count",
        "unknown key",
    ],
)
def test_load_state_dict_refuses_a_different_schedule(state, match):
    opt = torch.optim.SGD(_params(1), lr=0.1)
    sched = ScheduledLR(opt, SCHEDULE)
    with pytest.raises(ValueError, match=match):
        sched.load_state_dict(state)
    assert sched.last_epoch == 0 and opt.param_groups[0]["lr"] == SCHEDULE(0)


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((object(), SCHEDULE), TypeError, "object is not an Optimizer"),
        (("OPT", lambda t: 0.1), TypeError, "schedule must be an optimlab schedule"),
        (("OPT", 0.1), TypeError, "schedule must be an optimlab schedule"),
    ],
    ids=["not an optimizer", "a lambda", "a number"],
)
def test_constructor_errors(args, error, match):
    opt = torch.optim.SGD(_params(1), lr=0.1)
    args = tuple(opt if a == "OPT" else a for a in args)
    with pytest.raises(error, match=match):
        ScheduledLR(*args)


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("momentum", "param_groups\\[0\\] has no 'momentum' entry"),
        ("betas[2]", "has no element \\[2\\]"),
        ("lr[0]", "has no element \\[0\\]"),
        ("betas[-1]", "key must be a param-group entry"),
        ("", "key must be a param-group entry"),
        ("betas 0", "key must be a param-group entry"),
    ],
)
def test_bad_keys(key, match):
    opt = torch.optim.Adam(_params(1), lr=0.1)
    with pytest.raises(ValueError, match=match):
        ScheduledHyperparameter(opt, key, constant(0.5))


def test_step_errors():
    sched = ScheduledLR(torch.optim.SGD(_params(1), lr=0.1), SCHEDULE)
    with pytest.raises(ValueError, match="step must be a non-negative integer, got step=-1"):
        sched.step(-1)
    with pytest.raises(ValueError, match="got step=1.5"):
        sched.step(1.5)


def test_repr():
    sched = ScheduledLR(torch.optim.SGD(_params(1), lr=0.1), constant(0.1))
    assert repr(sched) == "ScheduledLR(key='lr', schedule=constant(0.1), last_epoch=0)"


# (optimizer, constructor kwargs, the hyperparameter scheduled besides lr, its schedule)
TRAINED = [
    ("SGD", dict(lr=0.1, momentum=0.9), "momentum", one_cycle_momentum(12)),
    ("Adam", dict(lr=0.1), "betas[0]", one_cycle_momentum(12)),
    ("Adam", dict(lr=torch.tensor(0.1)), "betas[0]", one_cycle_momentum(12)),
    ("RMSprop", dict(lr=0.1, momentum=0.5), "momentum", linear(0.5, 12)),
]


@pytest.mark.parametrize("fused", [False, None], ids=["reference", "fused kernels"])
@pytest.mark.parametrize(
    ("name", "kwargs", "key", "schedule"),
    TRAINED,
    ids=["SGD momentum", "Adam beta1", "Adam tensor lr", "RMSprop momentum"],
)
def test_optimlab_steps_with_every_value_the_adapters_write(name, kwargs, key, schedule, fused):
    # The values change every step: an optimizer that kept an earlier lr or beta1
    # (in a cached kernel plan, say) drifts away from torch.optim driven alike.
    def train(make):
        torch.manual_seed(0)
        params = [torch.randn(5, 4, requires_grad=True), torch.randn(7, requires_grad=True)]
        extra = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        opt = make(params, **extra)
        scheds = [
            ScheduledLR(opt, warmup(3, cosine(0.1, 9))),
            ScheduledHyperparameter(opt, key, schedule),
        ]
        for t in range(12):
            for p in params:
                p.grad = torch.sin(p.detach() * (t + 1))
            opt.step()
            for sched in scheds:
                sched.step()
        return [p.detach() for p in params]

    ours = train(lambda ps, **kw: getattr(optimlab, name)(ps, fused=fused, **kw))
    theirs = train(getattr(torch.optim, name))
    for a, b in zip(ours, theirs, strict=True):
        if fused is False:  # the reference path is torch's for-loop math, op for op
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
