"""The fused CPU kernels against the reference path: every option x dtype x layout.

Tolerances (fused vs ``fused=False`` on the same tensors and gradients):

* SGD, every form: bitwise (the kernels replay torch's op order and its fmas, built
  with -ffp-contract=off).
* Optimizers with a square root, float32: rtol 1e-6 and atol 4e-7 x the tensor's largest
  magnitude (a few ulps of it: RMSprop's momentum buffer sums terms that cancel);
  float64: rtol 1e-13, atol 1e-15 x the largest magnitude.  Not bitwise because torch's
  ``sqrt`` runs through MKL's vector math, which is not correctly rounded (1 ulp); the
  kernels use the IEEE square root.  States computed before the root (Adam's moments,
  Adagrad's sum, RMSprop's averages) come out bitwise.
* bfloat16/float16 params (fp32 math inside the kernel, state in the param dtype)
  against the reference run on a float32 copy: rtol 2e-2, atol 2e-2 of the values,
  i.e. a few units in the last place of the half type.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import optimlab
from optim_cases import LECTURE_CASES, TORCH_CASES, case_id, ours
from optimlab.kernels import KernelCall
from optimlab.kernels import cpu as cpu_kernels
from optimlab.optimizers.dispatch import cached_plan

pytestmark = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason=cpu_kernels.UNAVAILABLE)

# options the shared table does not cross: one row each
KERNEL_CASES: list[tuple[str, dict]] = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, nesterov_form="lookahead")),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, nesterov_form="lookahead",
                 momentum_form="lecture")),
    ("SGD", dict(lr=0.1, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, eps_inside_sqrt=True, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, eps_inside_sqrt=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, maximize=True, alpha=0.5)),
    ("Adam", dict(lr=0.01, amsgrad=True, bias_correction=False, maximize=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, bias_correction=False)),
    ("NAdam", dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.1, decoupled_weight_decay=True)),
]  # fmt: skip
CASES = TORCH_CASES + LECTURE_CASES + KERNEL_CASES
# the look-ahead form needs a closure that recomputes the gradient: test_lookahead_nesterov_fused
STEP_CASES = [case for case in CASES if case[1].get("nesterov_form") != "lookahead"]
# layouts x dtypes; "many" (several chunks per thread) once, in float32
LAYOUTS = [(layout, dtype) for layout in ("odd", "strided") for dtype in (torch.float32,
           torch.float64)] + [("many", torch.float32)]  # fmt: skip
STEPS = 4
TOL = {  # atol is relative to the largest magnitude in the expected tensor (see _close)
    torch.float32: dict(rtol=1e-6, atol=4e-7),
    torch.float64: dict(rtol=1e-13, atol=1e-15),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    torch.float16: dict(rtol=2e-2, atol=2e-2),
}


def _make(layout: str, dtype: torch.dtype) -> list[torch.Tensor]:
    """Leaf params of one layout; values drawn in float64, then cast."""
    gen = torch.Generator().manual_seed(0)

    def draw(*shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)

    if layout == "odd":  # empty, scalar, sizes that leave every vector tail
        tensors = [draw(), draw(0), draw(1), draw(17), draw(5, 7), draw(1031), draw(3, 0, 2)]
    elif layout == "many":  # several chunks per thread
        tensors = [draw(40_000), draw(65, 1001), draw(3)]
    elif layout == "strided":  # channels-last (fused) and non-contiguous views (reference)
        tensors = [
            draw(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
            draw(8, 6)[:, ::2],
            draw(6, 4).t(),
            draw(9),
        ]
    else:
        raise ValueError(layout)
    return [t.requires_grad_() for t in tensors]


def _grads(params: list[torch.Tensor], step: int) -> None:
    """Fresh grads (as zero_grad(set_to_none=True) + backward make them); one None per step."""
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        if i == step % len(params) and step > 0:
            p.grad = None  # no grad this step: no update, no step increment
        else:
            p.grad = torch.empty_like(p).copy_(g)  # the param's memory layout, as autograd


def _run(name, kwargs, params, steps=STEPS, **extra):
    opt = ours(name, params, kwargs, **extra)
    for step in range(steps):
        _grads(params, step)
        opt.step()
    return opt


def _copy(params, dtype=None):
    return [
        p.detach().to(dtype or p.dtype).clone(memory_format=torch.preserve_format).requires_grad_()
        for p in params
    ]


def _close(actual, expected, rtol, atol):
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    scale = max(scale, 1.0) if math.isfinite(scale) else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, equal_nan=True)


def _assert_state_close(fused, reference, params_f, params_r, **tol):
    for pf, pr in zip(params_f, params_r, strict=True):
        sf, sr = fused.state.get(pf, {}), reference.state.get(pr, {})
        assert sf.keys() == sr.keys()
        for key in sr:
            a, b = sf[key], sr[key]
            if key in ("step", "mu_product"):
                assert a.dtype == b.dtype and a.shape == b.shape
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            else:
                _close(a.to(b.dtype), b, **tol)


def _tolerance(name: str, dtype: torch.dtype, kwargs: dict) -> dict:
    if any(isinstance(v, torch.Tensor) for v in kwargs.values()):
        # a tensor lr makes the reference compute lr / bias_correction in float32 tensors,
        # where the kernels take the float64 value
        return TOL[torch.float32]
    return dict(rtol=0, atol=0) if name == "SGD" and dtype.itemsize >= 4 else TOL[dtype]


@pytest.mark.parametrize(("layout", "dtype"), LAYOUTS, ids=lambda v: str(v).split(".")[-1])
@pytest.mark.parametrize("case", STEP_CASES, ids=case_id)
def test_fused_matches_reference(case, layout, dtype):
    name, kwargs = case
    fused_params = _make(layout, dtype)
    ref_params = _copy(fused_params)
    fused = _run(name, kwargs, fused_params)
    reference = _run(name, kwargs, ref_params, fused=False)
    tol = _tolerance(name, dtype, kwargs)
    for a, b in zip(fused_params, ref_params, strict=True):
        _close(a, b, **tol)
    _assert_state_close(fused, reference, fused_params, ref_params, **tol)
    plan = cached_plan(fused)
    # the kernels took every tensor they can; views that are not dense went per tensor
    if layout == "strided":
        assert [p.shape for p in plan.rest] == [(8, 3), (4, 6)]
    else:
        assert not plan.rest


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", STEP_CASES, ids=case_id)
def test_half_params(case, dtype):
    """bfloat16: fp32 math, against the reference on a float32 copy.  float16: fp32 math that
    rounds to float16 where torch's float16 path does (updates.h, HALF), against the reference
    in float16 -- an underflowing second moment gives inf/NaN in both, as in torch."""
    name, kwargs = case
    fused_params = _make("odd", dtype)
    ref_params = _copy(fused_params, torch.float32 if dtype == torch.bfloat16 else dtype)
    fused = _run(name, kwargs, fused_params)
    reference = _run(name, kwargs, ref_params, fused=False)
    for a, b in zip(fused_params, ref_params, strict=True):
        assert a.dtype == dtype
        _close(a.float(), b.float(), **TOL[dtype])
    for p in fused_params:
        for key, value in fused.state.get(p, {}).items():
            if key not in ("step", "mu_product"):
                assert value.dtype == dtype  # torch's zeros_like(p)
    _assert_state_close(fused, reference, fused_params, ref_params, **TOL[dtype])
    assert not cached_plan(fused).rest


@pytest.mark.parametrize("form", ["torch", "lecture"])
def test_lookahead_nesterov_fused(form):
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=True, nesterov_form="lookahead",
                  momentum_form=form)  # fmt: skip
    target = torch.tensor([1.0, -2.0, 3.0, 0.5])
    results = []
    for fused in (None, False):
        w = torch.zeros(4, requires_grad=True)
        opt = optimlab.SGD([w], fused=fused, **kwargs)

        def closure(w=w, opt=opt):
            opt.zero_grad()
            loss = ((w - target) ** 2).sum()
            loss.backward()
            return loss

        for _ in range(5):
            opt.step(closure)
        results.append(w.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


def test_threads_do_not_change_results():
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            params = _make("many", torch.float32)
            _run("Adam", dict(lr=0.01, amsgrad=True), params)
            outs.append([p.detach().clone() for p in params])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_mixed_dtypes_in_one_group_run_in_one_call():
    """Each row carries its dtype: a mixed group equals one group per dtype, bitwise."""
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.float16]
    mixed = [torch.linspace(-1, 1, 37, dtype=dt).requires_grad_() for dt in dtypes]
    alone = [p.detach().clone().requires_grad_() for p in mixed]
    opt = optimlab.NAdam(mixed, lr=0.01, weight_decay=0.1)
    singles = [optimlab.NAdam([p], lr=0.01, weight_decay=0.1) for p in alone]
    for step in range(3):
        for p, q in zip(mixed, alone, strict=True):
            p.grad = torch.full_like(p, 0.25 * (step + 1))
            q.grad = p.grad.clone()
        opt.step()
        for single in singles:
            single.step()
    assert len(cached_plan(opt).params) == 4
    for p, q in zip(mixed, alone, strict=True):
        assert torch.equal(p, q), p.dtype


def test_float64_default_dtype_counters():
    """Under a float64 default dtype torch keeps float64 step counters; so do the kernels."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name in ("Adam", "NAdam", "Adagrad"):
            params = _make("odd", torch.float32)
            ref_params = _copy(params)
            fused = _run(name, dict(lr=0.01), params)
            reference = _run(name, dict(lr=0.01), ref_params, fused=False)
            assert fused.state[params[3]]["step"].dtype == torch.float64
            _assert_state_close(fused, reference, params, ref_params, **TOL[torch.float32])
    finally:
        torch.set_default_dtype(previous)


# -- per-tensor fallback and fused=True ---------------------------------------------


def test_unsupported_tensors_go_per_tensor():
    real = torch.randn(6, requires_grad=True)
    cplx = torch.randn(3, dtype=torch.complex64, requires_grad=True)
    half = torch.randn(4, dtype=torch.float64, requires_grad=True)
    twin = [p.detach().clone().requires_grad_() for p in (real, cplx, half)]
    opts = [optimlab.Adam([real, cplx, half], lr=0.1), optimlab.Adam(twin, lr=0.1, fused=False)]
    for step in range(3):
        gen = torch.Generator().manual_seed(step)
        for p, q in zip((real, cplx, half), twin, strict=True):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        for opt in opts:
            opt.step()
    for a, b in zip((real, cplx, half), twin, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert cached_plan(opts[0]).rest == [cplx]


@pytest.mark.parametrize("name", ["SGD", "Adagrad"])
def test_sparse_grads_go_per_tensor(name):
    emb, dense = torch.randn(10, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    twin = [emb.detach().clone().requires_grad_(), dense.detach().clone().requires_grad_()]
    kwargs = dict(lr=0.1)
    opts = [getattr(optimlab, name)([emb, dense], **kwargs),
            getattr(optimlab, name)(twin, fused=False, **kwargs)]  # fmt: skip
    for step in range(3):
        for (e, d), opt in zip(([emb, dense], twin), opts, strict=True):
            idx = torch.tensor([[1, 4, step]])
            e.grad = torch.sparse_coo_tensor(idx, torch.ones(3, 3), (10, 3), check_invariants=True)
            d.grad = torch.full((5,), 0.5 + step)
            opt.step()
    torch.testing.assert_close(emb, twin[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(dense, twin[1], rtol=1e-6, atol=1e-7)


def test_sparse_grad_refused_like_torch():
    p = torch.randn(4, 2, requires_grad=True)
    opt = optimlab.Adam([p])
    p.grad = torch.sparse_coo_tensor(
        torch.tensor([[0]]), torch.ones(1, 2), (4, 2), check_invariants=True
    )
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


def test_fused_true_refuses_what_it_cannot_honour():
    with pytest.raises(RuntimeError, match="complex"):
        optimlab.Adam([torch.randn(2, dtype=torch.complex64, requires_grad=True)], fused=True)
    with pytest.raises(RuntimeError, match="meta"):
        optimlab.SGD([torch.empty(3, device="meta", requires_grad=True)], lr=0.1, fused=True)
    with pytest.raises(RuntimeError, match="not contiguous"):
        optimlab.RMSprop([torch.randn(4, 4)[:, ::2].requires_grad_()], fused=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        optimlab.NAdam([torch.randn(2, requires_grad=True)], fused=True, differentiable=True)
    p = torch.randn(4, 2, requires_grad=True)
    opt = optimlab.SGD([p], lr=0.1, fused=True)
    p.grad = torch.randn(2, 4).t()  # a grad whose layout the kernels cannot pair with p
    with pytest.raises(RuntimeError, match="SGD\\(fused=True\\) cannot run: a gradient's memory"):
        opt.step()


def test_wrapper_subclasses_go_per_tensor():
    """FSDP2's DTensor params: data_ptr() is not their elements' memory."""
    from optimlab.kernels.cpu import backend

    class Wrapper(torch.Tensor):
        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            return NotImplemented

    class Plain(torch.Tensor):  # a subclass that only adds Python behaviour
        pass

    call = KernelCall("sgd", (None, None, None), (), {}, ())
    assert "tensor subclass" in backend.problem(torch.zeros(2).as_subclass(Wrapper), None, call)
    plain = torch.zeros(3).as_subclass(Plain).requires_grad_()
    assert backend.problem(plain, None, call) == ""
    opt = optimlab.SGD([plain], lr=0.5)
    for _ in range(2):
        plain.grad = torch.ones(3).as_subclass(Plain)  # new grads of a non-torch type
        opt.step()
    assert torch.equal(plain.detach().as_subclass(torch.Tensor), torch.full((3,), -1.0))


def test_differentiable_takes_the_reference_path():
    p = torch.randn(3)  # no autograd here: only the path taken matters
    opt = optimlab.Adam([p], differentiable=True)
    p.grad = torch.randn(3)
    opt.step()
    assert not hasattr(opt, "_kernel_plans")


def test_params_shared_between_groups_are_refused_as_torch():
    p = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="some parameters appear in more than one"):
        optimlab.Adam([{"params": [p]}, {"params": [p]}])


def test_duplicate_param_in_a_group_steps_like_the_reference():
    runs = []
    for fused in (None, False):
        p = torch.ones(5, requires_grad=True)
        with pytest.warns(UserWarning, match="duplicate"):
            opt = optimlab.Adam([p, p], lr=0.1, fused=fused)
        p.grad = torch.full((5,), 0.5)
        opt.step()
        runs.append((p.detach().clone(), opt.state[p]["step"].item()))
    assert runs[0][1] == runs[1][1] == 2.0
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-6, atol=1e-7)


def test_missing_extension_warns_once_and_uses_reference(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "AVAILABLE", False)
    monkeypatch.setattr(cpu_kernels, "UNAVAILABLE", "not built (test)")
    monkeypatch.setattr(cpu_kernels, "_warned", False)
    p = torch.randn(3, requires_grad=True)
    opt = optimlab.Adam([p])
    p.grad = torch.randn(3)
    with pytest.warns(RuntimeWarning, match="not built \\(test\\); the optimizers use the ref"):
        opt.step()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # said once
    assert not hasattr(opt, "_kernel_plans")
    with pytest.raises(RuntimeError, match="Adam\\(fused=True\\): not built"):
        optimlab.Adam([p], fused=True)


# -- the cached table follows changes --------------------------------------------------


def _pair(name="Adam", **kwargs):
    a = [torch.randn(7, requires_grad=True), torch.randn(3, 2, requires_grad=True)]
    b = [p.detach().clone().requires_grad_() for p in a]
    return a, b, ours(name, a, kwargs), ours(name, b, kwargs, fused=False)


def _same_step(a, b, oa, ob, seed):
    gen = torch.Generator().manual_seed(seed)
    for x, y in zip(a, b, strict=True):
        g = torch.randn(x.shape, generator=gen)
        x.grad, y.grad = g.clone(), g.clone()
    oa.step()
    ob.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def test_plan_follows_replaced_data_grads_and_groups():
    a, b, oa, ob = _pair(lr=0.1)
    _same_step(a, b, oa, ob, 0)
    plan = cached_plan(oa)
    _same_step(a, b, oa, ob, 1)
    assert cached_plan(oa) is plan  # new grad tensors: re-bound, not re-planned
    with torch.no_grad():  # param.data replaced: new memory, the table must follow
        a[0].data = a[0].data.clone()
    _same_step(a, b, oa, ob, 2)
    assert cached_plan(oa) is not plan
    extra_a, extra_b = torch.ones(4, requires_grad=True), torch.ones(4, requires_grad=True)
    oa.add_param_group({"params": [extra_a], "lr": 0.5})
    ob.add_param_group({"params": [extra_b], "lr": 0.5})
    _same_step(a + [extra_a], b + [extra_b], oa, ob, 3)
    oa.param_groups[0]["params"].reverse()  # the group's list edited in place
    ob.param_groups[0]["params"].reverse()
    _same_step(a + [extra_a], b + [extra_b], oa, ob, 4)
    oa.param_groups[0]["lr"] = ob.param_groups[0]["lr"] = 0.01  # a schedule: plain numbers
    _same_step(a + [extra_a], b + [extra_b], oa, ob, 5)
    oa.param_groups[0]["amsgrad"] = ob.param_groups[0]["amsgrad"] = True  # another kernel
    with pytest.raises(KeyError):  # as the reference: the state has no max_exp_avg_sq
        ob.step()


def test_plan_follows_load_state_dict():
    a, b, oa, ob = _pair(lr=0.1)
    for seed in range(3):
        _same_step(a, b, oa, ob, seed)
    saved = copy.deepcopy(oa.state_dict())  # state_dict() shares the live state tensors
    for seed in range(3, 5):
        _same_step(a, b, oa, ob, seed)
    oa.load_state_dict(copy.deepcopy(saved))
    ob.load_state_dict(copy.deepcopy(saved))
    for seed in range(5, 8):
        _same_step(a, b, oa, ob, seed)
    assert oa.state[a[0]]["step"].item() == 6.0


def test_grad_set_to_none_skips_the_param():
    p, q = torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)
    opt = optimlab.Adam([p, q], lr=0.1)
    p.grad, q.grad = torch.randn(5), torch.randn(5)
    opt.step()
    before = q.detach().clone()
    p.grad, q.grad = torch.randn(5), None
    opt.step()
    assert opt.state[p]["step"].item() == 2.0 and opt.state[q]["step"].item() == 1.0
    assert torch.equal(q.detach(), before)
    p.grad = None  # a param whose state does not exist yet gets it on its first grad
    r = torch.randn(3, requires_grad=True)
    opt.add_param_group({"params": [r]})
    opt.step()
    assert r not in opt.state
    r.grad = torch.randn(3)
    opt.step()
    assert opt.state[r]["step"].item() == 1.0


# -- AMP ----------------------------------------------------------------------------------


def _snapshot(opt, params):
    return [p.detach().clone() for p in params], {
        id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params
    }


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("name", ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam"])
def test_grad_scaler_unscales_in_step_and_skips_inf(name, fused):
    kwargs = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    twin = torch.nn.Linear(6, 3)
    twin.load_state_dict(model.state_dict())
    opt = getattr(optimlab, name)(model.parameters(), fused=fused, **kwargs)
    plain = getattr(torch.optim, name)(twin.parameters(), **kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    plain_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(4, 6)
    for step in range(4):
        for m, o, s in ((model, opt, scaler), (twin, plain, plain_scaler)):
            o.zero_grad()
            s.scale((m(x) ** 2).sum()).backward()
            if step == 2:  # an overflow in one grad: the step must not happen at all
                m.weight.grad[0, 0] = float("inf")
                if o is opt:
                    before = _snapshot(o, list(m.parameters()))
            s.step(o)
            s.update()
        if step == 2:
            params, state = _snapshot(opt, list(model.parameters()))
            for a, b in zip(params, before[0], strict=True):
                assert torch.equal(a, b)
            for key, values in state.items():
                for k, v in values.items():
                    assert torch.equal(v, before[1][key][k]), k
        assert scaler.get_scale() == plain_scaler.get_scale()
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
            if step != 2:  # unscaled in place, as torch; a skipped step leaves them scaled,
                # as torch's fused kernels do (its plain path unscales before skipping)
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    assert scaler.get_scale() == 2.0**9
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")


def test_kernel_skips_on_found_inf_by_itself():
    from optimlab.optimizers import dispatch

    p = torch.ones(4, requires_grad=True)
    opt = optimlab.Adam([p], lr=0.1)
    p.grad = torch.ones(4)
    opt.step()
    group = opt.param_groups[0]
    call = opt._kernel(opt.hyper(group))
    dispatch.step_group(opt, 0, group, call, torch.tensor(2.0), torch.tensor(1.0))
    assert opt.state[p]["step"].item() == 1.0
    assert torch.equal(p.grad, torch.ones(4))  # not even unscaled
    dispatch.step_group(opt, 0, group, call, torch.tensor(2.0), torch.tensor(0.0))
    assert opt.state[p]["step"].item() == 2.0
    assert torch.equal(p.grad, torch.full((4,), 0.5))


# -- checkpoints from torch ---------------------------------------------------------------


@pytest.mark.parametrize("case", TORCH_CASES, ids=case_id)
def test_torch_state_dict_resumes_fused(case):
    name, kwargs = case
    params = _make("odd", torch.float32)
    theirs_params = _copy(params)
    theirs = getattr(torch.optim, name)(theirs_params, **_fresh(kwargs))
    for step in range(3):
        _grads(theirs_params, step)
        theirs.step()
    mine_params = _copy(theirs_params)
    mine = ours(name, mine_params, kwargs)  # fused by default
    mine.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for step in range(3, 6):
        _grads(theirs_params, step)
        _grads(mine_params, step)
        theirs.step()
        mine.step()
    assert not cached_plan(mine).rest
    tol = _tolerance(name, torch.float32, kwargs)
    for a, b in zip(mine_params, theirs_params, strict=True):
        _close(a, b, **tol)
    _assert_state_close(mine, theirs, mine_params, theirs_params, **tol)


def _fresh(kwargs):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


# -- the process: one OpenMP runtime, fork ---------------------------------------------------


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="Linux only")
def test_one_openmp_runtime_in_the_process():
    with open("/proc/self/maps") as maps:
        gomp = {line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line}
    assert len(gomp) <= 1, gomp


def _child_step(opt, p, queue):
    opt.step()  # kernels in a forked child run on its one thread (optim.c: forked_child)
    torch.set_num_threads(1)  # what DataLoader workers do: torch's own ops need it after fork
    queue.put((p.detach()[:3].tolist(), torch.ones(100_000).add(1).sum().item()))


class _Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.full((50_000,), float(i)).square().sum()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_fork_after_a_fused_step():
    """DataLoader workers and gloo tests fork: a child must run kernels and torch ops."""
    import multiprocessing as mp

    p = torch.ones(1_000_000, requires_grad=True)
    opt = optimlab.Adam([p], lr=0.5)
    p.grad = torch.ones(1_000_000)
    opt.step()  # the OpenMP pool is started
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(opt, p, queue))
    child.start()
    try:
        values, total = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert values == pytest.approx([0.0] * 3, abs=1e-6) and total == 200_000.0
    loader = torch.utils.data.DataLoader(
        _Squares(), batch_size=2, num_workers=2, multiprocessing_context="fork", timeout=60
    )
    assert sum(batch.sum().item() for batch in loader) == 50_000 * sum(i * i for i in range(8))
    opt.step()  # and the parent still steps, on all its threads
    assert math.isfinite(p.detach()[0].item())


_WITHOUT_EXTENSION = """
import sys, warnings
class Block:  # a pure-Python install: the extension cannot be imported
    def find_spec(self, name, path=None, target=None):
        if name == "optimlab.kernels.cpu._optim":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
import torch, optimlab
p, q = torch.ones(5, requires_grad=True), torch.ones(5, requires_grad=True)
a, b = optimlab.Adam([p], lr=0.1), optimlab.Adam([q], lr=0.1, fused=False)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        p.grad, q.grad = torch.full((5,), 0.5), torch.full((5,), 0.5)
        a.step(); b.step()
assert torch.equal(p, q)
said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(said) == 1 and "not built" in said[0], said
try:
    optimlab.SGD([p], lr=0.1, fused=True)
except RuntimeError as error:
    assert "not built" in str(error)
else:
    raise AssertionError("fused=True without the extension must raise")
print("ok")
"""


def test_pure_python_install_works_and_says_so_once():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTENSION], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("nesterov", [False, True])
def test_half_sgd_against_torch(nesterov, dtype):
    """What the README says of bfloat16/float16 params: the kernels compute in float32 and
    round to the half type once per tensor torch materializes (bfloat16: once, at the end);
    torch's for-loop also rounds products inside its ops.  So a part of the elements differ,
    by a few units in the last place at the scale of the operands (measured: 2, and 4 for
    float16 Nesterov; more units of the result where the step nearly cancels the weight).
    bfloat16 results are within half a unit of the exact step; fused=False matches torch
    bitwise."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(20_000, generator=gen).to(dtype)
    g = torch.randn(20_000, generator=gen).to(dtype)
    kwargs = dict(lr=0.1, momentum=0.9, nesterov=nesterov)
    results = {}
    for label, module in (("ours", optimlab), ("torch", torch.optim)):
        p = start.clone().requires_grad_()
        p.grad = g.clone()
        extra = {} if module is optimlab else {"foreach": False}
        module.SGD([p], **kwargs, **extra).step()  # a first step: the buffer is g
        results[label] = p.detach().double()
    precision = {torch.bfloat16: 8, torch.float16: 11}[dtype]  # significant bits

    def ulp(x):
        return torch.ldexp(torch.ones_like(x), torch.frexp(x.abs()).exponent - precision)

    lr = float(torch.tensor(0.1, dtype=torch.float32))  # the kernels' float32 lr
    step = lr * g.double() * (1.9 if nesterov else 1.0)  # lr * (g + 0.9 * buffer)
    exact = start.double() - step
    scale = torch.maximum(start.double().abs(), step.abs())
    differ = results["ours"] != results["torch"]
    assert 0.02 < differ.double().mean() < 0.35  # the README's range, with margin
    assert torch.all((results["ours"] - results["torch"]).abs() <= 4 * ulp(scale))
    if dtype == torch.bfloat16:
        slack = 4 * 2.0**-24 * scale  # the float32 roundings before the last one
        assert torch.all((results["ours"] - exact).abs() <= ulp(exact) / 2 + slack)
