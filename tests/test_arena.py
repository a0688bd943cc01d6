"""The state arena (issue 11.1): a group's state of one kind is one buffer, in param order,
and nothing a user sees changes -- state_dict interop with torch.optim, resume, add_param_group,
params without grads."""

from __future__ import annotations

import io

import pytest
import torch

import optimlab
from optimlab.kernels import cpu as cpu_kernels

pytestmark = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason=cpu_kernels.UNAVAILABLE)


def _params(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(37,), (8, 9), (2, 3, 4, 5), (1000,), (5,), (64,)][:n]
    params = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    params[2].data = params[2].data.contiguous(memory_format=torch.channels_last)
    return params


def _grads(params, step, skip=None):
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        g = torch.randn(p.shape, generator=gen)
        p.grad = None if i == skip else torch.empty_like(p).copy_(g)


def _arena_of(opt, params, key):
    return {opt.state[p][key].untyped_storage().data_ptr() for p in params if p in opt.state}


def test_state_of_a_kind_is_one_buffer_in_param_order():
    params = _params()
    opt = optimlab.Adam(params, lr=0.01)
    _grads(params, 0)
    opt.step()
    for key in ("exp_avg", "exp_avg_sq"):
        assert len(_arena_of(opt, params, key)) == 1
        starts = [opt.state[p][key].data_ptr() for p in params]
        assert starts == sorted(starts)
        assert all(s % 64 == 0 for s in starts)  # every view on a cache line
    assert opt.state[params[2]]["exp_avg"].stride() == params[2].stride()  # channels-last kept


def test_arena_trains_bitwise_like_the_reference_and_torch_loads_it():
    mine, theirs = _params(), _params()
    opt = optimlab.SGD(mine, lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, foreach=False)
    for step in range(5):
        skip = step % 3 if step else None  # some params without grads: their state waits
        _grads(mine, step, skip)
        _grads(theirs, step, skip)
        opt.step()
        ref.step()
    for a, b in zip(mine, theirs, strict=True):
        assert torch.equal(a, b)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    again = torch.optim.SGD(theirs, lr=0.1, momentum=0.9)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(mine, theirs, strict=True):
        assert torch.equal(again.state[b]["momentum_buffer"], opt.state[a]["momentum_buffer"])


def test_a_torch_checkpoint_is_repacked_and_resumes_bitwise():
    straight, resumed = _params(), _params()
    theirs = torch.optim.Adam(resumed, lr=0.01)
    reference = optimlab.Adam(straight, lr=0.01, fused=False)
    for step in range(3):
        _grads(resumed, step)
        _grads(straight, step)
        theirs.step()
        reference.step()
    mine = optimlab.Adam(resumed, lr=0.01)
    mine.load_state_dict(theirs.state_dict())
    for step in range(3, 6):
        _grads(resumed, step)
        _grads(straight, step)
        mine.step()
        reference.step()
    assert len(_arena_of(mine, resumed, "exp_avg")) == 1
    for a, b in zip(resumed, straight, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_add_param_group_gets_an_arena_of_its_own():
    first, second = _params(3), _params(3, seed=1)
    opt = optimlab.Adam(first, lr=0.01)
    _grads(first, 0)
    opt.step()
    opt.add_param_group({"params": second, "lr": 0.02})
    _grads(first + second, 1)
    opt.step()
    assert len(_arena_of(opt, first, "exp_avg")) == 1
    assert len(_arena_of(opt, second, "exp_avg")) == 1
    assert _arena_of(opt, first, "exp_avg") != _arena_of(opt, second, "exp_avg")
