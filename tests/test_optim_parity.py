"""optimlab's reference path against torch.optim: the same trajectory, bit for bit.

The reference path (``fused=False``) performs the same tensor operations as
torch's single-tensor implementation, so on CPU the results are not merely
close but equal (tolerance 0).  Rows cover every hyperparameter torch has;
patterns cover several param groups with different hyperparameters and steps
where some gradients are ``None``.
"""

from __future__ import annotations

import pytest
import torch

from optim_cases import TORCH_CASES, case_id, ours, theirs

STEPS = 25
SHAPES = [(7, 5), (13,), (), (2, 3, 4)]


def _params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in SHAPES]


def _groups(params: list[torch.Tensor], pattern: str, kwargs: dict) -> list:
    if pattern != "groups":
        return params
    lr = kwargs.get("lr", 0.01)
    # the second group overrides lr and weight decay
    return [
        {"params": params[:2]},
        {"params": params[2:], "lr": lr * 0.5, "weight_decay": 0.03},
    ]


def _set_grads(params: list[torch.Tensor], step: int, pattern: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    for i, p in enumerate(params):
        noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if pattern == "some_none" and (step + i) % 3 == 0:
            p.grad = None
        else:
            # depends on the parameter, so any divergence feeds back and grows
            p.grad = noise + 0.5 * p.detach()


def run(optimizer, params, steps: int, pattern: str, seed: int = 0) -> None:
    for step in range(steps):
        _set_grads(params, step, pattern, seed)
        optimizer.step()


@pytest.mark.parametrize("pattern", ["dense", "some_none", "groups"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_reference_matches_torch_bitwise(case, dtype, pattern):
    name, kwargs = case
    a, b = _params(dtype), _params(dtype)
    opt_a = ours(name, _groups(a, pattern, kwargs), kwargs, fused=False)
    opt_b = theirs(name, _groups(b, pattern, kwargs), kwargs)
    run(opt_a, a, STEPS, pattern)
    run(opt_b, b, STEPS, pattern)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    _assert_same_state(opt_a, opt_b, rtol=0, atol=0)


def _assert_same_state(opt_a, opt_b, rtol, atol):
    """Same keys, shapes, dtypes and values, parameter by parameter."""
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        assert state_a[index].keys() == state_b[index].keys(), index
        for key, value in state_a[index].items():
            other = state_b[index][key]
            assert value.dtype == other.dtype and value.shape == other.shape, (index, key)
            torch.testing.assert_close(value, other, rtol=rtol, atol=atol)


# complex parameters: torch views them as real pairs; so does optimlab
COMPLEX_CASES = [c for c in TORCH_CASES if not isinstance(c[1].get("lr"), torch.Tensor)]


@pytest.mark.parametrize("case", COMPLEX_CASES, ids=case_id)
def test_complex_params_match_torch(case):
    name, kwargs = case
    gen = torch.Generator().manual_seed(3)
    init = torch.randn(6, 4, dtype=torch.complex64, generator=gen)
    a, b = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_a, opt_b = ours(name, [a], kwargs, fused=False), theirs(name, [b], kwargs)
    for _ in range(15):
        g = torch.randn(6, 4, dtype=torch.complex64, generator=gen)
        a.grad, b.grad = g + 0.5 * a.detach(), g + 0.5 * b.detach()
        opt_a.step()
        opt_b.step()
    # complex multiplication by a real scalar may differ from torch's in the last bit
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    _assert_same_state(opt_a, opt_b, rtol=1e-6, atol=1e-7)
    for state in opt_a.state.values():
        for key, value in state.items():
            if key not in ("step", "mu_product"):
                assert value.is_complex(), key


SPARSE_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, maximize=True)),
]


@pytest.mark.parametrize("case", SPARSE_CASES, ids=case_id)
def test_sparse_gradients_match_torch(case):
    """An embedding with sparse=True produces sparse gradients; SGD and Adagrad take them."""
    name, kwargs = case
    torch.manual_seed(0)
    emb_a = torch.nn.Embedding(20, 4, sparse=True)
    emb_b = torch.nn.Embedding(20, 4, sparse=True)
    emb_b.load_state_dict(emb_a.state_dict())
    opt_a = ours(name, emb_a.parameters(), kwargs, fused=False)
    opt_b = theirs(name, emb_b.parameters(), kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        idx = torch.randint(0, 20, (8,), generator=gen)  # repeated rows: coalescing matters
        for emb, opt in ((emb_a, opt_a), (emb_b, opt_b)):
            opt.zero_grad()
            emb(idx).pow(2).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
    torch.testing.assert_close(emb_a.weight, emb_b.weight, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["RMSprop", "Adam", "AdamW", "NAdam"])
def test_sparse_gradients_rejected_like_torch(name):
    emb_a, emb_b = torch.nn.Embedding(5, 2, sparse=True), torch.nn.Embedding(5, 2, sparse=True)
    for emb in (emb_a, emb_b):
        emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        theirs(name, emb_b.parameters(), {}).step()
    with pytest.raises(RuntimeError, match=f"^{name} does not support sparse gradients"):
        ours(name, emb_a.parameters(), {}, fused=False).step()


def test_tensor_betas_match_torch():
    """Adam accepts 1-element tensor betas, as torch does (within float32 rounding of beta)."""
    a, b = _params(torch.float32), _params(torch.float32)
    betas = (torch.tensor(0.9), torch.tensor(0.99))
    opt_a = ours("Adam", a, dict(lr=0.01, betas=betas), fused=False)
    opt_b = theirs("Adam", b, dict(lr=0.01, betas=betas))
    run(opt_a, a, STEPS, "dense")
    run(opt_b, b, STEPS, "dense")
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
