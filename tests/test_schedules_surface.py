"""The adapters have every attribute a torch LRScheduler has, with the same types and values.

The oracle is a real ``torch.optim.lr_scheduler`` scheduler driven side by side
with an adapter whose schedule agrees with it (``StepLR(step_size=3, gamma=0.5)``
and ``step_decay(0.1, 3, 0.5)``: powers of 0.5 are exact, so values agree to the bit).
Frameworks read these attributes: Accelerate's ``AcceleratedScheduler`` adds to
``_step_count`` during gradient accumulation, Lightning checks ``optimizer``,
HF Trainer calls ``get_last_lr()``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler, StepLR

import optimlab
from optimlab.schedules import ScheduledHyperparameter, ScheduledLR, constant, step_decay

# What torch's own LRScheduler sets or declares, and frameworks read.
SURFACE = [
    "optimizer",
    "base_lrs",
    "last_epoch",
    "_step_count",
    "_last_lr",
    "_get_lr_called_within_step",
    "_is_initial",
]


def _pair(lr=0.1, make=torch.optim.SGD):
    """(torch's StepLR, our ScheduledLR) on two optimizers built alike."""
    torch.manual_seed(0)
    params = [torch.randn(3, requires_grad=True)]
    ours_opt = make([p.detach().clone().requires_grad_() for p in params], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's call-order warnings are not under test
        theirs = StepLR(make(params, lr=lr), step_size=3, gamma=0.5)
    ours = ScheduledLR(ours_opt, step_decay(0.1, 3, 0.5))
    return theirs, ours


def _surface(sched):
    """The attributes frameworks read, as comparable plain values (tensors as floats)."""

    def plain(v):
        if isinstance(v, torch.Tensor):
            return ("tensor", v.dtype, v.item())
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return {
        "base_lrs": plain(sched.base_lrs),
        "last_epoch": sched.last_epoch,
        "_step_count": sched._step_count,
        "_last_lr": plain(sched._last_lr),
        "get_last_lr()": plain(sched.get_last_lr()),
        "_get_lr_called_within_step": sched._get_lr_called_within_step,
        "_is_initial": sched._is_initial,
        "lr in the group": plain(sched.optimizer.param_groups[0]["lr"]),
    }


def _types(sched):
    return {
        name: (type(getattr(sched, name)), [type(v) for v in getattr(sched, name)])
        if isinstance(getattr(sched, name), list)
        else type(getattr(sched, name))
        for name in SURFACE
        if name != "optimizer"
    }


@pytest.mark.parametrize(
    "lr", [0.1, torch.tensor(0.1)], ids=["float lr", "tensor lr (filled in place)"]
)
def test_same_attributes_types_and_values_as_torch_after_each_step(lr):
    theirs, ours = _pair(lr=lr, make=torch.optim.Adam)
    assert isinstance(ours, LRScheduler)
    for name in SURFACE:
        assert hasattr(ours, name), name
    assert ours.optimizer.param_groups[0]["params"] is not theirs.optimizer.param_groups[0]
    for _ in range(8):
        assert _types(ours) == _types(theirs)
        assert _surface(ours) == _surface(theirs)
        for opt in (theirs.optimizer, ours.optimizer):
            opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.step()
        ours.step()
    assert ours.last_epoch == 8 and ours.get_last_lr()[0] == pytest.approx(0.1 * 0.5**2)


def test_step_count_survives_frameworks_adding_to_it_and_a_checkpoint():
    # Accelerate's AcceleratedScheduler does `scheduler._step_count += 1` on the micro-steps
    # of gradient accumulation; the lr moves only on step().  As torch's.
    theirs, ours = _pair()
    for sched in (theirs, ours):
        sched._step_count += 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step()
    assert _surface(ours) == _surface(theirs)
    assert ours.state_dict()["_step_count"] == theirs.state_dict()["_step_count"] == 5
    assert ours.state_dict()["last_epoch"] == theirs.state_dict()["last_epoch"] == 1

    _, fresh = _pair()
    fresh.load_state_dict(ours.state_dict())
    assert _surface(fresh) == _surface(ours)


def test_step_with_an_epoch_as_torch_accepts_it():
    theirs, ours = _pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: EPOCH_DEPRECATION_WARNING
        theirs.step(6)
        theirs.step(epoch=7)
    ours.step(6)
    ours.step(epoch=7)
    assert _surface(ours) == _surface(theirs)  # step 7: 0.1 * 0.5**2, both counted 3 steps


def test_get_lr_gives_the_current_values():
    _, ours = _pair()
    ours.step(4)
    assert ours.get_lr() == [0.05] == ours.get_last_lr()
    assert ours._get_lr_called_within_step is False


def test_base_lrs_are_the_values_before_the_adapter_took_over():
    params = [torch.zeros(2, requires_grad=True)]
    opt = optimlab.Adam(
        [{"params": params[:1]}, {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.5}],
        lr=0.1,
    )
    sched = ScheduledLR(opt, constant(0.01))
    assert sched.base_lrs == [0.1, 0.5]
    assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr() == [0.01, 0.01]
    beta = ScheduledHyperparameter(opt, "betas[0]", constant(0.5))
    assert beta.base_lrs == [0.9, 0.9] and beta.get_last_lr() == [0.5, 0.5]
    assert beta._step_count == 1 and beta.last_epoch == 0


def test_base_lrs_follow_a_torch_schedulers_initial_lr():
    # A torch scheduler built first records initial_lr; torch's next scheduler reads that.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StepLR(opt, 1, gamma=0.5).step()
    assert opt.param_groups[0]["lr"] == 0.05
    assert ScheduledLR(opt, constant(0.2)).base_lrs == [0.1]
