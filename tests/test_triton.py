"""The Triton kernels against the reference path: every optimizer x option x dtype, and
every storage format of ``kernels/storage.py``.

Without a GPU, Triton's interpreter (``TRITON_INTERPRET=1``, set below before the kernels
are imported) runs the kernels on CPU tensors; with a CUDA device the same tests run the
compiled kernels there.  Every kernel-able group is routed to the Triton backend alone
(the ``triton_only`` fixture); the reference is ``fused=False, foreach=False`` on the same
device, tensors and gradients.

Tolerances:

* float32: rtol 1e-6, atol 4e-7 x the tensor's largest magnitude, as for the C kernels
  (torch's CPU ``sqrt`` is not correctly rounded; the kernels' is).  Under the interpreter
  SGD is bitwise, and float32, bfloat16 and float16 results are bitwise equal to the C
  kernels': the updates mirror ``updates.h`` fma for fma (and its float16 roundings,
  ``HALF``), and the GPU build fuses nothing else (``enable_fp_fusion=False``).
* float64: rtol 1e-13, atol 1e-15 x the largest magnitude.  The per-tensor scalars
  (``beta ** t``) come from a pow by squaring, not libm's correctly rounded one: a few
  ulps of float64 at most.
* bfloat16 params (float32 math, state stored in the param dtype) against the reference
  run on a float32 copy; float16 params (float32 math rounded to float16 where torch's
  float16 path rounds) against the reference run in float16, NaN where it is NaN: rtol
  2e-2, atol 2e-2 of the values.
* Stored formats (state in float32, bfloat16 or 8-bit blocks; bfloat16 params rounded
  stochastically or Kahan-compensated): against the reference as ``test_precision``
  compares the C kernels (SGD bitwise; else an ulp before a rounding moves a stored value
  by a step of its format on under 2 % of the elements), and under the interpreter
  bitwise equal to the C kernels, every stored byte (codes, absmax, compensation).
* A tensor ``lr`` makes the reference divide by the bias correction in float32 tensors,
  where the kernels use float64: float32's tolerance for every dtype.
* Counters: ``step`` exact; NAdam's ``mu_product`` rtol 1e-15 (its 0.96 ** (t * decay)
  comes from exp2/log2).
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import os

import pytest
import torch

import optimlab
from optim_cases import LECTURE_CASES, TORCH_CASES, case_id, ours
from optimlab.kernels import KernelCall
from optimlab.kernels import cpu as cpu_kernels
from optimlab.optimizers import dispatch, precision
from test_kernels import KERNEL_CASES
from test_precision import CASES as FORMAT_CASES
from test_precision import FORMATS, STORES_8BIT, _case_id, first_8bit_store

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"
# Without a GPU, Triton's interpreter runs the kernels.  Triton reads the variable when it
# decorates them (at import) and while they run (the `interpreted` fixture); the rest of
# the session does not see it.
_outer = os.environ.get("TRITON_INTERPRET")
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"
try:
    from optimlab.kernels import triton as triton_kernels

    if triton_kernels.AVAILABLE:
        with contextlib.suppress(ImportError):  # a triton that does not load: skipped below
            from optimlab.kernels.triton import backend, driver
finally:
    if _outer is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = _outer
pytestmark = [
    pytest.mark.skipif(not triton_kernels.AVAILABLE, reason=triton_kernels.UNAVAILABLE),
    # the interpreter computes the masked-off lanes of a row's last block too (on zeros:
    # 0/0 in float16 math), and NumPy warns; the stores drop those lanes
    pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter"),
    pytest.mark.skipif(
        INTERPRETED and not triton_kernels.INTERPRET,
        reason="optimlab.kernels.triton was imported before TRITON_INTERPRET=1 was set",
    ),
]
if INTERPRETED and triton_kernels.AVAILABLE:
    from triton_util import patch_once_per_launch

    patch_once_per_launch()
if cpu_kernels.AVAILABLE:
    # plan.bind() uses the C extension when built, which cpu/backend.py configures on import
    import optimlab.kernels.cpu.backend  # noqa: F401

CASES = [
    case for case in TORCH_CASES + LECTURE_CASES + KERNEL_CASES
    if case[1].get("nesterov_form") != "lookahead"  # needs a closure: test_kernels covers it
]  # fmt: skip
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
STEPS = 3
TOL = {  # atol is relative to the largest magnitude in the expected tensor (see _close)
    torch.float32: dict(rtol=1e-6, atol=4e-7),
    torch.float64: dict(rtol=1e-13, atol=1e-15),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    torch.float16: dict(rtol=2e-2, atol=2e-2),
}
EXACT = dict(rtol=0, atol=0)


@pytest.fixture(autouse=True)
def interpreted(monkeypatch):
    if INTERPRETED:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def triton_only(monkeypatch):
    """Route every group the fused kernels would take to the Triton backend on DEVICE;
    ``with triton_only():`` routes as optimlab does (the C kernels on the CPU)."""
    real = dispatch.routes
    route = dispatch.TRITON._replace(devices=frozenset({DEVICE}))

    def routes(group, has_kernel):
        chain = real(group, has_kernel)
        return (route,) if dispatch.CPU in chain else chain

    monkeypatch.setattr(dispatch, "routes", routes)

    @contextlib.contextmanager
    def as_optimlab_routes():
        monkeypatch.setattr(dispatch, "routes", real)
        try:
            yield
        finally:
            monkeypatch.setattr(dispatch, "routes", routes)

    return as_optimlab_routes


# -- tensors ------------------------------------------------------------------------------


def _draw(gen, shape, dtype):
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype)


def _make(dtype, shapes=((), (0,), (5, 7), (1031,), (3, 0, 2))):
    """Leaf params: a scalar, empty ones, a block and a partial block, values drawn in
    float64, then cast."""
    gen = torch.Generator().manual_seed(0)
    return [_draw(gen, shape, dtype).requires_grad_() for shape in shapes]


def _grads(params, step):
    """Fresh grads (as zero_grad(set_to_none=True) + backward make them); one None per step."""
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        g = _draw(gen, p.shape, p.dtype)
        if i == step % len(params) and step > 0:
            p.grad = None  # no grad this step: no update, no step increment
        else:
            p.grad = torch.empty_like(p).copy_(g)  # the param's memory layout, as autograd


def _copy(params, dtype=None, device=None):
    return [
        p.detach()
        .to(device or p.device, dtype or p.dtype)
        .clone(memory_format=torch.preserve_format)
        .requires_grad_()
        for p in params
    ]


def _run(name, kwargs, params, steps=STEPS, **extra):
    opt = ours(name, params, kwargs, **extra)
    for step in range(steps):
        _grads(params, step)
        opt.step()
    return opt


def _reference(name, kwargs, params, steps=STEPS):
    return _run(name, kwargs, params, steps, fused=False, foreach=False)


def _close(actual, expected, rtol, atol):
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    scale = max(scale, 1.0) if math.isfinite(scale) else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, equal_nan=True)


def _assert_same(fused, reference, params_f, params_r, **tol):
    """Params and every state tensor close; counters as the module docstring says."""
    for pf, pr in zip(params_f, params_r, strict=True):
        _close(pf.detach().to(pr.dtype), pr.detach(), **tol)
        sf, sr = fused.state.get(pf, {}), reference.state.get(pr, {})
        assert sf.keys() == sr.keys()
        for key in sr:
            a, b = sf[key], sr[key]
            if key == "step":
                assert a.dtype == b.dtype and a.device == pf.device
                torch.testing.assert_close(a.cpu(), b.cpu(), **EXACT)
            elif key == "mu_product":
                assert a.dtype == b.dtype
                torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-15, atol=0)
            else:
                _close(a.to(b.dtype), b, **tol)


def _tolerance(name, dtype, kwargs):
    if dtype.itemsize == 2:
        return TOL[dtype]
    if any(isinstance(v, torch.Tensor) for v in kwargs.values()):
        return TOL[torch.float32]  # see the module docstring
    return EXACT if name == "SGD" and INTERPRETED else TOL[dtype]


def _plan(opt, index=0):
    plan = dispatch.cached_plan(opt, index, "triton")
    assert plan is not None, "the Triton backend did not step this group"
    return plan


# -- every optimizer x option x dtype -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(case, dtype, triton_only):
    name, kwargs = case
    params = _make(dtype)
    # bfloat16 params: the reference runs on float32 (the kernels' math); float16: in float16
    ref_params = _copy(params, torch.float32 if dtype == torch.bfloat16 else dtype)
    fused = _run(name, kwargs, params)
    reference = _reference(name, kwargs, ref_params)
    assert not _plan(fused).rest
    for p in params:
        for key, value in fused.state.get(p, {}).items():
            if key not in ("step", "mu_product"):
                assert value.dtype == dtype  # torch's zeros_like(p)
    _assert_same(fused, reference, params, ref_params, **_tolerance(name, dtype, kwargs))
    if INTERPRETED and cpu_kernels.AVAILABLE and dtype != torch.float64:
        c_params = _copy(_make(dtype))
        with triton_only():  # the C kernels, as optimlab routes CPU tensors
            c_kernels = _run(name, kwargs, c_params)
        assert dispatch.cached_plan(c_kernels, 0, "cpu") is not None
        _assert_same(fused, c_kernels, params, c_params, **EXACT)


# -- the chunk table ----------------------------------------------------------------------

ONE_PER_OPTIMIZER = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", ONE_PER_OPTIMIZER, ids=case_id)
def test_rows_of_many_chunks_and_layouts(case):
    """Rows of several chunks (whole blocks and a tail), one exactly a chunk, channels-last,
    and a param whose memory starts off a 16-byte boundary (no vector loads for its dtype)."""
    name, kwargs = case
    gen = torch.Generator().manual_seed(1)
    chunk = driver.CHUNK
    storage = _draw(gen, (chunk + 3,), torch.float32)
    params = [
        _draw(gen, (2 * chunk + 1000,), torch.float32),
        _draw(gen, (chunk,), torch.float32),
        _draw(gen, (2, 3, 4, 5), torch.float32).contiguous(memory_format=torch.channels_last),
        storage[1:],  # a contiguous view 4 bytes into its storage
        _draw(gen, (7,), torch.float64),
    ]
    params = [p.requires_grad_() for p in params]
    ref_params = _copy(params)
    fused = _run(name, kwargs, params)
    reference = _reference(name, kwargs, ref_params)
    _assert_same(fused, reference, params, ref_params, **_tolerance(name, torch.float32, kwargs))
    (part,) = _plan(fused).parts
    aligned = {launch.code: launch.aligned for launch in part.launches}
    assert aligned == {0: False, 1: True}  # float32 has the view 4 bytes in; float64 does not
    rows = {launch.code: sorted(launch.chunks[:, 0].tolist()) for launch in part.launches}
    assert rows == {0: [0, 0, 0, 1, 2, 3, 3], 1: [4]}  # one program per chunk


def test_mixed_dtypes_in_one_group_one_launch_each():
    """Each dtype of a group is one `step` launch; the result is one group per dtype's."""
    mixed = [torch.linspace(-1, 1, 37, dtype=dt, device=DEVICE).requires_grad_() for dt in DTYPES]
    alone = _copy(mixed)
    opt = optimlab.NAdam(mixed, lr=0.01, weight_decay=0.1)
    singles = [optimlab.NAdam([p], lr=0.01, weight_decay=0.1) for p in alone]
    for step in range(2):
        for p, q in zip(mixed, alone, strict=True):
            p.grad = torch.full_like(p, 0.25 * (step + 1))
            q.grad = p.grad.clone()
        opt.step()
        for single in singles:
            single.step()
    (part,) = _plan(opt).parts
    assert sorted(launch.code for launch in part.launches) == [0, 1, 2, 3]
    for p, q in zip(mixed, alone, strict=True):
        assert torch.equal(p, q), p.dtype


def test_float64_default_dtype_counters():
    """Under a float64 default dtype torch keeps float64 counters; the kernels advance them."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for name in ("Adam", "NAdam", "Adagrad"):
            params = _make(torch.float32)
            ref_params = _copy(params)
            fused = _run(name, dict(lr=0.01), params)
            reference = _reference(name, dict(lr=0.01), ref_params)
            assert fused.state[params[2]]["step"].dtype == torch.float64
            _assert_same(fused, reference, params, ref_params, **TOL[torch.float32])
    finally:
        torch.set_default_dtype(previous)


# -- hyperparameters read on the device ---------------------------------------------------


def test_tensor_lr_is_read_by_the_kernel_each_step():
    """A tensor lr on the device is read by the kernel (capturable): changing it in place
    takes effect without a new plan."""
    params = _make(torch.float32)
    ref_params = _copy(params)
    lrs = [torch.tensor(0.01, device=DEVICE) for _ in range(2)]
    opts = [
        optimlab.Adam(params, lr=lrs[0]),
        optimlab.Adam(ref_params, lr=lrs[1], fused=False, foreach=False),
    ]
    plans = []
    for step in range(3):
        for lr in lrs:
            lr.fill_(0.01 * (step + 1))
        for opt, ps in zip(opts, (params, ref_params), strict=True):
            _grads(ps, step)
            opt.step()
        plans.append(_plan(opts[0]))
    assert plans[0] is plans[1] is plans[2]
    _assert_same(*opts, params, ref_params, **TOL[torch.float32])


# -- AMP: GradScaler's unscale and skip, in the kernel --------------------------------------


def _snapshot(opt, params):
    return [
        (p.detach().clone(), p.grad.clone(), {k: v.clone() for k, v in opt.state[p].items()})
        for p in params
    ]


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5)), ("NAdam", dict(lr=0.01))],
)
def test_found_inf_skips_the_step_on_the_device(name, kwargs):
    """found_inf set: params, grads, state and counters untouched (not even unscaled), and a
    lazy slot still takes its first gradient at the first step that happens."""
    params = _make(torch.float32, shapes=((6,), (2, 3)))
    ref_params = _copy(params)
    opt = ours(name, params, kwargs)
    reference = _reference(name, kwargs, ref_params, steps=0)
    group = opt.param_groups[0]
    call = opt._kernel(opt.hyper(group))
    scale = torch.tensor(4.0, device=DEVICE)
    for p, q in zip(params, ref_params, strict=True):
        p.grad = torch.randn(p.shape, device=DEVICE) * 4.0
        q.grad = p.grad / 4.0  # exact
    before = [(p.detach().clone(), p.grad.clone()) for p in params]
    for _ in range(2):  # skipped twice: the plan is built at the first, reused at the second
        dispatch.step_group(opt, 0, group, call, scale, torch.tensor(1.0, device=DEVICE))
    for p, (value, grad) in zip(params, before, strict=True):
        assert torch.equal(p, value) and torch.equal(p.grad, grad)
        for key, state in opt.state[p].items():  # as created: zeros, mu_product 1
            assert torch.equal(state, torch.ones_like(state) if key == "mu_product" else
                               torch.zeros_like(state)), key  # fmt: skip
    dispatch.step_group(opt, 0, group, call, scale, torch.tensor(0.0, device=DEVICE))
    reference.step()
    _assert_same(opt, reference, params, ref_params, **TOL[torch.float32])
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)  # unscaled in place


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_grad_scaler(name):
    kwargs = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3).to(DEVICE)
    twin = torch.nn.Linear(6, 3).to(DEVICE)
    twin.load_state_dict(model.state_dict())
    opt = getattr(optimlab, name)(model.parameters(), **kwargs)
    plain = getattr(torch.optim, name)(twin.parameters(), **kwargs)
    scalers = [torch.amp.GradScaler(DEVICE, init_scale=2.0**10) for _ in range(2)]
    x = torch.randn(4, 6, device=DEVICE)
    for step in range(4):
        for m, o, s in ((model, opt, scalers[0]), (twin, plain, scalers[1])):
            o.zero_grad()
            s.scale((m(x) ** 2).sum()).backward()
            if step == 2:  # an overflow in one grad: the step must not happen
                m.weight.grad[0, 0] = float("inf")
            s.step(o)
            s.update()
        assert scalers[0].get_scale() == scalers[1].get_scale()
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert scalers[0].get_scale() == 2.0**9
    assert _plan(opt) is not None


# -- float16: torch's float16 roundings (updates.h's HALF) -----------------------------------


def test_float16_second_moment_underflows_as_in_torch(triton_only):
    """Gradients of 1e-4: (1 - beta2) * g**2 underflows float16, and eps = 1e-8 rounds to 0
    there, so torch's float16 Adam divides by zero.  The kernels round where torch rounds:
    the same infinities (not a silently huge finite step), bitwise as the C kernels."""
    p0 = torch.linspace(-1, 1, 300, dtype=torch.float16, device=DEVICE)

    def train(make):
        params = [p0.clone().requires_grad_()]
        opt = make(params)
        for step in range(3):
            params[0].grad = torch.full_like(p0, 1e-4 * (step + 1))
            opt.step()
        return params[0].detach()

    ours_ = train(lambda ps: optimlab.Adam(ps, lr=1e-3))
    torchs = train(lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False))
    assert not torchs.isfinite().any()  # the premise: torch's float16 path overflows
    _close(ours_, torchs, **TOL[torch.float16])
    if INTERPRETED and cpu_kernels.AVAILABLE:
        with triton_only():  # the C kernels
            c_kernels = train(lambda ps: optimlab.Adam(ps, lr=1e-3))
        _assert_bitwise(ours_, c_kernels)


# -- stored formats (kernels/storage.py): the matrix of test_precision ----------------------

# several 8-bit blocks over two chunks, the last block partial; a tensor too small for 8-bit
FORMAT_SHAPES = ((5000,), (3, 5))
FORMAT_STEPS = 3


def _options(fmt):
    dtype, state_precision, rounding = fmt
    return dtype, dict(state_precision=state_precision, param_rounding=rounding, rounding_seed=3)


def _format_params(dtype):
    gen = torch.Generator().manual_seed(0)
    return [_draw(gen, shape, dtype).requires_grad_() for shape in FORMAT_SHAPES]


def _train(name, kwargs, params, steps, start=0, opt=None, **extra):
    """``steps`` steps from step ``start``, gradients seeded by the step (so a resumed run
    sees the same ones)."""
    opt = opt or ours(name, params, kwargs, **extra)
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(1000 + step)
        for p in params:
            p.grad = _draw(gen, p.shape, p.dtype)
        opt.step()
    return opt


def _assert_bitwise(a, b, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if a.is_floating_point():
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        a, b = a.detach().view(ints), b.detach().view(ints)
    assert torch.equal(a.cpu(), b.cpu()), what


def _assert_same_storage(opt_a, params_a, opt_b, params_b):
    """Params and every state tensor as stored (codes, absmax, compensation): bitwise."""
    for a, b in zip(params_a, params_b, strict=True):
        _assert_bitwise(a, b, "param")
        assert opt_a.state[a].keys() == opt_b.state[b].keys()
        for key, value in opt_a.state[a].items():
            _assert_bitwise(value, opt_b.state[b][key], key)


def _assert_near_reference(fused, reference, ours_, theirs, name, dtype):
    """test_precision's tolerances (its docstring says why)."""
    exact = name == "SGD"  # no square root: bitwise
    for a, b in zip(ours_, theirs, strict=True):
        if exact:
            _assert_bitwise(a, b, "param")
        else:
            half = dtype != torch.float32
            scale = b.detach().abs().max().item()
            torch.testing.assert_close(a.float(), b.float(), rtol=5e-2 if half else 1e-5,
                                       atol=(1e-2 if half else 1e-6) * scale)  # fmt: skip
            assert (a != b).float().mean() < 0.02
        assert fused.state[a].keys() == reference.state[b].keys()
        for key, value in fused.state[a].items():
            if value.shape != a.shape:
                continue  # counters (compared by the update), 8-bit absmax (in the decoded)
            mine = precision.load(fused.state[a], key, a)
            other = precision.load(reference.state[b], key, b)
            if exact:
                assert torch.equal(mine, other), key
            else:
                scale = other.abs().max().item() or 1.0
                assert ((mine - other).abs() > 1e-5 * scale).float().mean() < 0.02, key


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS, ids=_case_id)
@pytest.mark.parametrize("case", FORMAT_CASES, ids=_case_id)
def test_formats_match_the_reference_and_the_c_kernels(case, fmt, triton_only):
    name, kwargs = case
    dtype, extra = _options(fmt)
    params = _format_params(dtype)
    fused = _train(name, kwargs, params, FORMAT_STEPS, **extra)
    assert not _plan(fused).rest  # the kernels took every tensor
    ref_params = _format_params(dtype)
    reference = _train(name, kwargs, ref_params, FORMAT_STEPS, fused=False, **extra)
    _assert_near_reference(fused, reference, params, ref_params, name, dtype)
    if INTERPRETED and cpu_kernels.AVAILABLE:
        c_params = _format_params(dtype)
        with triton_only():  # the C kernels, as optimlab routes CPU tensors
            c_kernels = _train(name, kwargs, c_params, FORMAT_STEPS, **extra)
        assert dispatch.cached_plan(c_kernels, 0, "cpu") is not None
        _assert_same_storage(fused, params, c_kernels, c_params)


@pytest.mark.parametrize(("name", "key", "code"), STORES_8BIT)
def test_8bit_stores_are_storage_quantize(name, key, code):
    """One 8-bit store of every kind of block against ``storage.quantize`` (the
    specification), byte for byte: the codes and every block's absmax."""
    grad, codes, absmax = first_8bit_store(name, key, code)
    param = torch.zeros_like(grad, device=DEVICE, requires_grad=True)
    kwargs = dict(lr=0.0, momentum=0.9) if name == "SGD" else dict(lr=0.0)
    opt = ours(name, [param], kwargs, state_precision="8bit")
    param.grad = grad.to(DEVICE)
    opt.step()
    assert _plan(opt) is not None
    state = opt.state[param]
    _assert_bitwise(state[key], codes.to(DEVICE), "codes")
    _assert_bitwise(state[precision.absmax_key(key)], absmax.to(DEVICE), "absmax")


def test_rounding_streams_of_every_group_seed_and_step():
    """Stochastic rounding keyed by a later group, a seed and a step past 2**32 (every half
    of storage.stream's arguments): SGD has no square root, so it is the reference's, bit
    for bit, params and bfloat16 state."""
    runs = []
    for fused in (None, False):
        gen = torch.Generator().manual_seed(2)
        params = [_draw(gen, (n,), torch.bfloat16).requires_grad_() for n in (300, 5, 200)]
        groups = [{"params": params[:2]}, {"params": params[2:]}]
        opt = optimlab.SGD(groups, lr=0.1, momentum=0.9, state_precision="bf16",
                           param_rounding="stochastic", rounding_seed=2**40 + 2**31 + 7,
                           fused=fused, foreach=False)  # fmt: skip
        for group in opt.param_groups:
            group["rounding_step"] = 2**32 + 2**31 + 3
        _train("SGD", {}, params, 2, opt=opt)
        runs.append((opt, params))
    assert all(_plan(runs[0][0], i) is not None for i in (0, 1))
    _assert_same_storage(*runs[0], *runs[1])


FEW_FORMATS = [  # one launch of each storage the kernels compile
    (torch.bfloat16, "8bit", "stochastic"),
    (torch.float32, "bf16", "nearest"),
    (torch.bfloat16, "bf16", "kahan"),
]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FEW_FORMATS, ids=_case_id)
def test_results_do_not_depend_on_the_chunk_size(fmt, monkeypatch):
    """Programs of 256 elements (one 8-bit block), of 1024 in two iterations, and the
    default: the same bits (each block's absmax is its own; each rounding is keyed by the
    element, not by the program)."""
    dtype, extra = _options(fmt)
    runs = []
    for chunk, block in ((driver.CHUNK, driver.BLOCK), (256, 256), (1024, 512)):
        monkeypatch.setattr(driver, "CHUNK", chunk)
        monkeypatch.setattr(driver, "BLOCK", block)
        params = _format_params(dtype)
        opt = _train("Adam", dict(lr=0.01), params, 2, **extra)
        chunks = sum(len(launch.chunks) for launch in _plan(opt).parts[0].launches)
        assert chunks == sum(-(-p.numel() // chunk) for p in params)
        runs.append((opt, params))
    for opt, params in runs[1:]:
        _assert_same_storage(opt, params, *runs[0])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS, ids=_case_id)
def test_resume_with_formats_is_bitwise(fmt):
    """Two steps, torch.save / torch.load(weights_only=True) of the state and params, two
    more: the same bits as four steps straight (the rounding step travels in the group)."""
    dtype, extra = _options(fmt)
    straight = _format_params(dtype)
    whole = _train("Adam", dict(lr=0.01), straight, 4, **extra)
    first = _format_params(dtype)
    opt = _train("Adam", dict(lr=0.01), first, 2, **extra)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "params": [p.detach() for p in first]}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [p.clone().requires_grad_() for p in saved["params"]]
    again = optimlab.Adam(resumed, lr=0.01, **extra)
    again.load_state_dict(saved["opt"])
    _train("Adam", dict(lr=0.01), resumed, 2, start=2, opt=again)
    assert _plan(again) is not None
    _assert_same_storage(again, resumed, whole, straight)


@pytest.mark.parametrize("fmt", FEW_FORMATS[::2], ids=_case_id)
def test_found_inf_skips_stored_formats(fmt, triton_only):
    """found_inf set: params, grads, and every stored byte (codes, absmax, compensation,
    counters) untouched; the steps that happen are the C kernels' bit for bit (the rounding
    step advances at a skipped step there too), or the reference's on a GPU."""
    dtype, extra = _options(fmt)
    inf, ok = (torch.tensor(v, device=DEVICE) for v in (1.0, 0.0))

    def run(params, **more):
        opt = optimlab.Adam(params, lr=0.01, **extra, **more)
        group = opt.param_groups[0]
        for step, found in enumerate((ok, inf, inf, ok)):
            gen = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = _draw(gen, p.shape, p.dtype)
            before = [(p.detach().clone(), p.grad.clone()) for p in params]
            state = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
            opt._step_group(0, group, None, found)
            if found is inf:
                for p, (value, grad), kept in zip(params, before, state, strict=True):
                    _assert_bitwise(p, value, "param")
                    _assert_bitwise(p.grad, grad, "grad")
                    for key, stored in kept.items():
                        _assert_bitwise(opt.state[p][key], stored, key)
        return opt

    params = _format_params(dtype)
    fused = run(params)
    assert _plan(fused) is not None
    if INTERPRETED and cpu_kernels.AVAILABLE:
        c_params = _format_params(dtype)
        with triton_only():
            c_kernels = run(c_params)
        _assert_same_storage(fused, params, c_kernels, c_params)
    else:
        ref_params = _format_params(dtype)
        reference = run(ref_params, fused=False, foreach=False)
        _assert_near_reference(fused, reference, params, ref_params, "Adam", dtype)


# -- the backend's interface --------------------------------------------------------------


def test_problem_names_what_the_kernels_cannot_take():
    call = KernelCall("sgd", (None, None, None), (), {}, ())
    meta = torch.empty(3, device="meta")
    assert "a parameter is on meta" in backend.problem(meta, None, call)
    odd = call._replace(name="lion")
    assert "no 'lion' update" in backend.problem(torch.zeros(2, device=DEVICE), None, odd)
    assert backend.problem(torch.zeros(2, device=DEVICE), None, call) == ""
    stored = call._replace(state_precision="bf16", param_rounding="kahan")
    half = torch.zeros(2, dtype=torch.bfloat16, device=DEVICE)
    assert backend.problem(half, None, stored) == ""  # the storage formats are the kernels'


def test_unavailable_says_why(monkeypatch):
    import importlib.metadata
    import importlib.util

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.1.0")
    assert "triton 3.1.0 is too old" in triton_kernels._why_not()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "triton is not installed" in triton_kernels._why_not()


_WATCH_TRITON_IMPORT = """
import sys, traceback
class Watch:  # records who imports triton first, and lets the import go on
    stack = []
    def find_spec(self, name, path=None, target=None):
        frames = traceback.extract_stack()
        lookup = any(f.name == "find_spec" and "importlib" in f.filename and "util" in f.filename
                     for f in frames)  # importlib.util.find_spec("triton"): not an import
        if name == "triton" and not Watch.stack and not lookup:
            Watch.stack = [frame.filename for frame in frames]
sys.meta_path.insert(0, Watch())
import torch, optimlab, optimlab.kernels.triton
p = torch.ones(3, requires_grad=True); o = optimlab.Adam([p]); p.grad = p.detach(); o.step()
print([name for name in Watch.stack if "optimlab" in name])
"""


def test_optimlab_kernels_triton_does_not_import_triton():
    """Only the backend (imported when a CUDA tensor reaches it) imports triton."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _WATCH_TRITON_IMPORT], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    importers = ast.literal_eval(done.stdout.strip())  # the optimlab frames importing it
    assert not [name for name in importers if os.path.join("kernels", "triton") in name]


_BROKEN_TRITON = """
import sys
class Block:  # triton is installed but does not load
    def find_spec(self, name, path=None, target=None):
        if name == "triton.language":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
import optimlab.kernels.triton as kernels
try:
    import optimlab.kernels.triton.backend
except ImportError as error:
    print(kernels.AVAILABLE, error)
"""


def test_a_triton_that_does_not_load_says_why():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _BROKEN_TRITON], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "False triton cannot be imported (ImportError('blocked for the test'))"
    )


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a CUDA device")
def test_step_captured_in_a_cuda_graph():
    """capturable: static grads and a tensor lr; replays step like eager steps."""
    params = _make(torch.float32, shapes=((1000,), (33, 7)))
    ref_params = _copy(params)
    lr = torch.tensor(0.01, device=DEVICE)
    opt = optimlab.Adam(params, lr=lr, capturable=True)
    reference = optimlab.Adam(ref_params, lr=0.01, fused=False, foreach=False)
    gen = torch.Generator().manual_seed(3)
    for p, q in zip(params, ref_params, strict=True):
        p.grad = _draw(gen, p.shape, torch.float32)
        q.grad = p.grad.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up (compiles, builds the plan) off the capture
        opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    reference.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for _ in range(3):
        graph.replay()
        reference.step()
    torch.cuda.synchronize()
    _assert_same(opt, reference, params, ref_params, **TOL[torch.float32])
