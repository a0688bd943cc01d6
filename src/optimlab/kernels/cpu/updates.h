/* The per-element update of each optimizer, one `static inline` function each.
 *
 * This file is a template: optim.c includes it once per math type, with `real`
 * defined as float (for float32, bfloat16 and float16 tensors) and as double
 * (float64), and F(name) appending the type's suffix.  Every function updates one
 * element: *P is the parameter, G the (unscaled) gradient, S[slot] the state
 * tensors' elements; V says which slots exist (bit i: slot i), so a compile-time
 * V folds the unused branches away.  k[] holds the scalars of optim.c's K_*
 * enum, already rounded to `real`, as torch rounds a Python scalar to the
 * tensor's dtype.
 *
 * Each line mirrors one torch op of the reference (`_update` in
 * optimlab/optimizers/, one module each) in the order and rounding that torch's CPU kernels
 * use: `add(x, alpha=a)` is fma(a, x, self), `addcmul(x, y, value=c)` is
 * fma(c * x, y, self), `addcdiv(x, y, value=c)` is self + (c * x) / y, `lerp`
 * is fma with the weight on the near side (measured on torch 2.13: bitwise).
 * With -ffp-contract=off nothing else is fused, so float32/float64 results are
 * bitwise equal to the reference on every instruction set.
 *
 * HALF(x) marks the values torch's float16 path materializes as float16 tensors (a state
 * after its update, a weight-decayed gradient, a denominator).  It is x itself, except for
 * float16 tensors, where it rounds x to float16 as torch does.  Without it a second moment
 * that underflows float16 storage would still be used unrounded in float32 here, and with
 * eps (which survives in float32, not in float16) give a silently huge step where torch's
 * default path gives inf/NaN.  bfloat16 has float32's range: its math stays float32.
 */

/* `cond ? a : b` for a loop-invariant cond (an option flag), as integer masking: GCC 12
 * does not vectorize a select on an invariant scalar condition under AVX-512 (it needs a
 * mask register), but it vectorizes and/or on a broadcast integer mask.  Exact. */
static INLINE real F(pick)(int64_t cond, real a, real b)
{
    union { real r; BITS u; } x = {a}, y = {b}, z;
    BITS mask = (BITS)0 - (BITS)(cond != 0);
    z.u = (x.u & mask) | (y.u & ~mask);
    return z.r;
}

static INLINE real F(neg_if)(int64_t flags, real g) { return F(pick)(flags & F_MAXIMIZE, -g, g); }

/* torch.lerp(self, end, w): the fma starts from the end point nearer to w. */
static INLINE real F(lerp)(real self, real end, real w)
{
    int64_t near_self = w < (real)0.5 && w > (real)-0.5;
    real coeff = near_self ? w : w - (real)1; /* scalars: hoisted out of the loop */
    return fma(coeff, end - self, F(pick)(near_self, self, end));
}

/* torch.maximum: NaN wins. */
static INLINE real F(maximum)(real a, real b)
{
    return (a != a) ? a : ((b != b) ? b : (a > b ? a : b));
}

/* sqrt(x + eps) (the lecture's form) or sqrt(x) + eps (torch's); adding 0 is exact. */
static INLINE real F(root)(int64_t flags, real x, real eps)
{
    int64_t inside = flags & F_EPS_INSIDE;
    return HALF(HALF(sqrt(HALF(x + (inside ? eps : (real)0)))) + (inside ? (real)0 : eps));
}

/* Slot 0: momentum_buffer (torch form) or velocity (lecture form).  Written as selects on
 * the (loop-invariant) flags, with one store per output, so GCC if-converts and vectorizes. */
static INLINE void F(sgd)(const real *k, int64_t flags, int V, real *P, real G, real *S)
{
    real p = *P, g = F(neg_if)(flags, G);
    g = F(pick)(flags & F_WD, HALF(fma(k[K_WD], p, g)), g);
    if (!(V & 1)) {
        *P = fma(k[K_NEG_LR], g, p); /* w = w - lr * dw */
        return;
    }
    real mu = k[K_MOMENTUM];
    int64_t lecture = flags & F_LECTURE, nesterov = flags & F_NESTEROV;
    /* lecture: v = beta * v - lr * dw;  torch: b = mu * b + (1 - dampening) * g (b = g first) */
    real v = HALF(fma(k[K_NEG_LR], g, HALF(S[0] * mu)));
    real b = F(pick)(flags & F_FRESH, g, HALF(fma(k[K_ONE_MINUS_DAMPENING], g, HALF(S[0] * mu))));
    S[0] = F(pick)(lecture, v, b);
    /* lecture: w = w + v, or with Nesterov w = w + beta * v - lr * dw;
     * torch: w = w - lr * b, or with Nesterov w = w - lr * (g + mu * b) */
    real lecture_p = F(pick)(nesterov, fma(k[K_NEG_LR], g, HALF(fma(mu, v, p))), p + v);
    real torch_p = fma(k[K_NEG_LR], F(pick)(nesterov, HALF(fma(mu, b, g)), b), p);
    *P = F(pick)(lecture, lecture_p, torch_p);
}

/* Slot 0: sum. */
static INLINE void F(adagrad)(const real *k, int64_t flags, int V, real *P, real G, real *S)
{
    (void)V;
    real p = *P, g = F(neg_if)(flags, G);
    g = F(pick)(flags & F_WD, HALF(fma(k[K_WD], p, g)), g);
    real sum = HALF(fma(g, g, S[0])); /* dw_squared += dw * dw */
    S[0] = sum;
    *P = p + (k[K_NEG_STEP] * g) / F(root)(flags, sum, k[K_EPS]);
}

/* Slots: 0 square_avg, 1 momentum_buffer, 2 grad_avg (centered). */
static INLINE void F(rmsprop)(const real *k, int64_t flags, int V, real *P, real G, real *S)
{
    real p = *P, g = F(neg_if)(flags, G);
    g = F(pick)(flags & F_WD, HALF(fma(k[K_WD], p, g)), g);
    real sq = HALF(fma(k[K_ONE_MINUS_ALPHA] * g, g, HALF(S[0] * k[K_ALPHA]))); /* dr*sq + (1-dr)*dw*dw */
    S[0] = sq;
    real variance = sq;
    if (V & 4) {
        real avg = HALF(F(lerp)(S[2], g, k[K_ONE_MINUS_ALPHA]));
        S[2] = avg;
        variance = HALF(fma(-avg, avg, sq)); /* E[g^2] - E[g]^2 */
    }
    real std = F(root)(flags, variance, k[K_EPS]);
    if (V & 2) {
        real b = HALF(HALF(S[1] * k[K_MOMENTUM]) + g / std);
        S[1] = b;
        *P = fma(k[K_NEG_LR], b, p);
    } else {
        *P = p + (k[K_NEG_LR] * g) / std;
    }
}

/* Adam's and NAdam's weight decay: decoupled (AdamW) shrinks w, else L2 adds to g. */
static INLINE real F(decoupled)(const real *k, int64_t flags, real p)
{
    return F(pick)((flags & F_WD) && (flags & F_DECOUPLED), HALF(p * k[K_DECAY]), p); /* w(1-lr*wd) */
}

/* g + wd * w */
static INLINE real F(l2)(const real *k, int64_t flags, real p, real g)
{
    return F(pick)((flags & F_WD) && !(flags & F_DECOUPLED), HALF(fma(k[K_WD], p, g)), g);
}

/* Slots: 0 exp_avg, 1 exp_avg_sq, 2 max_exp_avg_sq (amsgrad). */
static INLINE void F(adam)(const real *k, int64_t flags, int V, real *P, real G, real *S)
{
    real g = F(l2)(k, flags, *P, F(neg_if)(flags, G)), p = F(decoupled)(k, flags, *P);
    real m = HALF(F(lerp)(S[0], g, k[K_ONE_MINUS_BETA1]));
    real v = HALF(fma(k[K_ONE_MINUS_BETA2] * g, g, HALF(S[1] * k[K_BETA2])));
    S[0] = m;
    S[1] = v;
    if (V & 4) {
        v = F(maximum)(S[2], v);
        S[2] = v;
    }
    real denom = HALF(HALF(HALF(sqrt(v)) / k[K_SQRT_BC2]) + k[K_EPS]);
    *P = p + (k[K_NEG_STEP] * m) / denom; /* w = w - lr * m_hat / (sqrt(v_hat) + eps) */
}

/* Slots: 0 exp_avg, 1 exp_avg_sq. */
static INLINE void F(nadam)(const real *k, int64_t flags, int V, real *P, real G, real *S)
{
    (void)V;
    real g = F(l2)(k, flags, *P, F(neg_if)(flags, G)), p = F(decoupled)(k, flags, *P);
    real m = HALF(F(lerp)(S[0], g, k[K_ONE_MINUS_BETA1]));
    real v = HALF(fma(k[K_ONE_MINUS_BETA2] * g, g, HALF(S[1] * k[K_BETA2])));
    S[0] = m;
    S[1] = v;
    real denom = HALF(HALF(sqrt(HALF(v / k[K_BC2]))) + k[K_EPS]);
    p = HALF(p + (k[K_NEG_STEP] * g) / denom); /* the gradient, weighted by mu_t */
    *P = p + (k[K_NEG_STEP_NEXT] * m) / denom; /* the moment, weighted by mu_{t+1} */
}
