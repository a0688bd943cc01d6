/* How tensors are stored, in this one place: IEEE half and bfloat16 conversions, and the
 * low-precision formats of kernels/storage.py (the specification; its torch code is the
 * oracle these are tested against): 8-bit block codes and stochastic rounding.  Included by
 * optim.c, which defines INLINE. */
#ifndef OPTIMLAB_FORMATS_H
#define OPTIMLAB_FORMATS_H

#include <stdint.h>
#include <string.h>

static INLINE float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static INLINE uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* IEEE half <-> float in integer arithmetic (F. Giesen's branch-free conversions, exact,
 * round to nearest even; NaN -> 0x7e00 as c10::Half): GCC 12 calls libgcc for each
 * _Float16 conversion without AVX512-FP16, which keeps the loops scalar; these vectorize. */
static INLINE float f16_load(uint16_t h)
{
    uint32_t o = (uint32_t)(h & 0x7fffu) << 13, exp = o & (0x7c00u << 13);
    o += (127 - 15) << 23;
    uint32_t special = o + ((128 - 16) << 23);                                /* inf, NaN */
    float tiny = f32_from_bits(o + (1u << 23)) - f32_from_bits(113u << 23); /* subnormal */
    o = exp == (0x7c00u << 13) ? special : (exp == 0 ? f32_bits(tiny) : o);
    return f32_from_bits(o | ((uint32_t)(h & 0x8000u) << 16));
}

static INLINE uint16_t f16_store(float x)
{
    uint32_t f = f32_bits(x), sign = f & 0x80000000u;
    f ^= sign;
    const float magic = f32_from_bits(((127 - 15) + (23 - 10) + 1) << 23);
    uint32_t big = f > (255u << 23) ? 0x7e00u : 0x7c00u; /* NaN, or overflow to inf */
    uint32_t tiny = f32_bits(f32_from_bits(f) + magic) - f32_bits(magic);
    uint32_t normal = (f + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((f >> 13) & 1u)) >> 13;
    uint32_t o = f >= ((127u + 16) << 23) ? big : (f < (113u << 23) ? tiny : normal);
    return (uint16_t)(o | (sign >> 16));
}

static INLINE float bf16_load(uint16_t x) { return f32_from_bits((uint32_t)x << 16); }

/* Round to nearest even, NaN kept quiet: c10::BFloat16's rounding. */
static INLINE uint16_t bf16_store(float f)
{
    uint32_t u = f32_bits(f), rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (f != f) ? (uint16_t)0x7fc0 : (uint16_t)rounded;
}

/* ---- stochastic rounding: storage.py's counter-based hash ---------------------------- */

#define GOLDEN 0x9E3779B9u

/* lowbias32 (C. Wellons). */
static INLINE uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    return x ^ (x >> 16);
}

/* storage.stream(seed, step, key, slot). */
static inline uint32_t sr_stream(uint64_t seed, uint64_t step, uint64_t key, uint32_t slot)
{
    uint32_t x = mix32((uint32_t)seed ^ (slot * GOLDEN));
    x = mix32(x ^ (uint32_t)step ^ mix32((uint32_t)(step >> 32)));
    return mix32(x ^ (uint32_t)key ^ mix32((uint32_t)(key >> 32)));
}

/* The low `bits` random bits of one element of a stream (storage.noise): `key` is the
 * element's index times GOLDEN (loops step it by GOLDEN rather than multiply). */
static INLINE uint32_t sr_noise(uint32_t stream, uint32_t key, int bits)
{
    return mix32(stream ^ key) & ((1u << bits) - 1u);
}

/* float -> bfloat16, rounded up with probability equal to the cut-off fraction: 16 random
 * bits (sr_noise) added below the last kept bit.  NaN stays a quiet NaN. */
static INLINE uint16_t bf16_store_stochastic(float f, uint32_t stream, uint32_t key)
{
    uint32_t noise = sr_noise(stream, key, 16);
    uint16_t rounded = (uint16_t)((f32_bits(f) + noise) >> 16);
    return (f != f) ? (uint16_t)0x7fc0 : rounded;
}

/* ---- 8-bit block codes: storage.SIGNED (sign, 4 exponent, 3 mantissa bits) and
 * storage.UNSIGNED (5 exponent, 3 mantissa bits), 1.0 at the top ----------------------- */

/* The byte of r = |x| / absmax in [0, 1], rounded stochastically (storage.quantize with
 * noise): `noise` (NOISE8 random bits) is added below the code's last bit of r as a fixed-
 * point number -- in the normal range that is the float's bits after re-biasing the exponent
 * (min_exp: the float exponent field of the code's smallest normal, 113 signed, 97
 * unsigned; within an octave the codes are evenly spaced in those bits), in the subnormal
 * range r times 2**NOISE8 / the code's smallest step (to_fixed: 2**37 signed, 2**53
 * unsigned; below 2**23, so exact in an int).  The carry out of the low bits rounds up, with
 * probability equal to r's distance from the code below, in code steps.  r is at most 1.0
 * (the product with the absmax's inverse can exceed it by an ulp); NaN (an all-zero or NaN
 * block) gives 0. */
#define NOISE8 20 /* storage.NOISE_8BIT */

static INLINE uint32_t q8_magnitude(float r, uint32_t min_exp, float to_fixed, uint32_t noise)
{
    uint32_t u = f32_bits(r), nan = u > 0x7f800000u; /* NaN (r is |x| * inverse >= 0 else) */
    u = u < 0x3f800000u ? u : 0x3f800000u;                                 /* at most 1.0 */
    int small = u < (min_exp << 23);
    float tiny = f32_from_bits(small ? u : 0u) * to_fixed;
    uint32_t fixed = small ? (uint32_t)(int32_t)tiny : u - ((min_exp - 1) << 23);
    return nan ? 0u : (fixed + noise) >> NOISE8;
}

/* `inverse` is 1 / the block's absmax (storage.py: one division per block, not per element);
 * `noise` the element's NOISE8 random bits. */
static INLINE uint8_t q8_encode(float x, float inverse, int is_unsigned, uint32_t noise)
{
    float r = f32_from_bits(f32_bits(x) & 0x7fffffffu) * inverse; /* |-0.0| is +0.0 */
    if (is_unsigned)
        return (uint8_t)q8_magnitude(r, 97u, 0x1p53f, noise);
    return (uint8_t)(q8_magnitude(r, 113u, 0x1p37f, noise) | (x < 0 ? 0x80u : 0u));
}

/* code_value[byte] * absmax: exponent e and mantissa m of the magnitude; e = 0 subnormal. */
static INLINE float q8_decode(uint8_t q, float absmax, int is_unsigned)
{
    uint32_t k = is_unsigned ? q : (q & 0x7fu), e = k >> 3, m = k & 7u;
    uint32_t bias_gap = is_unsigned ? 96u : 112u; /* 127 - code bias */
    float normal = f32_from_bits(((e + bias_gap) << 23) | (m << 20));
    float tiny = (float)m * (is_unsigned ? 0x1p-33f : 0x1p-17f);
    float magnitude = e ? normal : tiny;
    return ((!is_unsigned && (q & 0x80u)) ? -magnitude : magnitude) * absmax;
}

#endif
