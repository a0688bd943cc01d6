"""Each optimizer's math for the Triton driver: one ``@triton.jit`` update per optimizer,
and one function of the row's counters for the per-tensor scalars it needs.

Triton's counterpart of ``cpu/updates.h``, line for line.  An update takes the param
``p``, the (unscaled) gradient ``g`` and the state slots ``s0``-``s2`` as registers of the
math type (float32, or float64 for float64 params; ``V`` says which slots exist, bit i:
slot i), the row's scalars ``k`` (a tuple indexed by the ``K_*`` below, already rounded
to the math type) and returns the new ``(p, s0, s1, s2)``.  It never knows how a tensor is
stored: loads, stores and dtypes are the driver's.  ``FLAGS`` (the call's options, bit i:
``CALL_FLAGS[i]``), ``V`` and ``HALF`` are compile-time constants, so unused branches
vanish.  ``HALF`` is updates.h's macro: for float16 params whose state is float16 too, the
values torch's float16 path rounds to float16 are rounded there (``_h``).

The kernels use only ``triton.language``'s builtins, not its ``@triton.jit`` library
functions (``tl.zeros``, ``tl.max``, ...): Triton's interpreter cannot call those when
triton was imported before ``TRITON_INTERPRET=1`` was set (torch imports it early).

Rounding follows the C kernels (and so torch's CPU ops): each ``tl.fma`` is one written
in updates.h, and the driver compiles with ``enable_fp_fusion=False`` so that nothing else
is fused; divisions and float32 square roots are the IEEE ones (Triton's plain float32
``/`` and ``sqrt`` are approximate on NVIDIA GPUs).

A *schedule* function computes the scalars that depend on the row's counters, in float64
as the C driver does, vectorized over rows: ``(t, mu_product, h, FLAGS) -> (neg_step,
neg_step_next, sqrt_bc2, bc2)``, with ``h`` the hyperparameters (``H_*``) as float64.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .. import CALL_FLAGS, HYPER_FIELDS

__all__ = ["LARGER", "OPTIMIZERS", "SCALARS", "div", "nadam_mu"]


def _bit(name: str) -> tl.constexpr:
    return tl.constexpr(1 << CALL_FLAGS.index(name))


MAXIMIZE, WD, NESTEROV = _bit("maximize"), _bit("weight_decay"), _bit("nesterov")
LECTURE, DECOUPLED, EPS_INSIDE = _bit("lecture"), _bit("decoupled"), _bit("eps_inside")
BIAS_CORRECTION = _bit("bias_correction")

# the hyperparameters, as the schedules index them (HYPER_FIELDS' order)
H_LR, H_WD, H_MOMENTUM, H_DAMPENING, H_ALPHA, H_EPS, H_BETA1, H_BETA2, H_LR_DECAY, \
    H_MOMENTUM_DECAY = (tl.constexpr(i) for i in range(len(HYPER_FIELDS)))  # fmt: skip

# A row's scalars, as optim.c's K_* (the driver computes them; updates index them).
SCALARS = (
    "neg_lr", "wd", "momentum", "one_minus_dampening", "neg_step", "neg_step_next", "eps",
    "alpha", "one_minus_alpha", "decay", "one_minus_beta1", "beta2", "one_minus_beta2",
    "sqrt_bc2", "bc2",
)  # fmt: skip
K_NEG_LR, K_WD, K_MOMENTUM, K_ONE_MINUS_DAMPENING, K_NEG_STEP, K_NEG_STEP_NEXT, K_EPS, \
    K_ALPHA, K_ONE_MINUS_ALPHA, K_DECAY, K_ONE_MINUS_BETA1, K_BETA2, K_ONE_MINUS_BETA2, \
    K_SQRT_BC2, K_BC2 = (tl.constexpr(i) for i in range(len(SCALARS)))  # fmt: skip

# ---- helpers: torch's elementwise ops with torch's rounding ---------------------------


@triton.jit
def _larger(a, b):
    return tl.maximum(a, b)


# The combine function of a max-reduction: Triton's own where it has one (tl.max's), which
# the interpreter runs as one NumPy max rather than a Python loop over the elements.
LARGER = getattr(tl.standard, "_elementwise_max", _larger)


@triton.jit
def div(a, b):
    """IEEE division (Triton's float32 ``/`` is approximate on NVIDIA GPUs; float64's is not)."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.fdiv(a, b, ieee_rounding=True)


@triton.jit
def _sqrt(x):
    if x.dtype == tl.float64:
        return tl.sqrt(x)  # IEEE in float64
    else:
        return tl.sqrt_rn(x)


@triton.jit
def _lerp(start, end, w):
    """torch.lerp(start, end, w): the fma starts from the end point nearer to ``w``."""
    near = (w < 0.5) & (w > -0.5)
    return tl.fma(tl.where(near, w, w - 1), end - start, tl.where(near, start, end))


@triton.jit
def _maximum(a, b):
    """torch.maximum: NaN wins."""
    return tl.where(a != a, a, tl.where(b != b, b, tl.where(a > b, a, b)))


@triton.jit
def _h(x, HALF: tl.constexpr):
    """updates.h's HALF(x): x, or for float16 tensors x rounded to float16, where torch's
    float16 path materializes a float16 tensor (a state after its update, a weight-decayed
    gradient, a denominator), so that an underflowing second moment gives inf/NaN as there."""
    if HALF:
        return x.to(tl.float16).to(tl.float32)
    else:
        return x


@triton.jit
def _root(x, eps, FLAGS: tl.constexpr, HALF: tl.constexpr):
    """sqrt(x + eps) (the lecture's form) or sqrt(x) + eps (torch's)."""
    if EPS_INSIDE & FLAGS:
        return _h(_sqrt(_h(x + eps, HALF)), HALF)
    else:
        return _h(_h(_sqrt(_h(x, HALF)), HALF) + eps, HALF)


@triton.jit
def _gradient(g, p, k, FLAGS: tl.constexpr, HALF: tl.constexpr):
    """The gradient the update follows: negated to maximize, plus L2 weight decay."""
    if MAXIMIZE & FLAGS:
        g = -g
    if ((WD | DECOUPLED) & FLAGS) == WD:
        g = _h(tl.fma(k[K_WD], p, g), HALF)  # dw = dw + wd * w
    return g


@triton.jit
def _decay(p, k, FLAGS: tl.constexpr, HALF: tl.constexpr):
    """Decoupled weight decay (AdamW): w = w * (1 - lr * wd)."""
    if ((WD | DECOUPLED) & FLAGS) == (WD | DECOUPLED):
        p = _h(p * k[K_DECAY], HALF)
    return p


# ---- the updates ----------------------------------------------------------------------


@triton.jit
def sgd(p, g, s0, s1, s2, k, fresh, FLAGS: tl.constexpr, V: tl.constexpr, HALF: tl.constexpr):
    """Slot 0: momentum_buffer (torch form) or velocity (lecture form)."""
    g = _gradient(g, p, k, FLAGS, HALF)
    if V & 1:
        mu = k[K_MOMENTUM]
        if LECTURE & FLAGS:
            s0 = _h(tl.fma(k[K_NEG_LR], g, _h(s0 * mu, HALF)), HALF)  # v = beta * v - lr * dw
            if NESTEROV & FLAGS:  # w = w + beta * v - lr * dw
                p = tl.fma(k[K_NEG_LR], g, _h(tl.fma(mu, s0, p), HALF))
            else:
                p = p + s0  # w = w + v
        else:
            # b = mu * b + (1 - dampening) * g, and b = g at the buffer's first step
            b = _h(tl.fma(k[K_ONE_MINUS_DAMPENING], g, _h(s0 * mu, HALF)), HALF)
            s0 = tl.where(fresh, g, b)
            if NESTEROV & FLAGS:  # w = w - lr * (g + mu * b)
                p = tl.fma(k[K_NEG_LR], _h(tl.fma(mu, s0, g), HALF), p)
            else:
                p = tl.fma(k[K_NEG_LR], s0, p)  # w = w - lr * b
    else:
        p = tl.fma(k[K_NEG_LR], g, p)  # w = w - lr * dw
    return p, s0, s1, s2


@triton.jit
def adagrad(p, g, s0, s1, s2, k, fresh, FLAGS: tl.constexpr, V: tl.constexpr,
            HALF: tl.constexpr):  # fmt: skip
    """Slot 0: sum."""
    g = _gradient(g, p, k, FLAGS, HALF)
    s0 = _h(tl.fma(g, g, s0), HALF)  # dw_squared += dw * dw
    p = p + div(k[K_NEG_STEP] * g, _root(s0, k[K_EPS], FLAGS, HALF))
    return p, s0, s1, s2


@triton.jit
def rmsprop(p, g, s0, s1, s2, k, fresh, FLAGS: tl.constexpr, V: tl.constexpr,
            HALF: tl.constexpr):  # fmt: skip
    """Slots: 0 square_avg, 1 momentum_buffer, 2 grad_avg (centered)."""
    g = _gradient(g, p, k, FLAGS, HALF)
    # dr * sq + (1 - dr) * dw * dw
    s0 = _h(tl.fma(k[K_ONE_MINUS_ALPHA] * g, g, _h(s0 * k[K_ALPHA], HALF)), HALF)
    variance = s0
    if V & 4:
        s2 = _h(_lerp(s2, g, k[K_ONE_MINUS_ALPHA]), HALF)
        variance = _h(tl.fma(-s2, s2, s0), HALF)  # E[g^2] - E[g]^2
    std = _root(variance, k[K_EPS], FLAGS, HALF)
    if V & 2:
        s1 = _h(_h(s1 * k[K_MOMENTUM], HALF) + div(g, std), HALF)
        p = tl.fma(k[K_NEG_LR], s1, p)
    else:
        p = p + div(k[K_NEG_LR] * g, std)
    return p, s0, s1, s2


@triton.jit
def adam(p, g, s0, s1, s2, k, fresh, FLAGS: tl.constexpr, V: tl.constexpr, HALF: tl.constexpr):
    """Slots: 0 exp_avg, 1 exp_avg_sq, 2 max_exp_avg_sq (amsgrad)."""
    g = _gradient(g, p, k, FLAGS, HALF)
    p = _decay(p, k, FLAGS, HALF)
    s0 = _h(_lerp(s0, g, k[K_ONE_MINUS_BETA1]), HALF)  # beta1 * m + (1 - beta1) * dw
    # beta2 * v + (1 - beta2) * dw^2
    s1 = _h(tl.fma(k[K_ONE_MINUS_BETA2] * g, g, _h(s1 * k[K_BETA2], HALF)), HALF)
    v = s1
    if V & 4:
        s2 = _maximum(s2, s1)
        v = s2
    denom = _h(_h(div(_h(_sqrt(v), HALF), k[K_SQRT_BC2]), HALF) + k[K_EPS], HALF)
    p = p + div(k[K_NEG_STEP] * s0, denom)  # w = w - lr * m_hat / (sqrt(v_hat) + eps)
    return p, s0, s1, s2


@triton.jit
def nadam(p, g, s0, s1, s2, k, fresh, FLAGS: tl.constexpr, V: tl.constexpr, HALF: tl.constexpr):
    """Slots: 0 exp_avg, 1 exp_avg_sq."""
    g = _gradient(g, p, k, FLAGS, HALF)
    p = _decay(p, k, FLAGS, HALF)
    s0 = _h(_lerp(s0, g, k[K_ONE_MINUS_BETA1]), HALF)
    s1 = _h(tl.fma(k[K_ONE_MINUS_BETA2] * g, g, _h(s1 * k[K_BETA2], HALF)), HALF)
    denom = _h(_h(_sqrt(_h(div(s1, k[K_BC2]), HALF)), HALF) + k[K_EPS], HALF)
    p = _h(p + div(k[K_NEG_STEP] * g, denom), HALF)  # the gradient, weighted by mu_t
    p = p + div(k[K_NEG_STEP_NEXT] * s0, denom)  # the moment, weighted by mu_{t+1}
    return p, s0, s1, s2


# ---- per-row scalars from the counters (float64) --------------------------------------


@triton.jit
def _pow(x, y):
    """``x ** y`` for a scalar base in [0, 1] and a vector of exponents ``y >= 0`` (float64).

    Triton has no pow its interpreter can run.  Whole exponents below 2**32 (step counts)
    are raised by squaring: exact for y <= 2 and within a few ulps beyond, where the bias
    corrections 1 - x**t amplify an error most; any other ``y`` takes exp2(y * log2(x)).
    """
    whole = (y == tl.floor(y)) & (y < 4294967296.0)
    n = tl.where(whole, y, 0.0).to(tl.int64)
    result = tl.full(y.shape, 1.0, tl.float64)
    base = x
    while tl.reduce(n, 0, LARGER) > 0:
        result = tl.where((n & 1) != 0, result * base, result)
        base = base * base
        n = n >> 1
    return tl.where(whole, result, tl.exp2(y * tl.log2(x)))


@triton.jit
def nadam_mu(h, t):
    """NAdam's momentum schedule mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))."""
    return h[H_BETA1] * (1.0 - 0.5 * _pow(tl.full((), 0.96, tl.float64), t * h[H_MOMENTUM_DECAY]))


@triton.jit
def _constant(t, mp, h, FLAGS: tl.constexpr):
    one = tl.full(t.shape, 1.0, tl.float64)
    return one, one, one, one


@triton.jit
def adagrad_schedule(t, mp, h, FLAGS: tl.constexpr):
    """lr / (1 + (t - 1) * lr_decay)."""
    neg_step = -div(h[H_LR], 1 + (t - 1) * h[H_LR_DECAY])
    one = tl.full(t.shape, 1.0, tl.float64)
    return neg_step, one, one, one


@triton.jit
def adam_schedule(t, mp, h, FLAGS: tl.constexpr):
    """The bias corrections: lr / (1 - beta1^t) and sqrt(1 - beta2^t)."""
    if BIAS_CORRECTION & FLAGS:
        bc1 = 1 - _pow(h[H_BETA1], t)
        bc2 = 1 - _pow(h[H_BETA2], t)
    else:
        bc1 = tl.full(t.shape, 1.0, tl.float64)
        bc2 = bc1
    one = tl.full(t.shape, 1.0, tl.float64)
    return -div(h[H_LR], bc1), one, _sqrt(bc2), one


@triton.jit
def nadam_schedule(t, mp, h, FLAGS: tl.constexpr):
    """The weights of the gradient (mu_t) and of the moment (mu_{t+1}); 1 - beta2^t."""
    mu, mu_next = nadam_mu(h, t), nadam_mu(h, t + 1)
    neg_step = div(-h[H_LR] * (1.0 - mu), 1.0 - mp)
    neg_step_next = div(-h[H_LR] * mu_next, 1.0 - mp * mu_next)
    one = tl.full(t.shape, 1.0, tl.float64)
    return neg_step, neg_step_next, one, 1 - _pow(h[H_BETA2], t)


# name -> (update, schedule, counters it advances: 0 none, 1 step, 2 step and mu_product)
OPTIMIZERS = {
    "sgd": (sgd, _constant, 0),
    "adagrad": (adagrad, adagrad_schedule, 1),
    "rmsprop": (rmsprop, _constant, 1),
    "adam": (adam, adam_schedule, 1),
    "nadam": (nadam, nadam_schedule, 2),
}
