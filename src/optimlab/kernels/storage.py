"""How optimizer state and low-precision parameters are stored: the formats, in torch ops.

This module is the specification every backend implements (the C driver in
``cpu/optim.c``, the Triton driver), and the reference implementation the
optimizers' ``fused=False`` path runs, which the kernels are tested against.  An
update function never sees a format: a backend *loads* each stored value into
float32 (float64 for float64 tensors), runs the optimizer's update, and *stores*
the result back.

State formats (``state_precision``):

``None``
    the param's dtype, as torch.optim.
``"fp32"``
    float32 (a float32 copy of the state for bfloat16/float16 params).
``"bf16"``
    bfloat16, rounded stochastically on every store (below).
``"8bit"``
    one byte per element and one float32 ``absmax`` per block of :data:`BLOCK`
    elements: an element is ``code_value[byte] * absmax`` of its block.  Signed
    state (momentum, first moments) uses :data:`SIGNED`: a sign bit and a float
    with 4 exponent and 3 mantissa bits, 1.0 at the top (the block's absmax) down
    to 2**-17; non-negative state (second moments, Adagrad's sum) uses
    :data:`UNSIGNED`: 5 exponent and 3 mantissa bits, down to 2**-33, because a
    second moment spans far more octaves than a first.  Codes are computed from bit
    operations a CPU vectorizes -- the cheap, logarithmic alternative to the dynamic
    code of Dettmers et al. (2022), whose encoding is a search.  An optimizer's
    stores round stochastically (20 random bits below the code's last bit): with
    three mantissa bits a code step is 6-12 % of a value, and Adam's second moment
    (beta2 = 0.999) moves by about 0.1 % of itself per step, so rounding to nearest
    would write the old value back and freeze it, which cost the character LM
    measurably; stochastic rounding keeps each update on average.
    Converting a checkpoint rounds to nearest (ties to even).  Tensors under
    :data:`MIN_8BIT` elements stay in the param's dtype (bitsandbytes keeps them in
    float32 the same way).

Parameter rounding (``param_rounding``, bfloat16 params): ``"nearest"`` (torch's);
``"stochastic"``: the float32 result is rounded up with probability equal to its
distance from the bfloat16 below, so updates smaller than half a bfloat16 step
still move the weight on average; ``"kahan"``: a bfloat16 compensation buffer
(state key ``"kahan_comp"``) holds what the bfloat16 weight could not, so weight
and compensation together carry 16 significant bits.

Stochastic rounding draws its bits from a counter-based hash of (seed, step, the
tensor's place in the optimizer, the slot, the element): a result never depends on
the thread count or the order of work, and a resumed run continues bitwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "BLOCK", "MIN_8BIT", "NOISE_8BIT", "SIGNED", "UNSIGNED", "NONNEGATIVE", "STATE_PRECISIONS",
    "PARAM_ROUNDINGS", "code_values", "quantize", "dequantize", "round_bf16_stochastic",
    "noise", "stream", "state_format", "param_mode",
]  # fmt: skip

BLOCK = 256  # elements per absmax in 8-bit state
MIN_8BIT = 4096  # smaller tensors keep full-precision state
SIGNED, UNSIGNED = "signed", "unsigned"
# state keys whose values are >= 0 by the math: they take the unsigned code
NONNEGATIVE = frozenset({"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg"})
STATE_PRECISIONS = (None, "fp32", "bf16", "8bit")
PARAM_ROUNDINGS = ("nearest", "stochastic", "kahan")
PARAM_SLOT = 3  # the stochastic-rounding slot number of the param (state slots are 0-2)
NOISE_8BIT = 20  # random bits per stochastically rounded 8-bit code (the bits below its last)

# (exponent bits, mantissa bits) of each code's magnitude
_FORMATS = {SIGNED: (4, 3), UNSIGNED: (5, 3)}


def code_values(code: str) -> Tensor:
    """The float32 value of each of the 256 bytes of ``code`` (magnitudes up to 1.0; above
    1.0 are never written)."""
    exp_bits, man_bits = _FORMATS[code]
    bias = (1 << exp_bits) - 1  # the largest exponent field is 2**0
    magnitudes = []
    for k in range(1 << (exp_bits + man_bits)):
        e, m = k >> man_bits, k & ((1 << man_bits) - 1)
        scale = 2.0 ** (1 - bias) if e == 0 else 2.0 ** (e - bias)
        magnitudes.append((e != 0) * scale + m / (1 << man_bits) * scale)
    if code == SIGNED:  # bit 7: the sign
        magnitudes += [-v for v in magnitudes]
    return torch.tensor(magnitudes, dtype=torch.float32)


_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def _wrapper(param: Tensor) -> bool:
    """A tensor subclass whose elements live elsewhere (FSDP2's DTensor): 8-bit blocks and
    rounding streams would depend on how it is sharded."""
    return type(param).__torch_dispatch__ is not Tensor.__torch_dispatch__


def state_format(param: Tensor, state_precision: str | None) -> str | None:
    """The format of ``param``'s state: None (the param's dtype), "fp32", "bf16" or "8bit".
    float64, complex and DTensor params keep their own precision; small tensors stay
    unquantized."""
    if state_precision is None or param.dtype not in _FLOATS or _wrapper(param):
        return None
    if state_precision == "8bit" and param.numel() < MIN_8BIT:
        return None
    if state_precision == "fp32" and param.dtype == torch.float32:
        return None
    return state_precision


def param_mode(param: Tensor, param_rounding: str) -> str:
    """How ``param`` is rounded on store: "nearest" (float32/float64/float16 params always),
    "stochastic" or "kahan" (bfloat16 params)."""
    return param_rounding if param.dtype == torch.bfloat16 and not _wrapper(param) else "nearest"


_CODES = {code: code_values(code) for code in _FORMATS}
# the magnitudes a ratio |x| / absmax <= 1 rounds to, ascending (their index is the code)
_MAGNITUDES = {code: values[: 1 << sum(_FORMATS[code])] for code, values in _CODES.items()}
_MAGNITUDES = {code: m[m <= 1.0] for code, m in _MAGNITUDES.items()}


def _blocks(x: Tensor) -> Tensor:
    """``x`` flattened into rows of BLOCK elements (the last one zero-padded)."""
    flat = x.reshape(-1)
    pad = (-flat.numel()) % BLOCK
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, BLOCK)


def absmax_shape(numel: int) -> tuple[int]:
    return ((numel + BLOCK - 1) // BLOCK,)


def quantize(
    x: Tensor, code: str, codes: Tensor, absmax: Tensor, noise: Tensor | None = None
) -> None:
    """Store float32 ``x`` into ``codes`` (uint8, x's shape) and ``absmax`` (float32 per block):
    each element becomes the byte whose value times its block's absmax is nearest, or with
    ``noise`` (:func:`noise` of :data:`NOISE_8BIT` bits per element) one of the two bytes
    around it, the upper with probability equal to the element's distance from the lower
    in code steps."""
    blocks = _blocks(x.detach().float())
    scale = blocks.abs().amax(dim=1, keepdim=True)  # NaN propagates: the block decodes as NaN
    # |x| times the inverse of the block's absmax (one division per block: the kernels' cost);
    # an all-zero block gives zeros; the product can pass 1.0 by an ulp, or reach inf where the
    # absmax is under 2**-128 and its inverse overflows: at most 1.0, as the kernels clamp it
    ratio = (blocks.abs() * (1.0 / scale)).nan_to_num(nan=0.0).clamp(max=1.0)
    table = _MAGNITUDES[code]
    upper = torch.searchsorted(table, ratio).clamp(max=len(table) - 1)
    lower = (upper - 1).clamp(min=0)
    below, above = ratio - table[lower], table[upper] - ratio
    if noise is None:
        pick_upper = (above < below) | ((above == below) & (upper % 2 == 0))
    else:  # the distance in 2**-20 code steps, exact: steps are powers of two
        gap = table[upper] - table[lower]
        steps = torch.where(gap > 0, below / gap.clamp(min=torch.finfo(gap.dtype).tiny), 0.0)
        fraction = (steps * (1 << NOISE_8BIT)).floor().to(torch.int64)
        pick_upper = fraction + _blocks(noise.reshape(-1)) >= 1 << NOISE_8BIT
    index = torch.where(pick_upper, upper, lower)
    if code == SIGNED:
        index = index + 128 * (blocks < 0)
    codes.copy_(index.to(torch.uint8).reshape(-1)[: x.numel()].view(codes.shape))
    absmax.copy_(scale.reshape(-1))


def dequantize(codes: Tensor, absmax: Tensor, code: str) -> Tensor:
    """The float32 values stored in (``codes``, ``absmax``), in ``codes``' shape."""
    values = _blocks(_CODES[code][codes.reshape(-1).long()]) * absmax.reshape(-1, 1)
    return values.reshape(-1)[: codes.numel()].view(codes.shape)


# -- stochastic rounding: the hash and the rounding ------------------------------------------

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mix(x: Tensor | int) -> Tensor | int:
    """lowbias32 (C. Wellons): a 32-bit integer hash, on Python ints or int64 tensors."""
    x = x & _MASK
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _MASK
    x = ((x ^ (x >> 15)) * 0x846CA68B) & _MASK
    return x ^ (x >> 16)


def stream(seed: int, step: int, key: int, slot: int) -> int:
    """The 32-bit stream of one tensor slot at one step; ``key`` is the row's
    ``(group << 32) | index``, ``slot`` 0-2 a state slot, 3 the param."""
    x = _mix(seed ^ (slot * _GOLDEN))
    x = _mix(x ^ (step & _MASK) ^ _mix(step >> 32))
    return _mix(x ^ (key & _MASK) ^ _mix(key >> 32))


def noise(stream_: int, numel: int, bits: int, device: torch.device | str = "cpu") -> Tensor:
    """``bits`` random bits per element ``i`` (int64 tensor): the low bits of
    ``mix(stream ^ (i * golden))``; 16 for bfloat16, :data:`NOISE_8BIT` for 8-bit state."""
    index = torch.arange(numel, dtype=torch.int64, device=device)
    return _mix(stream_ ^ ((index * _GOLDEN) & _MASK)) & ((1 << bits) - 1)


def round_bf16_stochastic(x: Tensor, noise: Tensor) -> Tensor:
    """float32 ``x`` to bfloat16, rounded up with probability (x - down) / (up - down):
    16 random bits are added below bfloat16's last bit, and the low half cut.  NaN stays NaN."""
    x = x.detach().float()
    bits = x.contiguous().view(torch.int32).to(torch.int64) & _MASK
    bits = ((bits + noise.view(x.shape)) & 0xFFFF0000) & _MASK
    bits = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32)
    rounded = bits.view(torch.float32).to(torch.bfloat16)  # exact: the low half is zero
    return torch.where(torch.isnan(x), x.to(torch.bfloat16), rounded)
