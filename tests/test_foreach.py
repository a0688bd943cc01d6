"""The foreach backend (``foreach=True``) against torch.optim's own foreach implementation.

The backend performs the same ``torch._foreach_*`` ops as torch's ``_multi_tensor_*``
functions, so on CPU a step is bitwise equal to ``torch.optim.X(foreach=True)`` (tolerance 0)
for every row of the table; the lecture's forms, which torch lacks, are compared with
optimlab's reference path (``fused=False``), again bitwise.  A spy checks that the backend,
not the reference path, stepped every tensor.
"""

from __future__ import annotations

import copy

import pytest
import torch

import optimlab
from optim_cases import LECTURE_CASES, TORCH_CASES, case_id, ours, theirs
from optimlab.kernels import foreach
from optimlab.optimizers import dispatch
from test_optim_parity import STEPS, _assert_same_state, _groups, _params, run


@pytest.fixture
def stepped(monkeypatch):
    """The number of tensors the foreach backend has stepped so far."""
    count = [0]
    original = foreach.run

    def spy(call, params, *args):
        count[0] += len(params)
        return original(call, params, *args)

    monkeypatch.setattr(foreach, "run", spy)
    return count


def _torch_foreach_kwargs(name: str, kwargs: dict) -> dict:
    """torch's eager foreach Adam refuses a tensor lr (unless capturable, which needs a GPU);
    optimlab's takes its value, so the oracle gets the value."""
    if name in ("Adam", "AdamW") and isinstance(kwargs.get("lr"), torch.Tensor):
        return {**kwargs, "lr": kwargs["lr"].item()}
    return kwargs


def _grads_given(pattern: str, params: list) -> int:
    """How many (param, step) pairs have a grad under ``pattern`` (see _set_grads)."""
    if pattern != "some_none":
        return STEPS * len(params)
    return sum((step + i) % 3 != 0 for step in range(STEPS) for i in range(len(params)))


@pytest.mark.parametrize("pattern", ["dense", "some_none", "groups"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_foreach_matches_torch_foreach_bitwise(case, dtype, pattern, stepped):
    name, kwargs = case
    a, b = _params(dtype), _params(dtype)
    opt_a = ours(name, _groups(a, pattern, kwargs), kwargs, foreach=True)
    theirs_kwargs = _torch_foreach_kwargs(name, kwargs)
    opt_b = theirs(name, _groups(b, pattern, theirs_kwargs), theirs_kwargs, foreach=True)
    run(opt_a, a, STEPS, pattern)
    run(opt_b, b, STEPS, pattern)
    assert stepped[0] == _grads_given(pattern, a)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    _assert_same_state(opt_a, opt_b, rtol=0, atol=0)


@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_grads_are_not_written(case):
    """Only read (torch's foreach Nesterov SGD writes g + mu * b into p.grad when neither
    maximize nor weight decay gave it a copy; optimlab's does not)."""
    name, kwargs = case
    params = _params(torch.float32)
    opt = ours(name, params, kwargs, foreach=True)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for p, g in zip(params, grads, strict=True):
            assert torch.equal(p.grad, g)


LOOKAHEAD_CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, nesterov_form="lookahead")),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, nesterov_form="lookahead",
                 momentum_form="lecture", weight_decay=0.1)),
]  # fmt: skip


@pytest.mark.parametrize("pattern", ["dense", "some_none", "groups"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", LECTURE_CASES, ids=case_id)
def test_lecture_forms_match_reference_bitwise(case, dtype, pattern, stepped):
    """torch has no oracle here: the reference path is one.  The foreach ops are the
    reference's ops in the same order, so the tolerance is 0."""
    name, kwargs = case
    a, b = _params(dtype), _params(dtype)
    opt_a = ours(name, _groups(a, pattern, kwargs), kwargs, foreach=True)
    opt_b = ours(name, _groups(b, pattern, kwargs), kwargs, fused=False)
    run(opt_a, a, STEPS, pattern)
    run(opt_b, b, STEPS, pattern)
    assert stepped[0] == _grads_given(pattern, a)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    _assert_same_state(opt_a, opt_b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", LOOKAHEAD_CASES, ids=case_id)
def test_lookahead_nesterov_matches_reference_bitwise(case, dtype, stepped):
    """The optimizer's step moves to the look-ahead point for the closure; the update the
    backend then runs is plain momentum."""
    name, kwargs = case
    target = torch.randn(3, 4, dtype=dtype, generator=torch.Generator().manual_seed(1))
    results = []
    for backend in (dict(foreach=True), dict(fused=False)):
        w = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
        opt = ours(name, [w], kwargs, **backend)

        def closure(w=w, opt=opt):
            opt.zero_grad()
            loss = ((w - target) ** 4).sum()  # not quadratic: the look-ahead point matters
            loss.backward()
            return loss

        for _ in range(STEPS):
            opt.step(closure)
        results.append((w.detach(), opt))
    assert stepped[0] == STEPS
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    _assert_same_state(results[0][1], results[1][1], rtol=0, atol=0)


# rows whose torch foreach oracle takes its hyperparameters as given
INTEROP_CASES = [c for c in TORCH_CASES if _torch_foreach_kwargs(*c) is c[1]]


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
@pytest.mark.parametrize("case", INTEROP_CASES, ids=case_id)
def test_state_dict_round_trip_with_torch_foreach(case, direction):
    """Ten steps on one side, the state_dict into the other, ten more steps on both:
    the same trajectory as staying on torch's foreach path throughout."""
    name, kwargs = case
    first, second = (ours, theirs) if direction == "ours_to_torch" else (theirs, ours)
    a, b = _params(torch.float32), _params(torch.float32)
    opt_a = first(name, a, kwargs, foreach=True)
    run(opt_a, a, 10, "dense")
    with torch.no_grad():
        for pa, pb in zip(a, b, strict=True):
            pb.copy_(pa)
    opt_b = second(name, b, kwargs, foreach=True)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # else both share the state
    run(opt_a, a, 10, "dense", seed=1)
    run(opt_b, b, 10, "dense", seed=1)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    _assert_same_state(opt_a, opt_b, rtol=0, atol=0)


COMPLEX_CASES = [c for c in INTEROP_CASES if not isinstance(c[1].get("lr"), torch.Tensor)]


@pytest.mark.parametrize("case", COMPLEX_CASES, ids=case_id)
def test_complex_params_match_torch_foreach(case, stepped):
    """Complex tensors step as real views of (real, imag) pairs, beside real ones."""
    name, kwargs = case
    gen = torch.Generator().manual_seed(3)
    inits = [torch.randn(6, 4, dtype=torch.complex64, generator=gen), torch.randn(5, generator=gen)]
    a = [t.clone().requires_grad_() for t in inits]
    b = [t.clone().requires_grad_() for t in inits]
    opt_a, opt_b = ours(name, a, kwargs, foreach=True), theirs(name, b, kwargs, foreach=True)
    for _ in range(15):
        noise = [torch.randn(t.shape, dtype=t.dtype, generator=gen) for t in inits]
        for params in (a, b):
            for p, n in zip(params, noise, strict=True):
                p.grad = n + 0.5 * p.detach()
        opt_a.step()
        opt_b.step()
    assert stepped[0] == 15 * 2
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    _assert_same_state(opt_a, opt_b, rtol=0, atol=0)
    assert all(
        v.is_complex() for k, v in opt_a.state[a[0]].items() if k not in ("step", "mu_product")
    )


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "NAdam"])
def test_mixed_dtypes_in_one_group_match_torch_foreach(name, stepped):
    """One group, three dtypes: stepped per (device, dtype) as torch groups them."""
    kwargs = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float32]
    gen = torch.Generator().manual_seed(5)
    inits = [torch.randn(4, 3, generator=gen).to(d) for d in dtypes]
    a = [t.clone().requires_grad_() for t in inits]
    b = [t.clone().requires_grad_() for t in inits]
    opt_a, opt_b = ours(name, a, kwargs, foreach=True), theirs(name, b, kwargs, foreach=True)
    for _ in range(10):
        noise = [torch.randn(4, 3, generator=gen).to(d) for d in dtypes]
        for params, opt in ((a, opt_a), (b, opt_b)):
            for p, n in zip(params, noise, strict=True):
                p.grad = n + 0.5 * p.detach()
            opt.step()
    assert stepped[0] == 10 * len(dtypes)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    _assert_same_state(opt_a, opt_b, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # torch's Adagrad, not ours
@pytest.mark.parametrize("case", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adagrad", dict(lr=0.1))],
                         ids=case_id)  # fmt: skip
def test_sparse_grads_take_the_reference_path(case, stepped):
    """torch's foreach ops take dense tensors only: a sparse grad's param is refused (and
    stepped by the reference path, as torch's foreach path steps it tensor by tensor)."""
    name, kwargs = case
    torch.manual_seed(0)
    emb_a, emb_b = (torch.nn.Embedding(20, 4, sparse=True) for _ in range(2))
    dense_a, dense_b = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    emb_b.load_state_dict(emb_a.state_dict())
    dense_b.load_state_dict(dense_a.state_dict())
    params_a = [*emb_a.parameters(), *dense_a.parameters()]
    params_b = [*emb_b.parameters(), *dense_b.parameters()]
    opt_a = ours(name, params_a, kwargs, foreach=True)
    opt_b = theirs(name, params_b, kwargs, foreach=True)
    call = opt_a._kernel(opt_a.hyper(opt_a.param_groups[0]))
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        idx = torch.randint(0, 20, (8,), generator=gen)
        for emb, dense, opt in ((emb_a, dense_a, opt_a), (emb_b, dense_b, opt_b)):
            opt.zero_grad()
            dense(emb(idx)).pow(2).sum().backward()
            opt.step()
        assert "sparse" in foreach.problem(emb_a.weight, opt_a.state[emb_a.weight], call)
    assert stepped[0] == 5 * 2  # the Linear's weight and bias
    for pa, pb in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"])
def test_grad_scaler_unscales_and_skips_inf(name, stepped):
    """GradScaler hands the scale to the step: the backend unscales the grads in place
    (dividing, as torch's fused kernels); an inf skips the step, state untouched.  With a
    power-of-two scale, dividing equals torch's multiplying by the inverse: bitwise."""
    kwargs = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    torch.manual_seed(0)
    model, twin = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    twin.load_state_dict(model.state_dict())
    opt = getattr(optimlab, name)(model.parameters(), foreach=True, **kwargs)
    plain = getattr(torch.optim, name)(twin.parameters(), foreach=True, **kwargs)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10) for _ in range(2)]
    x = torch.randn(4, 6)
    for step in range(4):
        for m, o, s in ((model, opt, scalers[0]), (twin, plain, scalers[1])):
            o.zero_grad()
            s.scale((m(x) ** 2).sum()).backward()
            if step == 2:
                m.weight.grad[0, 0] = float("inf")
            s.step(o)
            s.update()
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            if step != 2:  # unscaled in place
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
        _assert_same_state(opt, plain, rtol=0, atol=0)
    assert scalers[0].get_scale() == scalers[1].get_scale() == 2.0**9
    assert stepped[0] == 3 * 2


def test_found_inf_skips_the_step_by_itself():
    """dispatch hands found_inf to no list backend: the step skips before it (a device's
    found_inf is read on the host then)."""
    p = torch.ones(4, requires_grad=True)
    opt = optimlab.Adam([p], lr=0.1, foreach=True)
    p.grad = torch.ones(4)
    opt.step()
    group = opt.param_groups[0]
    call = opt._kernel(opt.hyper(group))
    with torch.no_grad():
        dispatch.step_group(opt, 0, group, call, torch.tensor(2.0), torch.tensor(1.0))
    assert opt.state[p]["step"].item() == 1.0
    assert torch.equal(p.grad, torch.ones(4))
    with torch.no_grad():
        dispatch.step_group(opt, 0, group, call, torch.tensor(2.0), torch.tensor(0.0))
    assert opt.state[p]["step"].item() == 2.0
    assert torch.equal(p.grad, torch.full((4,), 0.5))


@pytest.mark.parametrize("choice", [dict(foreach=False), dict(foreach=None, fused=False)])
def test_foreach_off_leaves_the_group_to_other_backends(choice, stepped):
    """foreach=False never reaches this backend; foreach=None reaches it only off the CPU."""
    p = torch.ones(3, requires_grad=True)
    opt = optimlab.Adam([p], **choice)
    p.grad = torch.ones(3)
    opt.step()
    assert stepped[0] == 0


@pytest.mark.parametrize(
    ("dtype", "storage"),
    [
        (torch.float32, dict(state_precision="bf16")),
        (torch.float32, dict(state_precision="8bit")),
        (torch.bfloat16, dict(state_precision="fp32")),
        (torch.bfloat16, dict(param_rounding="kahan")),
    ],
    ids=["bf16 state", "8bit state", "fp32 state of bf16", "kahan"],
)
def test_stored_formats_take_the_reference_path(dtype, storage, stepped):
    """The foreach ops keep state and params in the param's dtype: other formats are
    refused, and the reference path steps them (the same result as fused=False)."""
    gen = torch.Generator().manual_seed(2)
    init = torch.randn(5000, generator=gen).to(dtype)
    a, b = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_a = optimlab.Adam([a], lr=0.01, foreach=True, **storage)
    opt_b = optimlab.Adam([b], lr=0.01, fused=False, **storage)
    for _ in range(3):
        grad = torch.randn(5000, generator=gen).to(dtype)
        a.grad, b.grad = grad.clone(), grad.clone()
        opt_a.step()
        opt_b.step()
    assert stepped[0] == 0
    torch.testing.assert_close(a, b, rtol=0, atol=0)
