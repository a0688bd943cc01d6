"""Low-precision optimizer state and bfloat16 params (issue 12).

Oracles: the formats' definitions computed independently here (float64 Python), and the
reference path (``fused=False``: the formats in torch ops, ``optimizers/precision.py``),
which the C kernels must match.  Tolerances: the stored state decoded and the params are
compared with rtol 1e-6 (float32 params: the kernels' and torch's square roots differ by
an ulp, and an ulp before a rounding can move the stored value by one step of its format
on rare elements) and bitwise where no square root is involved.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import optimlab
from optimlab.kernels import cpu as cpu_kernels
from optimlab.kernels import storage
from optimlab.optimizers import precision
from optimlab.optimizers.dispatch import cached_plan

kernels_only = pytest.mark.skipif(not cpu_kernels.AVAILABLE, reason=cpu_kernels.UNAVAILABLE)

CASES = [  # (name, kwargs): every optimizer with state, every slot layout
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, momentum_form="lecture")),
    ("Adagrad", dict(lr=0.1, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, maximize=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("NAdam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.1)),
]
FORMATS = [  # (param dtype, state_precision, param_rounding)
    (torch.float32, "bf16", "nearest"),
    (torch.float32, "8bit", "nearest"),
    (torch.bfloat16, None, "stochastic"),
    (torch.bfloat16, None, "kahan"),
    (torch.bfloat16, "fp32", "nearest"),
    (torch.bfloat16, "8bit", "stochastic"),
    (torch.bfloat16, "bf16", "kahan"),
    (torch.float16, "fp32", "nearest"),
]
SHAPES = [(5000,), (97, 61), (3, 5)]  # 8-bit (with a partial last block), 8-bit, too small


def _case_id(value):
    if isinstance(value, tuple) and len(value) == 3:
        return f"{str(value[0])[6:]}-{value[1]}-{value[2]}"
    if isinstance(value, tuple):
        return f"{value[0]}({','.join(f'{k}={v}' for k, v in value[1].items())})"
    return str(value)


def _params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]


def _train(name, kwargs, params, steps, start=0, opt=None, **extra):
    opt = opt or getattr(optimlab, name)(params, **kwargs, **extra)
    for step in range(start, start + steps):
        gen = torch.Generator().manual_seed(1000 + step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        opt.step()
    return opt


def _decoded(opt, p):
    state = opt.state[p]
    return {
        key: precision.load(state, key, p)
        for key, value in state.items()
        if torch.is_tensor(value) and value.shape == p.shape
    }


# -- the formats themselves ------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "exp_bits", "smallest"), [("signed", 4, 2.0**-17), ("unsigned", 5, 2.0**-33)]
)
def test_code_values_are_the_stated_floats(code, exp_bits, smallest):
    values = storage.code_values(code).double()
    magnitudes = values[:128] if code == "signed" else values
    assert torch.all(magnitudes[1:] > magnitudes[:-1])  # ascending: byte order is value order
    bias = 2**exp_bits - 1
    assert magnitudes[bias << 3].item() == 1.0  # the block's absmax is stored exactly
    assert magnitudes[1].item() == smallest
    for k in (9, 50, 100):  # (1 + m/8) * 2^(e - bias)
        e, m = k >> 3, k & 7
        assert magnitudes[k].item() == (1 + m / 8) * 2.0 ** (e - bias)
    if code == "signed":
        assert torch.equal(values[128:], -values[:128])


@pytest.mark.parametrize("code", ["signed", "unsigned"])
def test_quantize_picks_the_nearest_code_value(code):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3000, generator=gen) * torch.logspace(-6, 2, 3000)
    if code == "unsigned":
        x = x.abs()
    codes = torch.empty(3000, dtype=torch.uint8)
    absmax = torch.empty(storage.absmax_shape(3000))
    storage.quantize(x, code, codes, absmax)
    y = storage.dequantize(codes, absmax, code)
    # an independent oracle: per element, the distance to every code value (float64)
    scale = x.view(-1).double()
    blocks = torch.nn.functional.pad(scale, (0, (-3000) % 256)).view(-1, 256)
    block_max = blocks.abs().amax(1).repeat_interleave(256)[:3000]
    candidates = storage.code_values(code).double()[None, :] * block_max[:, None]
    best = (candidates - scale[:, None]).abs().min(1).values
    assert torch.all((y.double() - scale).abs() <= best + 1e-6 * block_max)


def test_stochastic_rounding_is_unbiased_and_keyed():
    x = torch.full((200_000,), 1.0 + 2.0**-10)  # an eighth of the way to the next bfloat16
    noise = storage.noise(storage.stream(7, 3, 5, 0), x.numel(), 16)
    rounded = storage.round_bf16_stochastic(x, noise).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2.0**-7}
    frac_up = (rounded > 1.0).double().mean().item()
    assert abs(frac_up - 0.125) < 5 * math.sqrt(0.125 * 0.875 / x.numel())  # 5 sigma
    again = storage.noise(storage.stream(7, 3, 5, 0), x.numel(), 16)
    assert torch.equal(noise, again)
    assert not torch.equal(noise, storage.noise(storage.stream(7, 4, 5, 0), x.numel(), 16))


@pytest.mark.parametrize("code", ["signed", "unsigned"])
def test_stochastic_8bit_rounding_is_unbiased(code):
    """An optimizer's 8-bit stores round stochastically: each element becomes one of the two
    code values around it, the upper with probability equal to its distance from the lower
    in code steps, so the mean is the value.  Oracle: the code's values (float64), here."""
    values = storage.code_values(code).double()
    values = values[(values >= 0) & (values <= 1.0)].unique()  # ascending magnitudes
    smallest = values[1].item()  # the subnormal step
    # (a value whose code at or above it is the lower neighbour, fraction of the way up to
    # the next): mid-octave, subnormal, just under the top
    points = [(0.3, 0.3), (smallest * 5, 0.7), (values[-2].item(), 0.9)]
    for lower, fraction in points:
        i = int(torch.searchsorted(values, torch.tensor(lower, dtype=torch.float64)))
        low, high = values[i].item(), values[i + 1].item()
        x = torch.full((400, storage.BLOCK), low + fraction * (high - low))
        x[:, 0] = 1.0  # each block's absmax
        codes = torch.empty(x.shape, dtype=torch.uint8)
        absmax = torch.empty(storage.absmax_shape(x.numel()))
        noise = storage.noise(storage.stream(1, 2, 3, 0), x.numel(), storage.NOISE_8BIT)
        storage.quantize(x, code, codes, absmax, noise)
        got = storage.dequantize(codes, absmax, code)[:, 1:].double()
        assert set(got.unique().tolist()) <= {low, high}, (lower, fraction)
        up = ((got == high).double().mean().item(), got.numel())
        assert abs(up[0] - fraction) < 5 * math.sqrt(fraction * (1 - fraction) / up[1])


def every_kind_of_block():
    """17 blocks of 256 (the last one partial, 160): ratios to the block's absmax from 1
    down past the codes' smallest steps (2**-17 signed; squared, 2**-33 unsigned), values
    on code values and between them, -0.0, an all-zero, a NaN and an infinite block, and
    absmaxes other than 1 (so |x| times the absmax's inverse is rounded, and can pass 1.0),
    down to subnormal ones whose inverse overflows to inf."""
    gen = torch.Generator().manual_seed(5)
    ramp = torch.logspace(0, -12, storage.BLOCK, dtype=torch.float64)
    values = torch.randn(17, storage.BLOCK, generator=gen, dtype=torch.float64).sign() * ramp
    values[3] = 0.0
    values[4, 7] = math.nan
    values[5, 9] = -math.inf
    # 1 + 1/16 of 2**-1 lies halfway between two codes' values (mantissa 0 and 1)
    ties = [1.0, 0.53125, -0.59375, 1.5 * 2.0**-17, 2.5 * 2.0**-17, 0.5 * 2.0**-17, -0.0]
    values[6, : len(ties)] = torch.tensor(ties, dtype=torch.float64)
    absmaxes = (3.0, 0.1, 12345.678, 1e-20, 2.0**-127, 2.0**-130, 1e-39)
    for block, absmax in enumerate(absmaxes, start=7):
        values[block] *= absmax
    values[14] *= torch.rand(storage.BLOCK, generator=gen, dtype=torch.float64) * 7
    return values.flatten()[: 16 * storage.BLOCK + 160].float()


def first_8bit_store(name, key, code, seed=0):
    """The optimizer's first 8-bit store of ``every_kind_of_block()`` in ``code``, as
    ``storage.quantize`` specifies it: (grad, codes, absmax) -- SGD stores the gradient as
    its first momentum, Adagrad its square as its sum; both slot 0 of row 0, at step 1."""
    grad = every_kind_of_block()
    value = grad if code == storage.SIGNED else grad * grad
    codes = torch.empty(value.shape, dtype=torch.uint8)
    absmax = torch.empty(storage.absmax_shape(value.numel()))
    noise = storage.noise(storage.stream(seed, 1, 0, 0), value.numel(), storage.NOISE_8BIT)
    storage.quantize(value, code, codes, absmax, noise)
    return grad, codes, absmax


STORES_8BIT = [
    ("SGD", "momentum_buffer", storage.SIGNED),
    ("Adagrad", "sum", storage.UNSIGNED),
]


@kernels_only
@pytest.mark.parametrize(("name", "key", "code"), STORES_8BIT)
def test_8bit_kernel_stores_are_storage_quantize(name, key, code):
    """One 8-bit store of every kind of block by the C kernels against ``storage.quantize``
    (the specification), byte for byte: the codes and every block's absmax."""
    grad, codes, absmax = first_8bit_store(name, key, code, seed=9)
    param = torch.zeros_like(grad, requires_grad=True)
    kwargs = dict(lr=0.0, momentum=0.9) if name == "SGD" else dict(lr=0.0)
    opt = getattr(optimlab, name)([param], **kwargs, state_precision="8bit", rounding_seed=9)
    param.grad = grad.clone()
    opt.step()
    assert not cached_plan(opt).rest  # the kernels took it
    state = opt.state[param]
    assert torch.equal(state[key], codes)
    assert torch.equal(state[precision.absmax_key(key)].view(torch.int32),
                       absmax.view(torch.int32))  # fmt: skip


# -- kernels against the reference -------------------------------------------------------


@kernels_only
@pytest.mark.parametrize("fmt", FORMATS, ids=_case_id)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_kernels_match_the_reference(case, fmt):
    name, kwargs = case
    dtype, state_precision, rounding = fmt
    extra = dict(state_precision=state_precision, param_rounding=rounding, rounding_seed=3)
    ours, theirs = _params(dtype), _params(dtype)
    fused = _train(name, kwargs, ours, 6, **extra)
    reference = _train(name, kwargs, theirs, 6, fused=False, **extra)
    assert not cached_plan(fused).rest  # the kernels took every tensor
    exact = name == "SGD"  # no square root: bitwise
    for a, b in zip(ours, theirs, strict=True):
        if exact:
            assert torch.equal(a, b)
        else:
            # an ulp before a (stochastic) rounding moves the stored value by a step, which
            # later steps carry on: on a few elements only, by a few steps of the format
            half = dtype != torch.float32
            scale = b.detach().abs().max().item()
            torch.testing.assert_close(a.float(), b.float(), rtol=5e-2 if half else 1e-5,
                                       atol=(1e-2 if half else 1e-6) * scale)  # fmt: skip
            assert (a != b).float().mean() < 0.02
        for key, value in _decoded(fused, a).items():
            other = _decoded(reference, b)[key]
            if exact:
                assert torch.equal(value, other), key
            else:
                scale = other.abs().max().item() or 1.0
                assert ((value - other).abs() > 1e-5 * scale).float().mean() < 0.02, key
        assert fused.state[a].keys() == reference.state[b].keys()


def test_state_is_stored_as_asked():
    big, small = torch.zeros(5000, requires_grad=True), torch.zeros(10, requires_grad=True)
    half = torch.zeros(5000, dtype=torch.bfloat16, requires_grad=True)
    opt = optimlab.Adam([big, small], state_precision="8bit")
    opt2 = optimlab.Adam([half], state_precision="fp32", param_rounding="kahan")
    for p in (big, small, half):
        p.grad = torch.ones_like(p)
    opt.step()
    opt2.step()
    assert opt.state[big]["exp_avg"].dtype == torch.uint8
    assert opt.state[big]["exp_avg_sq_absmax"].shape == (20,)  # ceil(5000 / 256)
    assert opt.state[small]["exp_avg"].dtype == torch.float32  # under MIN_8BIT: unquantized
    assert opt2.state[half]["exp_avg"].dtype == torch.float32
    assert opt2.state[half]["kahan_comp"].dtype == torch.bfloat16


def _state_bytes(opt):
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
               if torch.is_tensor(v) and v.dim() > 0)  # fmt: skip


@pytest.mark.parametrize(("state_precision", "most"), [("bf16", 0.5), ("8bit", 0.27)])
def test_state_memory(state_precision, most):
    sizes = {}
    for label, extra in (("fp32", {}), ("low", {"state_precision": state_precision})):
        p = torch.zeros(1 << 20, requires_grad=True)
        p.grad = torch.ones_like(p)
        opt = optimlab.Adam([p], **extra)
        opt.step()
        sizes[label] = _state_bytes(opt)
    assert sizes["low"] <= most * sizes["fp32"], sizes


@kernels_only
def test_threads_do_not_change_results():
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            params = [torch.randn(70_000, generator=torch.Generator().manual_seed(0))
                      .bfloat16().requires_grad_()]  # fmt: skip
            _train("Adam", dict(lr=0.01), params, 4, state_precision="8bit",
                   param_rounding="stochastic")  # fmt: skip
            results.append(params[0].detach().clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("fmt", FORMATS, ids=_case_id)
def test_resume_is_bitwise(fmt, fused):
    dtype, state_precision, rounding = fmt
    extra = dict(state_precision=state_precision, param_rounding=rounding, fused=fused)
    straight = _params(dtype)
    _train("Adam", dict(lr=0.01), straight, 8, **extra)
    resumed = _params(dtype)
    first = _train("Adam", dict(lr=0.01), resumed, 4, **extra)
    buffer = io.BytesIO()
    torch.save({"opt": first.state_dict(), "params": [p.detach() for p in resumed]}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    params = [p.clone().requires_grad_() for p in saved["params"]]
    second = optimlab.Adam(params, lr=0.01, **extra)
    second.load_state_dict(saved["opt"])
    _train("Adam", dict(lr=0.01), params, 4, start=4, opt=second)
    for a, b in zip(straight, params, strict=True):
        assert torch.equal(a, b)


def test_checkpoints_convert_between_precisions():
    """A float32 checkpoint (torch.optim's) loads quantized; a quantized one loads back as
    float32 into an optimizer without the option."""
    p = torch.randn(5000, generator=torch.Generator().manual_seed(0), requires_grad=True)
    theirs = torch.optim.Adam([p], lr=0.01)
    p.grad = torch.randn(5000)
    theirs.step()
    full = {k: v.clone() for k, v in theirs.state[p].items()}
    low = optimlab.Adam([p], lr=0.01, state_precision="8bit")
    low.load_state_dict(theirs.state_dict())
    assert low.state[p]["exp_avg"].dtype == torch.uint8
    for key in ("exp_avg", "exp_avg_sq"):  # a conversion rounds to nearest (no noise)
        code = storage.UNSIGNED if key == "exp_avg_sq" else storage.SIGNED
        codes = torch.empty(full[key].shape, dtype=torch.uint8)
        absmax = torch.empty(storage.absmax_shape(full[key].numel()))
        storage.quantize(full[key], code, codes, absmax)
        assert torch.equal(low.state[p][key], codes)
        assert torch.equal(low.state[p][f"{key}_absmax"], absmax)
        decoded = precision.load(low.state[p], key, p)
        assert (decoded - full[key]).abs().max() <= full[key].abs().max() / 32  # half a step
    back = optimlab.Adam([p], lr=0.01)
    back.load_state_dict(low.state_dict())
    assert back.state[p]["exp_avg"].dtype == torch.float32
    assert "exp_avg_absmax" not in back.state[p]
    assert torch.equal(back.state[p]["exp_avg"], precision.load(low.state[p], "exp_avg", p))


def test_bf16_state_survives_load_as_bf16():
    """torch's load_state_dict casts state to the param's dtype; a float32 state kept for a
    bfloat16 param must come back float32, not rounded to bfloat16."""
    p = torch.randn(100).bfloat16().requires_grad_()
    opt = optimlab.Adam([p], state_precision="fp32")
    p.grad = torch.randn(100).bfloat16()
    opt.step()
    before = opt.state[p]["exp_avg_sq"].clone()
    again = optimlab.Adam([p], state_precision="fp32")
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.state[p]["exp_avg_sq"], before)


@kernels_only
def test_a_low_precision_step_allocates_nothing():
    from memory_util import allocated_bytes

    params = [torch.randn(20_000).bfloat16().requires_grad_(), torch.randn(9000).requires_grad_()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = optimlab.Adam(params, state_precision="8bit", param_rounding="stochastic")
    opt.step()
    opt.step()
    assert allocated_bytes(opt.step) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(state_precision="int4"), "Invalid state_precision: 'int4'"),
        (dict(param_rounding="up"), "Invalid param_rounding: 'up'"),
        (dict(rounding_seed=-1), "Invalid rounding_seed: -1"),
        (dict(rounding_seed=1.5), "Invalid rounding_seed: 1.5"),
        (dict(state_precision="8bit", differentiable=True), "differentiable=True"),
    ],
)
def test_bad_options_are_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", "\\(")):
        optimlab.Adam([torch.zeros(3, requires_grad=True)], **kwargs)


def test_float16_params_round_to_nearest_only():
    with pytest.raises(ValueError, match="float16 params round to nearest"):
        optimlab.SGD([torch.zeros(3, dtype=torch.float16, requires_grad=True)], lr=0.1,
                     param_rounding="stochastic")  # fmt: skip


def test_bf16_params_train_like_float32_with_stochastic_or_kahan_rounding():
    """Updates far below half a bfloat16 step: round-to-nearest loses them all, stochastic
    rounding keeps them on average, Kahan in its compensation."""
    steps, lr = 200, 1e-4
    target = 1.0 - steps * lr  # plain SGD, gradient 1
    final = {}
    for mode in ("nearest", "stochastic", "kahan"):
        p = torch.ones(4096, dtype=torch.bfloat16, requires_grad=True)
        opt = optimlab.SGD([p], lr=lr, param_rounding=mode)
        for _ in range(steps):
            p.grad = torch.ones_like(p)
            opt.step()
        value = p.float()
        if mode == "kahan":  # the weight is bfloat16; with its compensation, 16 bits
            assert torch.equal(p, torch.full_like(p, 1.0 - steps * lr))  # the nearest bf16
            value = value + opt.state[p]["kahan_comp"].float()
        final[mode] = value.mean().item()
    assert final["nearest"] == 1.0  # every update rounded away
    # each rounding adds noise of at most half a bfloat16 step (2**-9 here) to an element:
    # the mean of 4096 random walks of 200 steps stays within 5 standard deviations
    assert abs(final["stochastic"] - target) < 5 * math.sqrt(steps) * 2.0**-9 / 64
    # the compensation is bfloat16 too: each step loses at most half its last place, and
    # it is under half the weight's (2**-9): at most 2**-18 per step
    assert abs(final["kahan"] - target) <= steps * 2.0**-18
