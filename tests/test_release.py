"""Gradient release (issue 12.6): each param stepped inside backward(), its grad freed at once.

Oracle: the same optimizer stepped the usual way (backward, then step) -- the update is the
same math on the same gradients, so the params must be bitwise equal; except where a step
rounds stochastically (bf16 or 8-bit state), whose released steps draw their own random bits:
they must move as far from the normal run as another rounding seed does."""

from __future__ import annotations

import io

import pytest
import torch

import optimlab
from memory_util import peak_live_bytes
from optimlab.schedules import ScheduledLR, cosine, warmup

CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("Adam", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("Adam", dict(lr=1e-2, state_precision="8bit")),
    ("Adam", dict(lr=1e-2, state_precision="bf16")),
]
# rounding stochastically: a released step draws its own random bits (a rounding key of its
# own), so it equals a normal step in distribution, not bit for bit
STOCHASTIC = {"8bit", "bf16"}


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 96),
        torch.nn.Tanh(),
        torch.nn.Linear(96, 96),
        torch.nn.Tanh(),
        torch.nn.Linear(96, 4),
    ).to(dtype)


def _batches(n, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 64, generator=gen).to(dtype), torch.randn(32, 4, generator=gen)
             .to(dtype)) for _ in range(n)]  # fmt: skip


def _loss(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def _trained(name, kwargs, fused, rounding_seed=0, release=False):
    model = _model()
    opt = getattr(optimlab, name)(
        model.parameters(),
        fused=fused,
        **kwargs,
        **({"rounding_seed": rounding_seed} if rounding_seed else {}),
    )
    sched = ScheduledLR(opt, warmup(3, cosine(kwargs["lr"], 10)))
    released = optimlab.release_gradients(opt) if release else None
    for x, y in _batches(8):
        opt.zero_grad()
        _loss(model, x, y).backward()
        if released is not None:
            assert all(p.grad is None for p in model.parameters())
        opt.step()  # released: finds no grads, a no-op, so loops written for step() still work
        sched.step()
    if released is not None:
        released.remove()
    return list(model.parameters())


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}{c[1]}")
def test_released_steps_equal_normal_steps(case, fused):
    name, kwargs = case
    normal = _trained(name, kwargs, fused)
    released = _trained(name, kwargs, fused, release=True)
    if kwargs.get("state_precision") not in STOCHASTIC:
        for a, b in zip(normal, released, strict=True):
            assert torch.equal(a, b)
        return
    # oracle for "the same in distribution": another rounding seed on the normal path moves
    # the weights as far from the normal run as release does (measured: 1.00x on average)
    flat = [torch.cat([p.detach().flatten() for p in ps]) for ps in (normal, released)]
    reseeded = torch.cat([p.detach().flatten() for p in _trained(name, kwargs, fused, 1)])
    apart, by_seed = (flat[0] - flat[1]).abs().mean(), (flat[0] - reseeded).abs().mean()
    assert apart > 0  # (the bits are drawn anew)
    assert 0.5 * by_seed <= apart <= 2 * by_seed


def test_checkpoint_resume_is_bitwise():
    straight = _model()
    opt = optimlab.Adam(straight.parameters(), lr=1e-2)
    release = optimlab.release_gradients(opt)
    for x, y in _batches(6):
        _loss(straight, x, y).backward()
    release.remove()
    resumed = _model()
    first = optimlab.Adam(resumed.parameters(), lr=1e-2)
    with optimlab.release_gradients(first):
        for x, y in _batches(6)[:3]:
            _loss(resumed, x, y).backward()
    buffer = io.BytesIO()
    torch.save({"model": resumed.state_dict(), "opt": first.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    again = _model(seed=5)
    again.load_state_dict(saved["model"])
    second = optimlab.Adam(again.parameters(), lr=1e-2)
    second.load_state_dict(saved["opt"])
    with optimlab.release_gradients(second):
        for x, y in _batches(6)[3:]:
            _loss(again, x, y).backward()
    for a, b in zip(straight.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bf16_autocast_trains():
    model = _model()
    opt = optimlab.AdamW(model.parameters(), lr=1e-2)
    losses = []
    with optimlab.release_gradients(opt):
        for x, y in _batches(20):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = _loss(model, x, y)
            loss.backward()
            losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_peak_memory_is_lower_by_about_the_gradients():
    """Four 1024x1024 layers: 16 MiB of gradients.  A normal step holds all of them; with
    release at most about one layer's grad exists at a time."""

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(*[torch.nn.Linear(1024, 1024, bias=False) for _ in range(4)])

    x = torch.randn(8, 1024)
    peaks = {}
    for label in ("normal", "released"):
        net = model()
        opt = optimlab.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        release = optimlab.release_gradients(opt) if label == "released" else None

        def loop(net=net, opt=opt):
            for _ in range(2):
                opt.zero_grad(set_to_none=True)
                net(x).square().mean().backward()
                opt.step()

        loop()  # momentum buffers exist before measuring
        peaks[label] = peak_live_bytes(loop)
        if release:
            release.remove()
    grads = 4 * 1024 * 1024 * 4
    assert peaks["released"] <= peaks["normal"] - 0.6 * grads, peaks


def test_needs_an_optimlab_optimizer():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match="optimlab optimizer"):
        optimlab.release_gradients(torch.optim.SGD([p], lr=0.1))
