"""The generic multi-tensor driver: two ``@triton.jit`` kernels that run any optimizer of
:mod:`.updates` over a plan's table in device memory.

``prepare`` (one small launch per step, a program per ``ROWS`` rows) does what is done
once per tensor: it advances each active row's counters (``step += 1`` in the counter's
own dtype, NAdam's ``mu_product *= mu_t``), unless ``found_inf`` is set, and writes the
row's scalars (``updates.SCALARS``: bias corrections, NAdam's weights, Adagrad's decayed
lr) in float64, computed from the advanced counters as ``optim.c`` computes them, and, when
the call rounds stochastically, the row's four rounding streams (``storage.stream``).

``step`` (one launch per dtype and storage: the rows' state format and param rounding,
compile-time constants) runs one program per *chunk*, a ``(row, start)`` pair of the chunk
table (as torch's ``multi_tensor_apply``): it loads CHUNK elements of the row's param, grad
and state slots into float32 (float64 for float64 rows) as :mod:`.formats` reads their
formats, unscales the grad (``grad_scale``, written back as torch's fused kernels do), calls
the optimizer's update, and stores back in the formats.  Chunks start on multiples of CHUNK,
and every BLOCK-element iteration holds whole blocks of 8-bit state: a block's absmax is
computed where it is stored.  A row without a grad, or any row when ``found_inf`` is
nonzero, masks every load and store off: an overflow skips the step on the device, with no
host sync.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .. import ROW_FIELDS, storage
from ..plan import ACTIVE, MU_F64, ROW, STEP_F64
from . import formats
from .updates import (
    H_ALPHA,
    H_BETA1,
    H_BETA2,
    H_DAMPENING,
    H_EPS,
    H_MOMENTUM,
    SCALARS,
    div,
    nadam_mu,
)

__all__ = ["BLOCK", "CHUNK", "ROWS", "prepare", "step"]

NFIELDS = tl.constexpr(len(ROW_FIELDS))
NK = tl.constexpr(len(SCALARS))
COL_PARAM, COL_GRAD, COL_NUMEL = (tl.constexpr(ROW[c]) for c in ("param", "grad", "numel"))
COL_SLOT0, COL_SLOT1, COL_SLOT2 = (tl.constexpr(ROW[f"slot{i}"]) for i in range(3))
COL_SCALE0, COL_SCALE1, COL_SCALE2 = (tl.constexpr(ROW[f"scale{i}"]) for i in range(3))
COL_STEP, COL_MU, COL_FLAGS = (tl.constexpr(ROW[c]) for c in ("step", "mu_product", "flags"))
COL_COMP, COL_KEY = tl.constexpr(ROW["comp"]), tl.constexpr(ROW["key"])
ROW_ACTIVE, ROW_STEP_F64, ROW_MU_F64 = (tl.constexpr(f) for f in (ACTIVE, STEP_F64, MU_F64))

ROWS = 128  # rows per program of `prepare`
BLOCK = 1024  # elements per iteration of a `step` program
CHUNK = 4 * BLOCK  # elements per `step` program: one chunk of the chunk table
# a row's rounding streams: state slots 0-2, then the param (storage.PARAM_SLOT)
NSTREAMS = tl.constexpr(storage.PARAM_SLOT + 1)
# an iteration holds whole 8-bit blocks, and a tile of them needs a power of two
assert BLOCK % storage.BLOCK == 0 and (BLOCK & (BLOCK - 1)) == 0 and CHUNK % BLOCK == 0


@triton.jit
def _f64(x):
    """A float64 scalar argument as a float64 value (the interpreter keeps it a Python
    float, which arithmetic with an integer would round to float32)."""
    return tl.full((), x, tl.float64)


@triton.jit
def _pointer(at, column, DTYPE: tl.constexpr):
    """The data pointer in ``column`` of the row(s) at ``at``, as a pointer to DTYPE."""
    return tl.load(at + column).to(tl.pointer_type(DTYPE), bitcast=True)


@triton.jit
def _advance(address, is_f64, live, mu, MULTIPLY: tl.constexpr):
    """Advance a float32 or float64 counter of each live row: ``+= 1`` or ``*= mu``, in the
    counter's own dtype (as the reference's tensor ops do); return its new value."""
    at32 = address.to(tl.pointer_type(tl.float32), bitcast=True)
    at64 = address.to(tl.pointer_type(tl.float64), bitcast=True)
    v32 = tl.load(at32, mask=live & ~is_f64, other=0.0)
    v64 = tl.load(at64, mask=live & is_f64, other=0.0)
    if MULTIPLY:
        v32 = v32 * mu.to(tl.float32)
        v64 = v64 * mu
    else:
        v32 = v32 + 1
        v64 = v64 + 1
    tl.store(at32, v32, mask=live & ~is_f64)
    tl.store(at64, v64, mask=live & is_f64)
    return tl.where(is_f64, v64, v32.to(tl.float64))


# the rounding seed and step vary: not compile-time facts (Triton specializes an int == 1)
@triton.jit(do_not_specialize=["seed", "step_lo", "step_hi"])
def prepare(
    table, nrows, scalars, streams, fresh, fresh_now, found_inf, lr_ptr, wd_ptr,
    lr: tl.float64, weight_decay: tl.float64, momentum: tl.float64, dampening: tl.float64,
    alpha: tl.float64, eps: tl.float64, beta1: tl.float64, beta2: tl.float64,
    lr_decay: tl.float64, momentum_decay: tl.float64, seed, step_lo, step_hi,
    SCHEDULE: tl.constexpr, COUNTERS: tl.constexpr, FLAGS: tl.constexpr,
    STREAMS: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    inside = r < nrows
    at = table + r * NFIELDS
    flags = tl.load(at + COL_FLAGS, mask=inside, other=0)
    live = (flags & ROW_ACTIVE) != 0
    if found_inf is not None:  # read by each row: a scalar bool would not broadcast in
        live = live & (tl.load(found_inf + 0 * r) == 0)  # Triton's interpreter (3.9)
    # a lazy slot (SGD's buffer) takes the gradient at the first step that really happens
    was_fresh = tl.load(fresh + r, mask=inside, other=0)
    tl.store(fresh_now + r, tl.where(live, was_fresh, 0), mask=inside)
    tl.store(fresh + r, tl.where(live, 0, was_fresh), mask=inside)

    lr = _f64(lr)
    if lr_ptr is not None:  # a tensor lr, read on the device (capturable)
        lr = tl.load(lr_ptr).to(tl.float64)
    weight_decay = _f64(weight_decay)
    if wd_ptr is not None:
        weight_decay = tl.load(wd_ptr).to(tl.float64)
    h = (lr, weight_decay, _f64(momentum), _f64(dampening), _f64(alpha), _f64(eps),
         _f64(beta1), _f64(beta2), _f64(lr_decay), _f64(momentum_decay))  # fmt: skip

    t = tl.full((ROWS,), 0.0, tl.float64)
    mp = t
    if COUNTERS >= 1:
        step_f64 = (flags & ROW_STEP_F64) != 0
        t = _advance(tl.load(at + COL_STEP, mask=live, other=0), step_f64, live, t, False)
    if COUNTERS >= 2:
        mu_f64 = (flags & ROW_MU_F64) != 0
        mu = nadam_mu(h, t)
        mp = _advance(tl.load(at + COL_MU, mask=live, other=0), mu_f64, live, mu, True)
    neg_step, neg_step_next, sqrt_bc2, bc2 = SCHEDULE(t, mp, h, FLAGS)

    values = (  # in the order of updates.SCALARS
        -lr, weight_decay, h[H_MOMENTUM], 1 - h[H_DAMPENING], neg_step, neg_step_next,
        h[H_EPS], h[H_ALPHA], 1 - h[H_ALPHA], 1 - lr * weight_decay, 1 - h[H_BETA1],
        h[H_BETA2], 1 - h[H_BETA2], sqrt_bc2, bc2,
    )  # fmt: skip
    for i in tl.static_range(NK):
        tl.store(scalars + r * NK + i, values[i], mask=inside)

    if STREAMS:  # the int32 bit patterns of uint32 values (int32: one signature for all)
        seed = seed.to(tl.uint32, bitcast=True)
        step_lo, step_hi = step_lo.to(tl.uint32, bitcast=True), step_hi.to(tl.uint32, bitcast=True)
        key = tl.load(at + COL_KEY, mask=inside, other=0)
        for j in tl.static_range(NSTREAMS):
            value = formats.stream(seed, step_lo, step_hi, key, j)
            tl.store(streams + r * NSTREAMS + j, value.to(tl.int32, bitcast=True), mask=inside)


@triton.jit
def _row_scalars(at, MATH: tl.constexpr):
    """A row's scalars (``updates.SCALARS``), rounded to the math type as optim.c does."""
    return (
        tl.load(at + 0).to(MATH), tl.load(at + 1).to(MATH), tl.load(at + 2).to(MATH),
        tl.load(at + 3).to(MATH), tl.load(at + 4).to(MATH), tl.load(at + 5).to(MATH),
        tl.load(at + 6).to(MATH), tl.load(at + 7).to(MATH), tl.load(at + 8).to(MATH),
        tl.load(at + 9).to(MATH), tl.load(at + 10).to(MATH), tl.load(at + 11).to(MATH),
        tl.load(at + 12).to(MATH), tl.load(at + 13).to(MATH), tl.load(at + 14).to(MATH),
    )  # fmt: skip


@triton.jit
def _block(arrays, extra, seeds, offsets, mask, k, fresh, scale, UPDATE: tl.constexpr,
           FLAGS: tl.constexpr, V: tl.constexpr, MATH: tl.constexpr, HALF: tl.constexpr,
           STATE: tl.constexpr, UNSIGNED: tl.constexpr, ROUNDING: tl.constexpr):  # fmt: skip
    """One iteration over a row's elements at ``offsets``: load, unscale the grad, update,
    store."""
    param, grad, slot0, slot1, slot2 = arrays
    scale0, scale1, scale2, comp = extra
    p = formats.load_param(param, comp, offsets, mask, MATH, ROUNDING)
    g = formats.load(grad + offsets, mask, MATH)
    if scale is not None:  # GradScaler: unscale, and keep the unscaled grad
        g = div(g, scale)
        formats.store(grad + offsets, g, mask)
    s0, s1, s2 = p, p, p  # placeholders for the slots the update does not have
    if V & 1:
        s0 = formats.load_state(slot0, scale0, offsets, mask, MATH, STATE, UNSIGNED & 1)
    if V & 2:
        s1 = formats.load_state(slot1, scale1, offsets, mask, MATH, STATE, UNSIGNED & 2)
    if V & 4:
        s2 = formats.load_state(slot2, scale2, offsets, mask, MATH, STATE, UNSIGNED & 4)
    p, s0, s1, s2 = UPDATE(p, g, s0, s1, s2, k, fresh, FLAGS, V, HALF)
    if V & 1:
        formats.store_state(slot0, scale0, s0, offsets, mask, seeds[0], STATE, UNSIGNED & 1)
    if V & 2:
        formats.store_state(slot1, scale1, s1, offsets, mask, seeds[1], STATE, UNSIGNED & 2)
    if V & 4:
        formats.store_state(slot2, scale2, s2, offsets, mask, seeds[2], STATE, UNSIGNED & 4)
    formats.store_param(param, comp, p, offsets, mask, seeds[3], ROUNDING)


@triton.jit
def _seeds(streams, row, STATE: tl.constexpr, ROUNDING: tl.constexpr):
    """The row's rounding streams (uint32: the seeds of its elements' noise) where it rounds
    stochastically, else 0: state slots 0-2, then the param."""
    at = streams + row * NSTREAMS
    zero = tl.full((), 0, tl.uint32)
    s0, s1, s2, s3 = zero, zero, zero, zero
    if STATE == formats.BF16 or STATE == formats.Q8:
        s0 = tl.load(at + 0).to(tl.uint32, bitcast=True)
        s1 = tl.load(at + 1).to(tl.uint32, bitcast=True)
        s2 = tl.load(at + 2).to(tl.uint32, bitcast=True)
    if ROUNDING == formats.STOCHASTIC:
        s3 = tl.load(at + 3).to(tl.uint32, bitcast=True)
    return s0, s1, s2, s3


@triton.jit
def step(
    table, chunks, scalars, streams, fresh_now, found_inf, grad_scale,
    UPDATE: tl.constexpr, FLAGS: tl.constexpr, V: tl.constexpr, DTYPE: tl.constexpr,
    MATH: tl.constexpr, HALF: tl.constexpr, STATE: tl.constexpr, STATE_DTYPE: tl.constexpr,
    UNSIGNED: tl.constexpr, ROUNDING: tl.constexpr, ALIGNED: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    tl.static_assert(NK == 15)
    chunk = tl.program_id(0)
    row = tl.load(chunks + 2 * chunk)
    start = tl.load(chunks + 2 * chunk + 1)
    at = table + row * NFIELDS
    live = (tl.load(at + COL_FLAGS) & ROW_ACTIVE) != 0
    if found_inf is not None:
        live = live & (tl.load(found_inf) == 0)
    end = tl.where(live, tl.minimum(tl.load(at + COL_NUMEL), start + CHUNK), start)
    param = _pointer(at, COL_PARAM, DTYPE)
    grad = _pointer(at, COL_GRAD, DTYPE)
    slot0 = _pointer(at, COL_SLOT0, STATE_DTYPE)
    slot1 = _pointer(at, COL_SLOT1, STATE_DTYPE)
    slot2 = _pointer(at, COL_SLOT2, STATE_DTYPE)
    comp = _pointer(at, COL_COMP, DTYPE)
    start = tl.multiple_of(start, CHUNK)
    if ALIGNED:  # every array starts on 16 bytes: whole blocks load and store as vectors
        param, grad = tl.multiple_of(param, 16), tl.multiple_of(grad, 16)
        slot0, slot1 = tl.multiple_of(slot0, 16), tl.multiple_of(slot1, 16)
        slot2, comp = tl.multiple_of(slot2, 16), tl.multiple_of(comp, 16)
    arrays = (param, grad, slot0, slot1, slot2)
    # the 8-bit slots' absmax, the Kahan compensation
    extra = (_pointer(at, COL_SCALE0, tl.float32), _pointer(at, COL_SCALE1, tl.float32),
             _pointer(at, COL_SCALE2, tl.float32), comp)  # fmt: skip
    seeds = _seeds(streams, row, STATE, ROUNDING)
    k = _row_scalars(scalars + row * NK, MATH)
    fresh = tl.load(fresh_now + row) != 0
    scale = None
    if grad_scale is not None:
        scale = tl.load(grad_scale).to(MATH)
    lanes = formats.lanes(BLOCK, STATE)
    whole = start + (end - start) // BLOCK * BLOCK
    for first in tl.range(start, whole, BLOCK):  # whole blocks, unmasked
        _block(arrays, extra, seeds, first + lanes, None, k, fresh, scale, UPDATE, FLAGS, V,
               MATH, HALF, STATE, UNSIGNED, ROUNDING)  # fmt: skip
    for first in tl.range(whole, end, BLOCK):  # the row's last, partial block
        offsets = first + lanes
        _block(arrays, extra, seeds, offsets, offsets < end, k, fresh, scale, UPDATE, FLAGS,
               V, MATH, HALF, STATE, UNSIGNED, ROUNDING)  # fmt: skip
