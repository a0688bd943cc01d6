"""How tensors are stored, for the Triton driver: every load and store of :mod:`.driver`.

The formats are specified in :mod:`optimlab.kernels.storage` (in torch ops, the oracle);
these are ``cpu/formats.h`` line for line, so that the Triton and C kernels store the same
bits: bfloat16 to nearest even, bfloat16 rounded stochastically from the same
counter-based hash, and 8-bit blocks encoded and decoded by the same bit operations.
Everything here is integer arithmetic on ``uint32`` (wrapping, as C's) or exact float
operations, so the interpreter's NumPy and a GPU give the same bits.

A load returns float32 registers; a store takes them.  An 8-bit slot is loaded and stored
as a tile of ``(blocks, 256)`` elements, one row per block of its absmax (the driver makes
every chunk start on a block boundary), so that a block's absmax is a reduction along a
row of the tile, in the same program that stores the block.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .. import storage
from ..plan import ROUNDINGS, STATE_FORMATS
from .updates import LARGER

__all__ = [
    "NATIVE", "FP32", "BF16", "Q8", "NEAREST", "STOCHASTIC", "KAHAN", "QBLOCK", "lanes",
    "load", "store", "stream", "load_param", "store_param", "load_state", "store_state",
]  # fmt: skip

# a row's state format and param rounding (plan.py's row flags, cpu/optim.h's enums)
NATIVE, FP32, BF16, Q8 = (tl.constexpr(STATE_FORMATS[f]) for f in (None, "fp32", "bf16", "8bit"))
NEAREST, STOCHASTIC, KAHAN = (tl.constexpr(ROUNDINGS[r]) for r in storage.PARAM_ROUNDINGS)
QBLOCK = tl.constexpr(storage.BLOCK)  # elements per absmax of an 8-bit slot
# Each code's constants (formats.h's), from its exponent bias (the largest exponent field is
# 2**0) and 3 mantissa bits: the float32 exponent field of its smallest normal (127 + 1 -
# bias), its smallest step (2**(1 - bias - 3)), and the fixed-point scale of a ratio in its
# subnormal range (2**NOISE8 / step, NOISE8: the random bits of a stochastically rounded code).
S_MIN_EXP, S_STEP = tl.constexpr(113), tl.constexpr(2.0**-17)
U_MIN_EXP, U_STEP = tl.constexpr(97), tl.constexpr(2.0**-33)
NOISE8 = tl.constexpr(storage.NOISE_8BIT)
NOISE8_MASK = tl.constexpr((1 << storage.NOISE_8BIT) - 1)
S_TO_FIXED = tl.constexpr(2.0**storage.NOISE_8BIT / S_STEP.value)
U_TO_FIXED = tl.constexpr(2.0**storage.NOISE_8BIT / U_STEP.value)
GOLDEN = tl.constexpr(0x9E3779B9)
MASK32 = tl.constexpr(0xFFFFFFFF)


# ---- float32 <-> the param's dtype ------------------------------------------------------


@triton.jit
def _from_bf16(bits):
    """bfloat16 bits (any unsigned integer type) as float32: exact."""
    return (bits.to(tl.uint32) << 16).to(tl.float32, bitcast=True)


@triton.jit
def load(ptr, mask, MATH: tl.constexpr):
    """The elements at ``ptr`` in the math type (bfloat16 widened by its bits: exact)."""
    if ptr.dtype.element_ty == tl.bfloat16:
        return _from_bf16(tl.load(ptr.to(tl.pointer_type(tl.uint16), bitcast=True), mask=mask))
    else:
        return tl.load(ptr, mask=mask).to(MATH)


@triton.jit
def _bf16_bits(value):
    """float32 to bfloat16 bits, to nearest even with NaN kept quiet, as c10::BFloat16 (and
    the GPU's cvt.rn) do; written out because Triton's interpreter truncates in its cast."""
    bits = value.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return tl.where(value != value, 0x7FC0, bits)


@triton.jit
def _store_bits(ptr, bits, mask):
    """Store 16-bit patterns at a bfloat16 ``ptr``."""
    tl.store(ptr.to(tl.pointer_type(tl.uint16), bitcast=True), bits.to(tl.uint16), mask=mask)


@triton.jit
def store(ptr, value, mask):
    """Store ``value`` rounded to nearest (even) in the element type at ``ptr``."""
    if ptr.dtype.element_ty == tl.bfloat16:
        _store_bits(ptr, _bf16_bits(value), mask)
    else:
        tl.store(ptr, value.to(ptr.dtype.element_ty), mask=mask)


# ---- stochastic rounding: storage.py's counter-based hash -------------------------------


@triton.jit
def _mix(x):
    """lowbias32 (C. Wellons) on uint32."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def stream(seed, step_lo, step_hi, key, SLOT: tl.constexpr):
    """``storage.stream(seed, step, key, SLOT)`` (uint32): ``seed``, ``step_lo`` and ``step_hi``
    are uint32 (the seed's low half, the step's halves), ``key`` the rows' int64 keys."""
    x = _mix(seed ^ ((SLOT * GOLDEN) & MASK32))
    x = _mix(x ^ step_lo ^ _mix(step_hi))
    return _mix(x ^ (key & MASK32).to(tl.uint32) ^ _mix((key >> 32).to(tl.uint32)))


@triton.jit
def _noise(seed, offsets, MASK: tl.constexpr):
    """The low random bits (``MASK``) of elements ``offsets`` of stream ``seed``
    (storage.noise)."""
    return _mix(seed ^ (offsets.to(tl.uint32) * GOLDEN)) & MASK


@triton.jit
def _store_stochastic(ptr, value, offsets, mask, seed):
    """Store float32 ``value`` at a bfloat16 ``ptr``, rounded up with probability equal to the
    cut-off fraction: 16 bits of element ``offsets``' hash added below the last kept bit."""
    noise = _noise(seed, offsets, 0xFFFF)
    bits = (value.to(tl.uint32, bitcast=True) + noise) >> 16
    _store_bits(ptr + offsets, tl.where(value != value, 0x7FC0, bits), mask)


# ---- 8-bit blocks: storage.SIGNED (sign, 4 exponent, 3 mantissa bits) and UNSIGNED (5, 3) ---


@triton.jit
def lanes(BLOCK: tl.constexpr, STATE: tl.constexpr):
    """The element offsets of one iteration of BLOCK elements: a vector, or for 8-bit state
    a tile whose rows are the state's blocks."""
    if STATE == Q8:
        return tl.arange(0, BLOCK // QBLOCK)[:, None] * QBLOCK + tl.arange(0, QBLOCK)[None, :]
    else:
        return tl.arange(0, BLOCK)


@triton.jit
def _decoded(k, MIN_EXP: tl.constexpr, STEP: tl.constexpr):
    """The magnitude of code ``k``: exponent e and mantissa m, e = 0 subnormal."""
    e, m = k >> 3, k & 7
    normal = (((e + (MIN_EXP - 1)) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    return tl.where(e != 0, normal, m.to(tl.float32) * STEP)


@triton.jit
def _decode(q, absmax, UNSIGNED: tl.constexpr):
    """``code_value[q] * absmax``."""
    q = q.to(tl.uint32)
    if UNSIGNED:
        magnitude = _decoded(q, U_MIN_EXP, U_STEP)
    else:
        magnitude = _decoded(q & 0x7F, S_MIN_EXP, S_STEP)
        magnitude = tl.where((q & 0x80) != 0, -magnitude, magnitude)
    return magnitude * absmax


@triton.jit
def _magnitude(r, noise, MIN_EXP: tl.constexpr, TO_FIXED: tl.constexpr):
    """The code of r = |x| / absmax in [0, 1], rounded stochastically (formats.h's
    q8_magnitude): ``noise`` (NOISE8 random bits) added below the code's last bit of r as a
    fixed-point number -- the float's bits after re-biasing the exponent in the normal range,
    r * TO_FIXED (under 2**23: exact in an int) in the subnormal range.  r is clamped to 1.0
    (the product with the absmax's inverse can exceed it by an ulp); NaN gives 0."""
    u = r.to(tl.uint32, bitcast=True)
    nan = u > 0x7F800000
    u = tl.minimum(u, 0x3F800000)
    small = u < (MIN_EXP << 23)
    tiny = (tl.where(small, u, 0).to(tl.float32, bitcast=True) * TO_FIXED).to(tl.int32)
    fixed = tl.where(small, tiny.to(tl.uint32), u - ((MIN_EXP - 1) << 23))
    return tl.where(nan, 0, (fixed + noise) >> NOISE8)


@triton.jit
def _encode(x, absmax, noise, UNSIGNED: tl.constexpr):
    """The byte of ``x`` in its block of ``absmax``, rounded stochastically by ``noise``."""
    bits = x.to(tl.uint32, bitcast=True)
    inverse = tl.fdiv(tl.full(absmax.shape, 1.0, tl.float32), absmax, ieee_rounding=True)
    r = (bits & 0x7FFFFFFF).to(tl.float32, bitcast=True) * inverse  # (storage.quantize's)
    if UNSIGNED:
        code = _magnitude(r, noise, U_MIN_EXP, U_TO_FIXED)
    else:
        code = _magnitude(r, noise, S_MIN_EXP, S_TO_FIXED) | tl.where(x < 0, 0x80, 0)
    return code.to(tl.uint8)


@triton.jit
def _absmax(x, mask):
    """The largest |x| of each row of the tile ``x`` (masked lanes count as 0), as a column:
    the largest bit pattern of |x| (the same order for non-negative floats; NaN is above
    every number, so a NaN makes its block NaN)."""
    bits = x.to(tl.uint32, bitcast=True) & 0x7FFFFFFF
    if mask is not None:
        bits = tl.where(mask, bits, 0)
    return tl.reduce(bits, 1, LARGER).to(tl.float32, bitcast=True)[:, None]


# ---- a row's state slots and its param, in their formats --------------------------------


@triton.jit
def load_state(ptr, scales, offsets, mask, MATH: tl.constexpr, STATE: tl.constexpr,
               UNSIGNED: tl.constexpr):  # fmt: skip
    """A state slot's elements at ``offsets`` in the math type."""
    if STATE == Q8:
        absmax = tl.load(scales + offsets // QBLOCK, mask=mask)
        return _decode(tl.load(ptr + offsets, mask=mask), absmax, UNSIGNED)
    else:
        return load(ptr + offsets, mask, MATH)


@triton.jit
def store_state(ptr, scales, value, offsets, mask, seed, STATE: tl.constexpr,
                UNSIGNED: tl.constexpr):  # fmt: skip
    """Store a state slot's elements: in the param's dtype or float32 to nearest, bfloat16
    stochastically (``seed``: the slot's stream), 8-bit with its blocks' absmax, rounded
    stochastically too."""
    if STATE == Q8:
        absmax = _absmax(value, mask)
        first = (offsets % QBLOCK) == 0  # one lane per block writes its absmax
        lead = first if mask is None else first & mask
        tl.store(scales + offsets // QBLOCK, absmax, mask=lead)  # (broadcast along rows)
        noise = _noise(seed, offsets, NOISE8_MASK)
        tl.store(ptr + offsets, _encode(value, absmax, noise, UNSIGNED), mask=mask)
    elif STATE == BF16:
        _store_stochastic(ptr, value, offsets, mask, seed)
    else:
        store(ptr + offsets, value, mask)


@triton.jit
def load_param(param, comp, offsets, mask, MATH: tl.constexpr, ROUNDING: tl.constexpr):
    """The param's elements; a Kahan-compensated param's with its compensation added."""
    p = load(param + offsets, mask, MATH)
    if ROUNDING == KAHAN:
        p = p + load(comp + offsets, mask, MATH)
    return p


@triton.jit
def store_param(param, comp, value, offsets, mask, seed, ROUNDING: tl.constexpr):
    """Store the param: to nearest; stochastically (``seed``: its stream); or Kahan: the
    weight to nearest, and what it could not hold (to nearest) into the compensation."""
    if ROUNDING == STOCHASTIC:
        _store_stochastic(param, value, offsets, mask, seed)
    elif ROUNDING == KAHAN:
        rounded = _bf16_bits(value)
        _store_bits(param + offsets, rounded, mask)
        _store_bits(comp + offsets, _bf16_bits(value - _from_bf16(rounded)), mask)
    else:
        store(param + offsets, value, mask)
