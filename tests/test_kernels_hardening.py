"""The fused kernels against hostile input: anything changed between steps is seen.

Each case did something wrong on 0.1's kernels (a segfault, garbage in the weights, a silent
step where torch raises, a race).  The oracle is torch.optim (its for-loop path) or
optimlab's reference path (``fused=False``), which is bitwise torch's.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optimlab
from memory_util import peak_live_bytes
from optim_cases import case_id, ours
from optimlab.kernels import cpu as cpu_kernels
from optimlab.kernels import plan
from optimlab.optimizers.dispatch import cached_plan

pytestmark = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason=cpu_kernels.UNAVAILABLE)


@pytest.fixture(scope="module", autouse=True, params=["shim", "accessors"])
def bind_reads_through(request):
    """Every case runs twice: bind reading tensors through torch's C shim (the default where
    torch allows it) and through torch.Tensor's accessors (the fallback)."""
    if not plan.use_shim(request.param == "shim") and request.param == "shim":
        pytest.skip("torch's C shim is not usable with this torch")
    yield request.param
    plan.use_shim()


def test_bind_reads_through_the_shim_on_this_torch(bind_reads_through):
    """The torch the tests install (2.13) lays out its tensors as the shim path expects, so
    the cases here test that path and not only the fallback."""
    try:
        assert plan.use_shim()
    finally:
        plan.use_shim(bind_reads_through == "shim")


def test_shim_refused_when_a_probe_disagrees(bind_reads_through):
    """A probe whose object does not hold its at::Tensor where expected, or whose shim
    answers differ from the accessors', leaves bind on the accessors; steps stay exact."""
    t = torch.zeros(3)
    addresses = (1, 1, 1, 1, 1, 1)  # never called: the layout check comes first
    assert not plan._optim.use_shim(addresses, (0, 1, 2, 3), 0, ((t, t._cdata + 8, ()),))
    try:
        p, ref = _param(5), _param(5)
        opt, theirs = optimlab.Adam([p], lr=0.1), torch.optim.Adam([ref], lr=0.1, foreach=False)
        for _ in range(3):
            p.grad, ref.grad = torch.ones(5), torch.ones(5)
            opt.step()
            theirs.step()
        assert torch.equal(p, ref)
    finally:
        plan.use_shim(bind_reads_through == "shim")


ADAM = ("Adam", dict(lr=0.1))
ONE_OF_EACH = [  # one row per kernel and state layout
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, momentum_form="lecture")),
    ("Adagrad", dict(lr=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01)),
]


def _param(*shape, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=dtype).requires_grad_()


def _raises_like(run_ours, run_theirs):
    """Both raise the same exception type (the message names torch's own op)."""
    with pytest.raises(Exception) as theirs:
        run_theirs()
    with pytest.raises(type(theirs.value)):
        run_ours()


# -- grads replaced behind the plan's back ---------------------------------------------


@pytest.mark.parametrize("fused", [None, True])
def test_grad_storage_shrunk_after_the_first_step_raises_like_torch(fused):
    """0.1: the plan kept the grad's old length and read past the end of the new storage."""
    p = _param(200_000)
    opt = optimlab.SGD([p], lr=1.0, fused=fused)
    p.grad = torch.ones(200_000)
    opt.step()
    p.grad.data = torch.ones(4)  # same grad object, 4 elements
    if fused:
        with pytest.raises(RuntimeError, match="fused=True.*gradient's shape"):
            opt.step()
        return
    q = torch.zeros(200_000, requires_grad=True)
    theirs = torch.optim.SGD([q], lr=1.0)
    q.grad = torch.ones(200_000)
    q.grad.data = torch.ones(4)
    _raises_like(opt.step, theirs.step)


def test_grad_of_another_shape_with_the_same_numel_raises_like_torch():
    p = _param(4, 2)
    opt, theirs = optimlab.Adam([p]), torch.optim.Adam([q := _param(4, 2)])
    p.grad, q.grad = torch.ones(4, 2), torch.ones(4, 2)
    opt.step()
    theirs.step()
    p.grad.data, q.grad.data = torch.ones(2, 4), torch.ones(2, 4)  # 0.1: stepped silently
    _raises_like(opt.step, theirs.step)


def test_grad_dtype_changed_after_the_first_step_steps_like_torch():
    """0.1 read the float64 grad as float32 garbage; torch promotes it."""
    p, q = _param(9), _param(9)
    opt = optimlab.SGD([p], lr=0.1, momentum=0.9)
    theirs = torch.optim.SGD([q], lr=0.1, momentum=0.9, foreach=False)
    for step in range(3):
        g = torch.randn(9, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        if step == 0:
            p.grad, q.grad = g.float(), g.float()
        else:
            p.grad.data, q.grad.data = g.clone(), g.clone()  # the same grad objects, float64
        opt.step()
        theirs.step()
        assert torch.equal(p, q)


def test_grad_replaced_by_a_strided_view_is_read_in_its_own_order():
    p, q = _param(3, 4), _param(3, 4)
    opt, theirs = optimlab.RMSprop([p], lr=0.01), torch.optim.RMSprop([q], lr=0.01)
    for step in range(3):
        g = torch.randn(4, 3, generator=torch.Generator().manual_seed(step))
        p.grad, q.grad = g.t(), g.t().clone()  # a transposed view: not contiguous
        opt.step()
        theirs.step()
    torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


# -- params ------------------------------------------------------------------------------


def test_overlapping_params_step_one_after_another_like_torch():
    """0.1 ran both in one parallel region: the shared elements raced (results varied)."""
    ours_base, their_base = torch.zeros(10), torch.zeros(10)
    mine = [torch.nn.Parameter(ours_base[:6]), torch.nn.Parameter(ours_base[4:])]
    theirs = [torch.nn.Parameter(their_base[:6]), torch.nn.Parameter(their_base[4:])]
    opt = optimlab.SGD(mine, lr=0.5, momentum=0.9)
    ref = torch.optim.SGD(theirs, lr=0.5, momentum=0.9, foreach=False)
    for step in range(3):
        for a, b in zip(mine, theirs, strict=True):
            a.grad = torch.full(a.shape, float(step + 1))
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
        assert torch.equal(ours_base, their_base)
    assert cached_plan(opt).rest == mine
    with pytest.raises(RuntimeError, match="fused=True.*overlaps"):
        optimlab.SGD(mine, lr=0.1, fused=True)


def test_param_data_replaced_re_plans():
    p, q = _param(50), _param(50)
    opt, theirs = optimlab.Adam([p], lr=0.1), torch.optim.Adam([q], lr=0.1)
    for step in range(4):
        if step == 2:
            new = torch.randn(50, generator=torch.Generator().manual_seed(9))
            p.data, q.data = new.clone(), new.clone()
        p.grad = torch.ones(50) * (step + 1)
        q.grad = p.grad.clone()
        opt.step()
        theirs.step()
    torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


# -- state ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq", "step"])
@pytest.mark.parametrize("fused", [None, False])
def test_state_missing_from_a_checkpoint_raises_the_reference_error(key, fused):
    """0.1's kernels silently re-created a missing entry as zeros."""
    p = _param(5)
    opt = optimlab.Adam([p])
    p.grad = torch.ones(5)
    opt.step()
    saved = opt.state_dict()
    del saved["state"][0][key]
    loaded = optimlab.Adam([p], fused=fused)
    loaded.load_state_dict(saved)
    with pytest.raises(KeyError, match=key):
        loaded.step()


@pytest.mark.parametrize("how", ["replace", "data", "copy"])
def test_state_changed_by_hand_is_used(how):
    """A state tensor replaced in the dict, or re-pointed with .data, is what the next step
    reads (0.1 kept writing the old one until the next re-plan)."""
    p, q = _param(7), _param(7)
    opt = optimlab.Adam([p], lr=0.1)
    ref = optimlab.Adam([q], lr=0.1, fused=False)
    for step in range(4):
        p.grad = torch.full((7,), float(step + 1))
        q.grad = p.grad.clone()
        if step == 2:
            for o, param in ((opt, p), (ref, q)):
                new = torch.full((7,), 0.5)
                if how == "replace":
                    o.state[param]["exp_avg"] = new
                elif how == "data":
                    o.state[param]["exp_avg"].data = new
                else:
                    o.state[param] = {k: v.clone() for k, v in o.state[param].items()}
        opt.step()
        ref.step()
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[p]["exp_avg"], ref.state[q]["exp_avg"])


def test_state_of_another_dtype_goes_per_tensor():
    p, q = _param(6), _param(6)
    opt, ref = optimlab.Adam([p], lr=0.1), optimlab.Adam([q], lr=0.1, fused=False)
    for step in range(3):
        p.grad, q.grad = torch.ones(6), torch.ones(6)
        if step == 1:
            for o, param in ((opt, p), (ref, q)):
                o.state[param]["exp_avg_sq"] = o.state[param]["exp_avg_sq"].double()
        opt.step()
        ref.step()
    assert torch.equal(p, q)
    assert cached_plan(opt).rest == [p]


# -- hypothesis: random mutations between steps, kernels against the reference ----------

MUTATIONS = st.sampled_from(
    ["none", "new_grad", "no_grad", "grad_data", "grad_strided", "state_replace", "state_data",
     "param_data", "lr", "grad_shape", "grad_dtype"]
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(ONE_OF_EACH),
    mutations=st.lists(st.tuples(MUTATIONS, st.integers(0, 2)), min_size=1, max_size=6),
)
def test_fuzz_mutations_between_steps(case, mutations):
    name, kwargs = case
    shapes = [(5, 3), (17,), (2, 2)]
    mine = [_param(*s, seed=i) for i, s in enumerate(shapes)]
    theirs = [p.detach().clone().requires_grad_() for p in mine]
    opts = (ours(name, mine, kwargs), ours(name, theirs, kwargs, fused=False))
    for step, (mutation, which) in enumerate(mutations):
        gen = torch.Generator().manual_seed(step)
        fresh = [torch.randn(s, generator=gen) for s in shapes]
        for params in (mine, theirs):
            for p, g in zip(params, fresh, strict=True):
                if p.grad is None or mutation == "new_grad":
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
        outcomes = []
        for opt, params in zip(opts, (mine, theirs), strict=True):
            _mutate(opt, params[which], mutation, step)
            try:
                opt.step()
                outcomes.append(None)
            except Exception as error:  # noqa: BLE001 - compared below
                outcomes.append(type(error))
        assert outcomes[0] == outcomes[1]
        if outcomes[0] is not None:
            return  # both refused the same input: the run ends there
        for a, b in zip(mine, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _mutate(opt, p, mutation, step):
    state = opt.state.get(p, {})
    tensors = [k for k, v in state.items() if torch.is_tensor(v) and v.shape == p.shape]
    if mutation == "no_grad":
        p.grad = None
    elif mutation == "grad_data":
        p.grad.data = p.grad.detach().clone() * 2
    elif mutation == "grad_strided":
        p.grad = p.grad.detach().to(p.dtype).unsqueeze(-1).expand(*p.shape, 2)[..., 0]
    elif mutation == "grad_shape":
        p.grad.data = p.grad.detach().clone().reshape(-1)  # (a plain assignment is refused)
    elif mutation == "grad_dtype":
        p.grad.data = p.grad.detach().double()
    elif mutation == "state_replace" and tensors:
        state[tensors[0]] = state[tensors[0]].clone() + 0.25
    elif mutation == "state_data" and tensors:
        state[tensors[-1]].data = state[tensors[-1]].detach().clone().abs()
    elif mutation == "param_data":
        p.data = p.detach().clone() * 0.5
    elif mutation == "lr":
        for group in opt.param_groups:
            group["lr"] = group["lr"] * 0.5 if not torch.is_tensor(group["lr"]) else group["lr"]


# -- gradients are not kept alive (issue 10) --------------------------------------------


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("case", ONE_OF_EACH, ids=case_id)
def test_no_gradient_outlives_zero_grad(case, fused):
    name, kwargs = case
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = ours(name, model.parameters(), kwargs, fused=fused)
    x = torch.randn(32, 8)
    for _ in range(3):
        model(x).square().mean().backward()
        grads = [weakref.ref(p.grad) for p in model.parameters()]
        opt.step()
        opt.zero_grad(set_to_none=True)
        gc.collect()
        assert all(ref() is None for ref in grads), "a gradient outlived zero_grad"


def test_training_loop_peak_memory_is_no_more_than_torchs():
    """The loop a user writes: 0.1 kept a step's gradients alive through the next backward
    (one extra copy of them); now optimlab's peak is torch fused Adam's, which allocates
    nothing per step.  Each optimizer trains its own copy of the model; nothing allocated
    before the profiler starts is freed under it (its accounting would miss the free)."""
    x = torch.randn(64, 256)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(),
                                   torch.nn.Linear(512, 256))  # fmt: skip

    def loop(net, opt):
        for _ in range(3):
            net(x).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    peaks = {}
    for label, make in (("optimlab", lambda ps: optimlab.Adam(ps)),
                        ("torch fused", lambda ps: torch.optim.Adam(ps, fused=True))):  # fmt: skip
        net = model()
        opt = make(net.parameters())
        loop(net, opt)  # state exists, grads are freed, before measuring
        gc.collect()
        peaks[label] = peak_live_bytes(lambda net=net, opt=opt: loop(net, opt))
    assert peaks["optimlab"] <= peaks["torch fused"], peaks


# -- AMP: float16 grads as torch's GradScaler rules say (issue 10) ------------------------


@pytest.mark.parametrize("fused", [None, False, True])
def test_grad_scaler_refuses_float16_grads_as_torch(fused):
    def run(module):
        p = torch.randn(8, dtype=torch.float16, requires_grad=True)
        opt = module.Adam([p], lr=1e-3, **({} if fused is None else {"fused": fused}))
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
        scaler.scale(p.float().square().sum()).backward()
        scaler.step(opt)
        scaler.update()
        return p

    if fused:
        run(torch.optim)  # torch's fused optimizers take float16 grads: so does fused=True
        run(optimlab)
        return
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        run(torch.optim)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        run(optimlab)


@pytest.mark.parametrize("name", ["Adam", "NAdam", "RMSprop", "Adagrad"])
def test_float16_state_underflow_gives_non_finite_where_torch_does(name):
    """Tiny grads underflow a float16 second moment; torch's default path then gives inf/NaN.
    0.1's kernels kept going with silently huge steps (Adam: |dw| up to 13.7 at lr 1e-3)."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(1000, generator=gen).half()
    results = {}
    for label, module, extra in (
        ("torch", torch.optim, {"foreach": False}),
        ("optimlab", optimlab, {}),
    ):
        p = start.clone().requires_grad_()
        opt = getattr(module, name)([p], lr=1e-3, **extra)
        g = torch.Generator().manual_seed(1)
        for _ in range(30):
            p.grad = (torch.randn(1000, generator=g) * 1e-3).half()
            opt.step()
        results[label] = p.detach()
    assert not torch.isfinite(results["torch"]).all()  # the premise
    assert torch.equal(torch.isfinite(results["optimlab"]), torch.isfinite(results["torch"]))
    finite = torch.isfinite(results["torch"])
    torch.testing.assert_close(
        results["optimlab"][finite], results["torch"][finite], rtol=1e-2, atol=1e-3
    )
